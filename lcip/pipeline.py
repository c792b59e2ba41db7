"""The pipeline's stages as functions of the composed Hydra config.

Each console script (``lcip-train``, ...) is a thin Hydra app around one of these functions,
and ``lcip-demo`` chains them, so a stage behaves the same whichever way it is run. Files a
stage reads and writes are derived from the config by the ``*_path`` helpers here, in one place:

- region:        ``<paths.regions>/<region>/manifest.csv`` (+ layer files)
- cooccurrence:  ``<region dir>/cooccurrence/cooccurrence.csv``
- prior:         ``<region dir>/priors/<prior>/manifest.csv`` (adds layer ``prior_<prior>``)
- train:         ``<paths.runs>/<region>/<run_name>/checkpoints/last.ckpt``
- predict:       ``<run dir>/predictions/manifest.csv`` (adds ``q_prob``, ``q_class``, ...)
- evaluate:      ``<run dir>/evaluation.md`` and ``.csv``
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

from lcip.classes import ClassScheme, get_scheme
from lcip.datamodules import TileDataModule
from lcip.datasets import LayerSpec
from lcip.errors import ConfigError
from lcip.evaluate import Evaluation, MapSpec, evaluate_manifest
from lcip.manifest import Manifest
from lcip.models import load_state_from_checkpoint
from lcip.predict import PredictConfig, predict_manifest
from lcip.tasks import ImplicitPosteriorTask

log = logging.getLogger(__name__)


def scheme_of(cfg: DictConfig) -> ClassScheme:
    """The region's class scheme."""
    scheme = cfg.region.scheme
    return get_scheme(scheme if isinstance(scheme, str) else OmegaConf.to_container(scheme))  # type: ignore[arg-type]


def region_manifest_path(cfg: DictConfig) -> Path:
    """The region's manifest."""
    return Path(cfg.region.manifest)


def prior_layer(prior_name: str) -> str:
    """Manifest layer name of a prior."""
    return f"prior_{prior_name}"


def prior_manifest_path(cfg: DictConfig, prior_name: str | None = None) -> Path:
    """The manifest the prior stage writes for ``prior_name`` (default: the configured prior)."""
    return Path(cfg.region.dir) / "priors" / (prior_name or cfg.prior.name) / "manifest.csv"


def checkpoint_path(cfg: DictConfig) -> Path:
    """The checkpoint prediction reads (by default the training run's last checkpoint)."""
    return Path(cfg.predict.checkpoint)


def build_model(cfg: DictConfig, scheme: ClassScheme) -> Any:
    """Instantiate the configured network for the scheme's classes."""
    return instantiate(cfg.model, classes=scheme.num_classes)


def train(cfg: DictConfig) -> Path:
    """Train the configured model on the configured prior; returns the last checkpoint.

    Args:
        cfg: composed config (``region``, ``prior``, ``model``, ``loss``, ``trainer``, ``data``,
            ``task``, ``early_stopping``, ``run_dir``, ``seed``).

    Returns:
        path of the last checkpoint.
    """
    L.seed_everything(cfg.seed, workers=True)
    scheme = scheme_of(cfg)
    manifest = Manifest.read(prior_manifest_path(cfg))
    val_splits = list(cfg.region.get("val_splits", ["val"]))
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
    loss_kwargs = {k: v for k, v in OmegaConf.to_container(cfg.loss).items() if k != "name"}  # type: ignore[union-attr]
    task = ImplicitPosteriorTask(
        build_model(cfg, scheme),
        scheme.num_classes,
        loss=cfg.loss.name,
        loss_kwargs=loss_kwargs,
        **cfg.task,
    )
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    callbacks = [
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best",
            monitor=cfg.task.monitor,
            save_last=True,
            enable_version_counter=False,
        ),
        EarlyStopping(**cfg.early_stopping),
    ]
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=CSVLogger(run_dir, name="logs", version="")
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    trainer.fit(task, datamodule=dm)
    last = ckpt_dir / "last.ckpt"
    log.info("trained %s on prior %s: %s", cfg.loss.name, cfg.prior.name, last)
    return last


def predict(cfg: DictConfig) -> Path:
    """Predict q and r maps for the evaluation tiles; returns the predictions manifest.

    Args:
        cfg: composed config (``predict``, ``region``, ``prior``, ``model``, ``loss``).

    Returns:
        manifest listing the tiles with their prediction layers.
    """
    scheme = scheme_of(cfg)
    ckpt = checkpoint_path(cfg)
    if not ckpt.exists():
        raise ConfigError(
            f"predict.checkpoint={ckpt}: checkpoint does not exist (run lcip-train first)"
        )
    model = build_model(cfg, scheme)
    load_state_from_checkpoint(model, str(ckpt))
    manifest = Manifest.read(prior_manifest_path(cfg)).select(list(cfg.predict.splits))
    p = cfg.predict
    out_dir = Path(p.out_dir)
    result = predict_manifest(
        model,
        manifest,
        LayerSpec(cfg.region.image_layer, prior_layer(cfg.prior.name), None),
        scheme,
        out_dir,
        PredictConfig(
            window=p.window,
            margin=p.margin,
            batch_size=p.batch_size,
            smoothing=cfg.loss.smoothing,
            device=p.device,
        ),
    )
    return result.write(out_dir / "manifest.csv")


def evaluate(cfg: DictConfig) -> Evaluation:
    """Evaluate the prior's argmax, q and r on the evaluation tiles; writes markdown and CSV.

    Args:
        cfg: composed config.

    Returns:
        the evaluation.
    """
    scheme = scheme_of(cfg)
    manifest = Manifest.read(Path(cfg.predict.out_dir) / "manifest.csv")
    maps = [
        MapSpec(f"prior {cfg.prior.name} (argmax)", prior_layer(cfg.prior.name), "prob"),
        MapSpec(f"{cfg.loss.name.upper()} (q)", "q_class"),
        MapSpec(f"{cfg.loss.name.upper()} (r)", "r_class"),
    ]
    evaluation = evaluate_manifest(manifest, maps, scheme, cfg.region.label_layer)
    md, csv_path = evaluation.write(Path(cfg.run_dir))
    log.info("evaluation written to %s and %s", md, csv_path)
    print(evaluation.summary_markdown())
    return evaluation
