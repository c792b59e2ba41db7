"""Stage ``prior``: build the configured prior for every tile (see :mod:`lcip.priors.recipes`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lcip.config import to_dict
from lcip.errors import ConfigError
from lcip.manifest import Manifest
from lcip.priors.cooccurrence import Cooccurrence
from lcip.priors.recipes import PriorRequest, build_prior
from lcip.stages.paths import prior_dir, region_manifest_path, scheme_of


def cooccurrence_matrix(cfg: DictConfig) -> Any:
    """The region's cooccurrence matrix (written by the cooccurrence stage)."""
    path = Path(cfg.cooccurrence.dir) / "cooccurrence.csv"
    if not path.exists():
        raise ConfigError(
            f"cooccurrence.dir={path.parent}: no cooccurrence.csv (run lcip-cooccurrence first)"
        )
    return Cooccurrence.read(path).matrix


def prior(cfg: DictConfig, force: bool = False) -> Path:
    """Build the configured prior (``prior.recipe``) for every tile of the region.

    Args:
        cfg: composed config (``region``, ``prior``, ``cooccurrence``, ``jobs``, ``seed``).
        force: rebuild every tile even when its output is up to date.

    Returns:
        the manifest listing the tiles with their ``prior_<name>`` layer.
    """
    region = cfg.region
    request = PriorRequest(
        manifest=Manifest.read(region_manifest_path(cfg)),
        scheme=scheme_of(cfg),
        region_dir=Path(region.dir),
        out_dir=prior_dir(cfg),
        cooccurrence=cooccurrence_matrix(cfg),
        settings=to_dict(cfg.prior),
        image_layer=region.image_layer,
        nlcd_layer=region.nlcd_layer,
        label_layer=region.label_layer,
        osm_layer=region.get("osm_layer"),
        buildings_layer=region.get("buildings_layer"),
        train_splits=tuple(region.train_splits),
        eval_splits=tuple(region.eval_splits),
        jobs=int(cfg.jobs),
        seed=int(cfg.seed),
        force=force or bool(cfg.get("force", False)),
        cache=bool(cfg.data.get("cache", False)),
    )
    return build_prior(request)
