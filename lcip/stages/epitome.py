"""Stage ``epitome``: self-epitomic label super-resolution maps of the evaluation tiles.

Reads the region's manifest (``epitome.splits``, the evaluation splits by default) and its
cooccurrence matrix (the one ``lcip-cooccurrence`` wrote, or the one ``cooccurrence.source``
borrows), and writes ``q_prob`` / ``q_class`` maps per tile into ``epitome.out_dir`` with a
predictions manifest beside them (``<out_dir>/manifest.csv``), as ``lcip-predict`` does for q.
See :mod:`lcip.epitome.core`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from lcip.config import to_dict
from lcip.io.manifest import Manifest
from lcip.priors.nlcd import check_nlcd_encoding
from lcip.stages.checks import check_choice, check_device, cuda_available
from lcip.stages.paths import region_manifest_path, scheme_of
from lcip.stages.prior import region_cooccurrence

log = logging.getLogger(__name__)

#: ``epitome.device`` choices (or a ``cuda:<index>``).
DEVICES = ("cpu", "cuda", "auto")


def epitome_device(cfg: DictConfig) -> str:
    """``epitome.device``, with ``auto`` = CUDA when a GPU is present, else CPU."""
    device = str(cfg.epitome.device)
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if not device.startswith("cuda:"):
        check_choice(cfg, "epitome.device", DEVICES)
    check_device("epitome.device", device)
    return device


def epitome_manifest_path(cfg: DictConfig) -> Path:
    """The manifest the epitome stage writes: ``<epitome.out_dir>/manifest.csv``."""
    return Path(cfg.epitome.out_dir) / "manifest.csv"


def epitome(cfg: DictConfig, force: bool = False) -> Path:
    """Self-epitomic LSR of the evaluation tiles; returns the predictions manifest.

    Every map records the settings, the cooccurrence matrix's sha256 and the fingerprints of
    the tile's imagery and NLCD; a tile is skipped only when its maps record exactly what this
    run would, otherwise rewritten.

    Args:
        cfg: composed config (``epitome``, ``region``, ``cooccurrence``, ``seed``).
        force: rewrite every map.

    Returns:
        manifest listing the tiles with their ``q_prob`` / ``q_class`` layers.

    Raises:
        ConfigError: a bad ``epitome.*`` setting or no cooccurrence matrix (one line).
        DataError: a tile smaller than one patch, or a missing or unreadable file (one line).
    """
    from lcip.epitome.core import EpitomeJob, epitome_manifest, params_from

    force = force or bool(cfg.get("force", False))
    params = params_from(to_dict(cfg.epitome), int(cfg.seed))
    device = epitome_device(cfg)
    region = cfg.region
    matrix, source = region_cooccurrence(cfg)
    job = EpitomeJob(
        scheme=scheme_of(cfg),
        cooccurrence=matrix,
        params=params,
        image_layer=str(region.image_layer),
        nlcd_layer=str(region.nlcd_layer),
        nlcd_encoding=check_nlcd_encoding(str(region.get("nlcd_encoding", "codes"))),
        zero_is_nodata=bool(cfg.data.get("zero_is_nodata", True)),
        device=device,
        extra_params={"cooccurrence_source": source},
    )
    manifest = Manifest.read(region_manifest_path(cfg)).select(list(cfg.epitome.splits))
    out_dir = Path(cfg.epitome.out_dir)
    result = epitome_manifest(manifest, out_dir, job, force=force)
    path = result.write(epitome_manifest_path(cfg))
    log.info("epitome maps of %d tiles: %s", len(result), path)
    return path
