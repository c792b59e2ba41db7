"""Stage ``cooccurrence``: P(target class | NLCD class) from the region's training tiles."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from lcip.manifest import Manifest
from lcip.priors.cooccurrence import Cooccurrence, count_cooccurrence
from lcip.stages.paths import region_manifest_path, scheme_of


def cooccurrence(cfg: DictConfig, force: bool = False) -> Cooccurrence:
    """Count P(target class | NLCD class) on the region's training tiles and write it.

    Always recounted (it is cheap); priors record the matrix in their provenance, so an
    unchanged matrix does not make them stale.

    Args:
        cfg: composed config (``region``, ``cooccurrence``).
        force: accepted for symmetry with the other stages (counting always runs).

    Returns:
        the cooccurrence statistics (also written to ``cooccurrence.dir``).
    """
    manifest = Manifest.read(region_manifest_path(cfg)).select(list(cfg.region.train_splits))
    result = count_cooccurrence(
        manifest,
        scheme_of(cfg),
        label_layer=cfg.region.label_layer,
        nlcd_layer=cfg.region.nlcd_layer,
        allow_test=bool(cfg.cooccurrence.allow_test),
    )
    result.write(Path(cfg.cooccurrence.dir))
    return result
