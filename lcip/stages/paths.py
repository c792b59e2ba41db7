"""Where each stage reads and writes, derived from the config in one place.

- acquire:       ``<acquire.dir>/<dataset>/...`` (archive members), ``<region.dir>/manifest.csv``
- region:        ``<region.dir>/manifest.csv`` (+ layer files)
- cooccurrence:  ``<cooccurrence.dir>/cooccurrence.csv``
- prior:         ``<region.dir>/priors/<prior>/manifest.csv`` (adds layer ``prior_<prior>``)
- train:         ``<run_dir>/checkpoints/{best,last}.ckpt``, ``<run_dir>/logs/metrics.csv``
- predict:       ``<predict.out_dir>/manifest.csv`` (adds ``q_prob``, ``q_class``, ...)
- evaluate:      ``<run_dir>/evaluation.md``, ``.csv`` (paper protocol), ``metrics.csv`` (all)
- epitome:       ``<epitome.out_dir>/manifest.csv`` (adds ``q_prob``, ``q_class``)
- report:        ``<report.out_dir>/report.{md,csv,html}``
- compare-priors: ``<compare.out_dir>/comparison.md`` and ``.csv``
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from lcip.classes import ClassScheme, get_scheme
from lcip.config import to_dict
from lcip.errors import ConfigError
from lcip.priors.build import prior_layer


def scheme_of(cfg: DictConfig) -> ClassScheme:
    """The region's class scheme."""
    scheme = cfg.region.scheme
    return get_scheme(scheme if isinstance(scheme, str) else to_dict(scheme))


def region_manifest_path(cfg: DictConfig) -> Path:
    """The region's manifest."""
    return Path(cfg.region.manifest)


def prior_dir(cfg: DictConfig) -> Path:
    """The folder of the configured prior's rasters, report and manifest."""
    return Path(cfg.region.dir) / "priors" / cfg.prior.name


def prior_manifest_path(cfg: DictConfig) -> Path:
    """The manifest the prior stage writes for the configured prior."""
    return prior_dir(cfg) / "manifest.csv"


def checkpoint_dir(cfg: DictConfig) -> Path:
    """The training run's checkpoint folder."""
    return Path(cfg.run_dir) / "checkpoints"


def checkpoint_file(cfg: DictConfig) -> Path:
    """The checkpoint ``predict.checkpoint`` names: ``best``, ``last`` or a path.

    Raises:
        ConfigError: if the file does not exist.
    """
    choice = str(cfg.predict.checkpoint)
    path = checkpoint_dir(cfg) / f"{choice}.ckpt" if choice in ("best", "last") else Path(choice)
    if not path.is_file():
        hint = " (run lcip-train first)" if choice in ("best", "last") else ""
        raise ConfigError(f"predict.checkpoint={choice}: {path} does not exist{hint}")
    return path


def predictions_manifest_path(cfg: DictConfig) -> Path:
    """The manifest the predict stage writes."""
    return Path(cfg.predict.out_dir) / "manifest.csv"


__all__ = [
    "checkpoint_dir",
    "checkpoint_file",
    "predictions_manifest_path",
    "prior_dir",
    "prior_layer",
    "prior_manifest_path",
    "region_manifest_path",
    "scheme_of",
]
