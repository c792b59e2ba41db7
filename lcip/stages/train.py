"""Stage ``train``: fit the configured model on the configured prior, resumably."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lcip.atomic import write_text
from lcip.config import to_dict
from lcip.errors import ConfigError
from lcip.manifest import Manifest
from lcip.provenance import differences
from lcip.stages.checks import check_training_settings, check_writable
from lcip.stages.paths import checkpoint_dir, prior_layer, prior_manifest_path, scheme_of

log = logging.getLogger(__name__)

#: Config sections that define a run: a checkpoint is resumed only if they are unchanged.
RUN_IDENTITY = ("region", "prior", "model", "loss", "data", "task", "seed")


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


def train(cfg: DictConfig, force: bool = False) -> Path:
    """Train the configured model on the configured prior; returns the last checkpoint.

    Every setting and input is checked before the run folder is touched. Re-running the same
    command after an interruption continues from ``last.ckpt`` (model, optimizer, scheduler,
    loss buffers, step and the position inside the epoch) and appends to ``logs/metrics.csv``
    (``train.resume=auto``); ``train.resume=never`` or ``force`` starts afresh.

    Args:
        cfg: composed config (``region``, ``prior``, ``model``, ``loss``, ``trainer``, ``data``,
            ``task``, ``train``, ``run_dir``, ``seed``).
        force: start afresh even if the run folder holds a checkpoint.

    Returns:
        path of the last checkpoint (``best.ckpt`` beside it is the best by ``task.monitor``).
    """
    force = force or bool(cfg.get("force", False))
    check_training_settings(cfg)
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from lcip.callbacks import AppendingCSVLogger, LastCheckpoint
    from lcip.datamodules import TileDataModule
    from lcip.tasks import ImplicitPosteriorTask

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
    manifest = Manifest.read(prior_manifest_path(cfg))
    val_splits = list(cfg.region.val_splits)
    if not len(manifest.select(val_splits)):
        raise ConfigError(
            f"region.val_splits={val_splits}: no tiles of these splits in {manifest.path}"
        )
    dm = TileDataModule(
        manifest,
        scheme,
        image_layer=cfg.region.image_layer,
        prior_layer=prior_layer(cfg.prior.name),
        label_layer=cfg.region.label_layer,
        train_splits=list(cfg.region.train_splits),
        val_splits=val_splits,
        seed=cfg.seed,
        **cfg.data,
    )
    dm.setup("fit")  # opens and checks every layer file of every tile
    dm.train_dataloader()  # checks the crop size against the tiles
    run_dir = Path(cfg.run_dir)
    check_writable("run_dir", run_dir)
    resume = resume_checkpoint(cfg, force)
    ckpt_dir = checkpoint_dir(cfg)
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
        EarlyStopping(**cfg.train.early_stopping),
    ]
    trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=AppendingCSVLogger(
            run_dir,
            name="logs",
            version="",
            flush_logs_every_n_steps=int(cfg.trainer.get("log_every_n_steps", 50)),
        ),
    )
    trainer.fit(task, datamodule=dm, ckpt_path=resume)
    last = ckpt_dir / "last.ckpt"
    log.info("trained %s on prior %s: %s", cfg.loss.name, cfg.prior.name, last)
    return last
