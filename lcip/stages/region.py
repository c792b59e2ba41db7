"""Stage ``region``: make the region's manifest available (generate a generated region)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from lcip.atomic import write_text
from lcip.config import to_dict
from lcip.errors import ConfigError
from lcip.stages.paths import region_manifest_path

log = logging.getLogger(__name__)


def region(cfg: DictConfig, force: bool = False) -> Path:
    """Make the region's manifest available: generate it for a generated region.

    A generated region is regenerated when its generator settings changed (recorded in
    ``region_config.json`` beside the manifest) or when ``force`` is set.

    Args:
        cfg: composed config (``region``).
        force: regenerate even when up to date.

    Returns:
        the region's manifest.
    """
    force = force or bool(cfg.get("force", False))
    path = region_manifest_path(cfg)
    synthetic = cfg.region.get("synthetic")
    if synthetic is None:
        if not path.exists():
            raise ConfigError(
                f"region.manifest={path}: manifest does not exist and region '{cfg.region.name}' "
                "has no generator (run lcip-acquire region=" + str(cfg.region.name) + " first)"
            )
        return path
    from lcip.synthetic import generate_region

    settings = to_dict(synthetic)
    stamp = path.parent / "region_config.json"
    if not force and path.exists() and stamp.exists() and json.loads(stamp.read_text()) == settings:
        log.info("region %s is up to date: %s", cfg.region.name, path)
        return path
    out = generate_region(instantiate(synthetic), path.parent)
    write_text(stamp, json.dumps(settings))
    return out
