"""Stage ``prior``: build the configured prior for every tile (see :mod:`lcip.priors.recipes`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lcip.config import to_dict
from lcip.errors import ConfigError
from lcip.manifest import Manifest
from lcip.priors.cooccurrence import Cooccurrence, check_scheme
from lcip.priors.nlcd import check_nlcd_encoding
from lcip.priors.recipes import PriorRequest, build_prior, needs_cooccurrence
from lcip.stages.cooccurrence import borrowed_cooccurrence, cooccurrence_source
from lcip.stages.paths import prior_dir, region_manifest_path, scheme_of


def cooccurrence_matrix(cfg: DictConfig) -> Any:
    """The region's cooccurrence matrix.

    With ``cooccurrence.source`` set, the borrowed matrix it names (checked against the
    region's scheme); otherwise the one the cooccurrence stage wrote into
    ``cooccurrence.dir``.

    Raises:
        ConfigError: one line naming the setting, if there is no matrix or it does not fit.
    """
    source = cooccurrence_source(cfg)
    if source is not None:
        return borrowed_cooccurrence(cfg, source).matrix
    path = Path(cfg.cooccurrence.dir) / "cooccurrence.csv"
    if not path.exists():
        raise ConfigError(
            f"cooccurrence.dir={path.parent}: no cooccurrence.csv (run lcip-cooccurrence first)"
        )
    return check_scheme(Cooccurrence.read(path), scheme_of(cfg), f"cooccurrence.dir={path}").matrix


def vector_rasters(cfg: DictConfig) -> dict[str, str]:
    """``region.vector_rasters`` as a plain dict (empty when unset)."""
    node = cfg.region.get("vector_rasters")
    return {} if node is None else {str(k): str(v) for k, v in to_dict(node).items()}


def prior(cfg: DictConfig, force: bool = False) -> Path:
    """Build the configured prior (``prior.recipe``) for every tile of the region.

    The cooccurrence matrix is read only for recipes that need one (not ``published``).

    Args:
        cfg: composed config (``region``, ``prior``, ``cooccurrence``, ``jobs``, ``seed``).
        force: rebuild every tile even when its output is up to date.

    Returns:
        the manifest listing the tiles with their ``prior_<name>`` layer.
    """
    region = cfg.region
    recipe = str(cfg.prior.get("recipe"))
    request = PriorRequest(
        manifest=Manifest.read(region_manifest_path(cfg)),
        scheme=scheme_of(cfg),
        region_dir=Path(region.dir),
        out_dir=prior_dir(cfg),
        cooccurrence=cooccurrence_matrix(cfg) if needs_cooccurrence(recipe) else None,
        settings=to_dict(cfg.prior),
        image_layer=region.image_layer,
        nlcd_layer=region.nlcd_layer,
        label_layer=region.label_layer,
        osm_layer=region.get("osm_layer"),
        buildings_layer=region.get("buildings_layer"),
        nlcd_encoding=check_nlcd_encoding(str(region.get("nlcd_encoding", "codes"))),
        vector_rasters=vector_rasters(cfg),
        cooccurrence_source=cooccurrence_source(cfg),
        train_splits=tuple(region.train_splits),
        eval_splits=tuple(region.eval_splits),
        jobs=int(cfg.jobs),
        seed=int(cfg.seed),
        force=force or bool(cfg.get("force", False)),
        cache=bool(cfg.data.get("cache", False)),
    )
    return build_prior(request)
