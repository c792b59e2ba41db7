"""Stage ``train``: fit the configured model on the configured prior, resumably."""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lcip.config import to_dict
from lcip.errors import ConfigError
from lcip.io.atomic import write_text
from lcip.io.manifest import Manifest
from lcip.io.provenance import differences
from lcip.stages.checks import check_training_settings, check_writable
from lcip.stages.paths import checkpoint_dir, prior_layer, prior_manifest_path, scheme_of

log = logging.getLogger(__name__)

#: Config sections that define a run: a checkpoint is resumed only if they are unchanged.
RUN_IDENTITY = ("region", "prior", "model", "loss", "data", "task", "seed")

#: ``trainer`` settings read by lcip, not passed to ``lightning.Trainer``: ``compile``
#: (``torch.compile`` the network) and ``denominator`` (the QR/RQ denominator scope used when
#: ``loss.denominator`` is not given on the command line; ``trainer=ddp`` sets ``global``).
TRAINER_EXTRAS = ("compile", "denominator")

#: Hydra launchers under which a multi-process (DDP) trainer may run inside a multirun: each
#: SLURM task is one rank and Lightning reads its rank from SLURM's environment.
DDP_LAUNCHERS = ("SlurmLauncher",)


def multi_process(trainer: Any) -> bool:
    """Whether a ``trainer`` config starts several processes (DDP over devices or nodes)."""
    if int(trainer.get("num_nodes", 1) or 1) > 1:
        return True
    devices = trainer.get("devices", 1)
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        return len(devices) > 1
    if str(devices) == "auto":
        return "ddp" in str(trainer.get("strategy", "auto"))
    return str(devices) != "1"


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
    if mode != "MULTIRUN" or not multi_process(cfg.trainer):
        return
    if not any(launcher.endswith(name) for name in DDP_LAUNCHERS):
        raise ConfigError(
            f"trainer.strategy={cfg.trainer.get('strategy')} (devices="
            f"{cfg.trainer.get('devices')}): multi-process training inside a local Hydra "
            "multirun is not supported; run one lcip-train per setting, or add "
            "hydra/launcher=submitit_slurm"
        )


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (Linux ``/proc/cpuinfo``: AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


def build_trainer(node: DictConfig, **kwargs: Any) -> Any:
    """A ``lightning.Trainer`` from a trainer config node that leaves lcip's samplers alone.

    The crop samplers shard by rank themselves (:mod:`lcip.data.samplers`); Lightning's automatic
    ``DistributedSampler`` would wrap them and shard each rank's share once more (and rebuild
    the resumable loader), so it is switched off. Every trainer also gets
    :class:`~lcip.training.callbacks.ReleaseProcessGroup`, so DDP ranks leave together.

    Args:
        node: trainer config (``_target_: lightning.Trainer``, no :data:`TRAINER_EXTRAS`).
        **kwargs: further Trainer arguments (callbacks, logger, ...).

    Returns:
        the trainer.
    """
    from hydra.utils import instantiate

    from lcip.training.callbacks import ReleaseProcessGroup

    callbacks = [*kwargs.pop("callbacks", []), ReleaseProcessGroup()]
    return instantiate(node, use_distributed_sampler=False, callbacks=callbacks, **kwargs)


def trainer_settings(cfg: DictConfig, overrides: Sequence[str] = ()) -> DictConfig:
    """Apply lcip's own ``trainer`` settings to ``cfg``; return the ``lightning.Trainer`` node.

    ``trainer.denominator`` becomes ``loss.denominator`` for losses that have one, unless the
    command line sets ``loss.denominator`` itself. A CPU trainer without ``precision``
    (``trainer=cpu``) gets ``bf16-mixed`` on CPUs with native bf16 (AVX512-BF16 or AMX: about
    1.5x faster than float32 there, see BENCHMARKS.md) and ``32-true`` elsewhere.

    Args:
        cfg: composed config (changed in place: ``loss.denominator``).
        overrides: the command-line overrides ``cfg`` was composed with.

    Returns:
        the trainer node (resolved) without :data:`TRAINER_EXTRAS`.
    """
    if cfg.trainer.get("precision") is None and str(cfg.trainer.get("accelerator")) == "cpu":
        cfg.trainer.precision = "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    denominator = cfg.trainer.get("denominator")
    given = any(o.lstrip("+~").startswith("loss.denominator=") for o in overrides)
    if denominator is not None and "denominator" in cfg.loss and not given:
        cfg.loss.denominator = str(denominator)
    node = OmegaConf.create(
        {k: v for k, v in to_dict(cfg.trainer).items() if k not in TRAINER_EXTRAS}
    )
    return node


def check_input_bands(cfg: DictConfig, dm: Any) -> None:
    """The model's ``in_channels`` must be the data's bands (imagery + ``data.extra_layers``).

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
            f"(imagery {dataset.layers.image!r} + data.extra_layers={extra}); set "
            f"model.in_channels={bands}"
        )


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """The settings that define a training run (resolved)."""
    return {k: to_dict(cfg)[k] for k in RUN_IDENTITY if k in cfg}


def resume_checkpoint(cfg: DictConfig, force: bool) -> Path | None:
    """The checkpoint to resume from, or None to start afresh.

    With ``train.resume=auto`` an existing ``last.ckpt`` is resumed when the run folder's
    ``config.yaml`` has the same :data:`RUN_IDENTITY`; other settings (``trainer.max_epochs``,
    prediction, ...) may change. A run made with other settings is refused in one line, so it
    is never silently continued nor overwritten.

    Raises:
        ConfigError: if the run folder holds a run made with other settings.
    """
    run_dir = Path(cfg.run_dir)
    last = checkpoint_dir(cfg) / "last.ckpt"
    if force or cfg.train.resume == "never" or not last.exists():
        return None
    saved_path = run_dir / "config.yaml"
    saved = OmegaConf.load(saved_path) if saved_path.exists() else OmegaConf.create({})
    assert isinstance(saved, DictConfig)
    found = {k: to_dict(saved)[k] for k in RUN_IDENTITY if k in saved}
    diff = differences(run_identity(cfg), found)
    if diff:
        shown = "; ".join(diff[:3]) + (f"; ... ({len(diff)} in all)" if len(diff) > 3 else "")
        raise ConfigError(
            f"run_dir={run_dir}: holds a run made with other settings ({shown}); "
            "set train.resume=never to replace it, or run_name=<new name> to keep both"
        )
    return last


def collapse_guard(cfg: DictConfig, classes: Sequence[str]) -> Any:
    """The run's collapse guard (:class:`lcip.training.collapse_guard.CollapseGuard`), or None.

    Its settings are ``train.collapse_guard`` (null: no guard) and ``train.stop_on_collapse``;
    its messages name the run as ``<region>/<run_name>``.
    """
    settings = cfg.train.get("collapse_guard")
    if settings is None:
        return None
    from lcip.training.collapse_guard import CollapseGuard

    return CollapseGuard(
        f"{cfg.region.name}/{cfg.run_name}",
        classes,
        stop=bool(cfg.train.get("stop_on_collapse", False)),
        **to_dict(settings),
    )


def train(cfg: DictConfig, force: bool = False, overrides: Sequence[str] = ()) -> Path:
    """Train the configured model on the configured prior; returns the last checkpoint.

    Every setting and input is checked before the run folder is touched. Re-running the same
    command after an interruption continues from ``last.ckpt`` (model, optimizer, scheduler,
    loss buffers, step and the position inside the epoch) and appends to ``logs/metrics.csv``
    (``train.resume=auto``); ``train.resume=never`` or ``force`` starts afresh.

    Args:
        cfg: composed config (``region``, ``prior``, ``model``, ``loss``, ``trainer``, ``data``,
            ``task``, ``train``, ``run_dir``, ``seed``).
        force: start afresh even if the run folder holds a checkpoint.
        overrides: the command-line overrides (``loss.denominator`` given there wins over
            ``trainer.denominator``).

    Returns:
        path of the last checkpoint (``best.ckpt`` beside it is the best by ``task.monitor``).

    Raises:
        lcip.evaluation.collapse.CollapseError: when q collapsed and
            ``train.stop_on_collapse`` is true (the run stops there; its checkpoints are kept).
    """
    force = force or bool(cfg.get("force", False))
    check_launch_mode(cfg)
    trainer_cfg = trainer_settings(cfg, overrides)
    check_training_settings(cfg)
    import lightning as L
    import torch
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.utilities import rank_zero_only

    from lcip.data.datamodules import TileDataModule
    from lcip.training.callbacks import AppendingCSVLogger, LastCheckpoint
    from lcip.training.tasks import ImplicitPosteriorTask

    scheme = scheme_of(cfg)
    loss_kwargs = {k: v for k, v in to_dict(cfg.loss).items() if k != "name"}
    L.seed_everything(cfg.seed, workers=True)
    task = ImplicitPosteriorTask(  # builds the loss and loads init_from: their errors first
        instantiate(cfg.model, classes=scheme.num_classes),
        scheme.num_classes,
        loss=cfg.loss.name,
        loss_kwargs=loss_kwargs,
        **cfg.task,
    )
    if cfg.data.get("channels_last", False):  # the data module sends channels_last batches
        task = task.to(memory_format=torch.channels_last)
    if cfg.trainer.get("compile", False):
        task.model.compile()  # in place: checkpoint keys stay those of the plain model
    manifest = Manifest.read(prior_manifest_path(cfg))
    # data.train_splits / data.val_splits (optional) override the region's splits for this
    # run only, e.g. the paper's transductive setting trains on the evaluation tiles.
    data_kwargs = to_dict(cfg.data)
    train_splits = list(data_kwargs.pop("train_splits", None) or cfg.region.train_splits)
    val_key = "data.val_splits" if data_kwargs.get("val_splits") else "region.val_splits"
    val_splits = list(data_kwargs.pop("val_splits", None) or cfg.region.val_splits)
    if getattr(task.criterion, "target", "prior") == "blocks":  # loss=lsr: NLCD blocks
        data_kwargs["nlcd_layer"] = cfg.region.nlcd_layer
        data_kwargs["nlcd_encoding"] = str(cfg.region.get("nlcd_encoding", "codes"))
    if not len(manifest.select(val_splits)):
        raise ConfigError(f"{val_key}={val_splits}: no tiles of these splits in {manifest.path}")
    dm = TileDataModule(
        manifest,
        scheme,
        image_layer=cfg.region.image_layer,
        prior_layer=prior_layer(cfg.prior.name),
        label_layer=cfg.region.label_layer,
        train_splits=train_splits,
        val_splits=val_splits,
        seed=cfg.seed,
        **data_kwargs,
    )
    dm.setup("fit")  # opens and checks every layer file of every tile
    dm.train_dataloader()  # checks the crop size against the tiles
    check_input_bands(cfg, dm)
    run_dir = Path(cfg.run_dir)
    check_writable("run_dir", run_dir)
    resume = resume_checkpoint(cfg, force)
    ckpt_dir = checkpoint_dir(cfg)
    if getattr(rank_zero_only, "rank", 0) == 0:  # DDP ranks > 0 (SLURM tasks...) write nothing
        if resume is None:
            for old in (ckpt_dir, run_dir / "logs"):
                shutil.rmtree(old, ignore_errors=True)
        else:
            log.info("resuming %s from %s", run_dir, resume)
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    callbacks = [
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best",
            monitor=cfg.task.monitor,
            save_top_k=1,
            enable_version_counter=False,
        ),
        LastCheckpoint(ckpt_dir / "last.ckpt", int(cfg.train.checkpoint_every_n_steps)),
    ]
    if cfg.train.get("early_stopping"):  # null: train for the whole schedule
        callbacks.append(EarlyStopping(**cfg.train.early_stopping))
    guard = collapse_guard(cfg, scheme.classes)
    if guard is not None:
        callbacks.append(guard)
    trainer = build_trainer(
        trainer_cfg,
        callbacks=callbacks,
        logger=AppendingCSVLogger(
            run_dir,
            name="logs",
            version="",
            flush_logs_every_n_steps=int(cfg.trainer.get("log_every_n_steps", 50)),
        ),
    )
    trainer.fit(task, datamodule=dm, ckpt_path=resume)
    if guard is not None and guard.stopped:
        from lcip.evaluation.collapse import CollapseError

        raise CollapseError(guard.stopped)
    last = ckpt_dir / "last.ckpt"
    log.info("trained %s on prior %s: %s", cfg.loss.name, cfg.prior.name, last)
    return last
