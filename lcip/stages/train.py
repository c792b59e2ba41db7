"""Stage ``train``: fit the configured model on the configured prior, resumably."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lcip.config import instantiate, to_dict
from lcip.errors import ConfigError
from lcip.io.atomic import write_text
from lcip.io.manifest import Manifest
from lcip.stages.checks import check_training_settings, check_writable
from lcip.stages.paths import checkpoint_dir, prior_layer, prior_manifest_path, scheme_of
from lcip.training.trainer import (
    build_callbacks,
    build_logger,
    build_trainer,
    multi_process,
    resume_checkpoint,
    trainer_arguments,
)

log = logging.getLogger(__name__)

#: Hydra launchers under which a multi-process (DDP) trainer may run inside a multirun: each
#: SLURM task is one rank and Lightning reads its rank from SLURM's environment.
DDP_LAUNCHERS = ("SlurmLauncher",)


def check_launch_mode(cfg: DictConfig, mode: str | None = None, launcher: str = "") -> None:
    """Refuse a multi-process trainer inside a Hydra multirun that is not a SLURM launcher.

    Supported: a single run (``lcip-train trainer=ddp``: Lightning starts the other ranks) and
    a multirun whose launcher is ``hydra/launcher=submitit_slurm`` (one SLURM task per GPU).
    Lightning's DDP re-runs the command line for ranks > 0, which under Hydra's local
    launchers (basic, submitit_local) would re-run the whole sweep in every rank.

    Args:
        cfg: composed config.
        mode: Hydra's run mode (``RUN``/``MULTIRUN``); None: read from a running Hydra app.
        launcher: the Hydra launcher's ``_target_`` (read from the running app when ``mode``
            is None).

    Raises:
        ConfigError: one line naming the settings, for DDP inside a local multirun.
    """
    if mode is None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return
        hydra = HydraConfig.get()
        mode = str(hydra.mode.name if hydra.mode is not None else "RUN")
        launcher = str(hydra.launcher.get("_target_", ""))
    if mode != "MULTIRUN" or not multi_process(to_dict(cfg.trainer)):
        return
    if not any(launcher.endswith(name) for name in DDP_LAUNCHERS):
        raise ConfigError(
            f"trainer.strategy={cfg.trainer.get('strategy')} (devices="
            f"{cfg.trainer.get('devices')}): multi-process training inside a local Hydra "
            "multirun is not supported; run one lcip-train per setting, or add "
            "hydra/launcher=submitit_slurm"
        )


def apply_run_settings(cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    """Settle in ``cfg`` what lcip chooses for the run, so that ``config.yaml`` records it.

    ``train.denominator`` (``trainer=ddp`` sets ``global``) becomes ``loss.denominator`` for
    losses that have one, unless the command line sets ``loss.denominator`` itself; a CPU
    trainer without ``trainer.precision`` gets the one
    :func:`lcip.training.trainer.trainer_arguments` chooses for this CPU.

    Args:
        cfg: composed config (changed in place).
        overrides: the command-line overrides ``cfg`` was composed with.
    """
    precision = trainer_arguments(to_dict(cfg.trainer)).get("precision")
    if precision is not None:
        cfg.trainer.precision = precision
    denominator = cfg.train.get("denominator")
    given = any(o.lstrip("+~").startswith("loss.denominator=") for o in overrides)
    if denominator is not None and "denominator" in cfg.loss and not given:
        cfg.loss.denominator = str(denominator)


def check_input_bands(cfg: DictConfig, dm: Any) -> None:
    """The model's ``in_channels`` must be the data's bands (imagery + ``data.layers.extra``).

    Raises:
        ConfigError: one line naming both, before any training step.
    """
    dataset = dm.train_dataset
    if dataset is None or "in_channels" not in cfg.model:
        return
    from lcip.io.raster import open_raster

    tile = dataset.manifest.tiles[0]
    bands = 0
    for layer in (dataset.layers.image, *dataset.layers.extra):
        with open_raster(tile.layer(layer)) as src:
            bands += int(src.count)
    if int(cfg.model.in_channels) != bands:
        extra = list(dataset.layers.extra)
        raise ConfigError(
            f"model.in_channels={cfg.model.in_channels}: the data has {bands} input bands "
            f"(imagery {dataset.layers.image!r} + data.layers.extra={extra}); set "
            f"model.in_channels={bands}"
        )


def resume_from(cfg: DictConfig, force: bool) -> Path | None:
    """The checkpoint to resume from, or None to start afresh.

    With ``train.resume=auto`` an existing ``last.ckpt`` is resumed when the run folder's
    ``config.yaml`` has the same run identity (see
    :func:`lcip.training.trainer.resume_checkpoint`); ``force`` or ``train.resume=never``
    starts afresh.

    Raises:
        ConfigError: if the run folder holds a run made with other settings.
    """
    if force:
        return None
    run_dir = Path(cfg.run_dir)
    saved_path = run_dir / "config.yaml"
    saved = to_dict(OmegaConf.load(saved_path)) if saved_path.exists() else {}
    last = checkpoint_dir(cfg) / "last.ckpt"
    return resume_checkpoint(run_dir, last, to_dict(cfg), saved, str(cfg.train.resume))


def callbacks_of(cfg: DictConfig, classes: Sequence[str]) -> dict[str, Any]:
    """The run's callbacks (``callbacks``), given their paths, the run's name and classes.

    ``best.ckpt`` (``callbacks.model_checkpoint``) and ``last.ckpt``
    (``callbacks.last_checkpoint``) go to the run's checkpoint folder; the collapse guard names
    the run as ``<region>/<run_name>``.

    Raises:
        ConfigError: one line naming the callback's key when one cannot be built, or when
            ``callbacks.last_checkpoint`` is null (runs resume from ``last.ckpt``).
    """
    if cfg.callbacks.get("last_checkpoint") is None:
        raise ConfigError(
            "callbacks.last_checkpoint=null: lcip-train keeps last.ckpt (runs resume from it "
            "and predict.checkpoint=last reads it)"
        )
    ckpt_dir = checkpoint_dir(cfg)
    given: dict[str, dict[str, Any]] = {
        "model_checkpoint": {"dirpath": ckpt_dir, "filename": "best"},
        "last_checkpoint": {"path": ckpt_dir / "last.ckpt"},
        "collapse_guard": {"run": f"{cfg.region.name}/{cfg.run_name}", "classes": list(classes)},
    }
    return build_callbacks(to_dict(cfg.callbacks), given)


def train(cfg: DictConfig, force: bool = False, overrides: Sequence[str] = ()) -> Path:
    """Train the configured model on the configured prior; returns the last checkpoint.

    Every setting and input is checked before the run folder is touched. Re-running the same
    command after an interruption continues from ``last.ckpt`` (model, optimizer, scheduler,
    loss buffers, step and the position inside the epoch) and appends to ``logs/metrics.csv``
    (``train.resume=auto``); ``train.resume=never`` or ``force`` starts afresh.

    Args:
        cfg: composed config (``region``, ``prior``, ``model``, ``loss``, ``optimizer``,
            ``scheduler``, ``trainer``, ``callbacks``, ``logger``, ``data``, ``task``,
            ``train``, ``run_dir``, ``seed``).
        force: start afresh even if the run folder holds a checkpoint.
        overrides: the command-line overrides (``loss.denominator`` given there wins over
            ``train.denominator``).

    Returns:
        path of the last checkpoint (``best.ckpt`` beside it is the best by ``task.monitor``).

    Raises:
        lcip.evaluation.collapse.CollapseError: when q collapsed and
            ``callbacks.collapse_guard.stop`` is true (the run stops there; its checkpoints are
            kept).
    """
    force = force or bool(cfg.get("force", False))
    check_launch_mode(cfg)
    apply_run_settings(cfg, overrides)
    check_training_settings(cfg)
    import lightning as L
    import torch
    from lightning.pytorch.utilities import rank_zero_only

    from lcip.losses import Needs

    scheme = scheme_of(cfg)
    loss_kwargs = {k: v for k, v in to_dict(cfg.loss).items() if k != "name"}
    L.seed_everything(cfg.seed, workers=True)
    scheduler = instantiate(cfg, "scheduler") if cfg.get("scheduler") is not None else None
    task = instantiate(  # builds the loss, tries the optimizer, loads init_from: errors first
        cfg,
        "task",
        _convert_="all",  # plain hyperparameters: checkpoints load with weights_only=True
        model=instantiate(cfg, "model", classes=scheme.num_classes),
        num_classes=scheme.num_classes,
        loss=cfg.loss.name,
        loss_kwargs=loss_kwargs,
        optimizer=instantiate(cfg, "optimizer"),
        scheduler=scheduler,
    )
    if cfg.data.get("channels_last", False):  # the data module sends channels_last batches
        task = task.to(memory_format=torch.channels_last)
    if cfg.train.get("compile", False):
        task.model.compile()  # in place: checkpoint keys stay those of the plain model
    manifest = Manifest.read(prior_manifest_path(cfg))
    # data.train_splits / data.val_splits: the region's unless the run sets its own, e.g. the
    # paper's transductive setting trains on the evaluation tiles.
    val_splits = list(cfg.data.val_splits)
    if not len(manifest.select(val_splits)):
        given = not OmegaConf.is_interpolation(cfg.data, "val_splits")
        key = "data.val_splits" if given else "region.val_splits"
        raise ConfigError(f"{key}={val_splits}: no tiles of these splits in {manifest.path}")
    needs_blocks = Needs.NLCD_BLOCKS in task.criterion.needs  # loss=lsr: NLCD blocks
    datamodule = instantiate(
        cfg,
        "data",
        _convert_="all",
        seed=int(cfg.seed),
        layers={
            "prior": prior_layer(cfg.prior.name),
            "nlcd": cfg.region.nlcd_layer if needs_blocks else None,
        },
    )
    dm = datamodule(manifest, scheme)
    dm.setup("fit")  # opens and checks every layer file of every tile
    dm.train_dataloader()  # checks the crop size against the tiles
    check_input_bands(cfg, dm)
    run_dir = Path(cfg.run_dir)
    callbacks = callbacks_of(cfg, scheme.classes)
    logger_node = to_dict(cfg.logger) if cfg.get("logger") is not None else None
    # metrics.csv in <run_dir>/logs (csv logger: appended to when a run resumes)
    logger = build_logger(logger_node, save_dir=run_dir, name="logs", version="")
    check_writable("run_dir", run_dir)
    resume = resume_from(cfg, force)
    ckpt_dir = checkpoint_dir(cfg)
    if getattr(rank_zero_only, "rank", 0) == 0:  # DDP ranks > 0 (SLURM tasks...) write nothing
        if resume is None:
            for old in (ckpt_dir, run_dir / "logs"):
                shutil.rmtree(old, ignore_errors=True)
        else:
            log.info("resuming %s from %s", run_dir, resume)
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    trainer = build_trainer(to_dict(cfg.trainer), callbacks=list(callbacks.values()), logger=logger)
    trainer.fit(task, datamodule=dm, ckpt_path=resume)
    guard = callbacks.get("collapse_guard")
    if guard is not None and guard.stopped:
        from lcip.evaluation.collapse import CollapseError

        raise CollapseError(guard.stopped)
    last = ckpt_dir / "last.ckpt"
    log.info("trained %s on prior %s: %s", cfg.loss.name, cfg.prior.name, last)
    return last
