"""Stage ``region``: make the region's manifest available.

Three kinds of region:

- a *generated* region (a ``synthetic`` node, e.g. ``region=demo``): generated on the fly,
  regenerated when its generator settings change;
- a region given as *folders* of per-tile files on disk (a ``folders`` node, e.g.
  ``region=chesapeake_wv_patches``): the manifest is written from an index CSV, one folder
  per tile, with each file's sha256 so that a changed file is caught when the manifest is read;
- an *acquired* region (a ``source`` node): ``lcip-acquire`` writes its manifest.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lcip.config import instantiate, to_dict
from lcip.errors import ConfigError
from lcip.io.atomic import write_text
from lcip.io.manifest import Manifest, Tile
from lcip.stages.paths import region_manifest_path

log = logging.getLogger(__name__)

#: Settings stamp written beside a manifest made by this stage.
STAMP_FILE = "region_config.json"


def folder_manifest(
    root: Path,
    index: str,
    id_column: str,
    split_column: str,
    layers: Mapping[str, str],
    image_layer: str,
) -> Manifest:
    """A manifest of tiles given as folders ``<root>/<split>/<tile id>/<layer file>``.

    Args:
        root: the folder holding the index CSV and one sub-folder per split.
        index: the index CSV's name inside ``root`` (one row per tile).
        id_column: the index column holding the tile id (its folder's name).
        split_column: the index column holding the split.
        layers: layer name -> file name inside each tile's folder.
        image_layer: the layer whose grid gives each tile's CRS and bounds.

    Returns:
        the manifest (not yet written), with a ``<layer>_sha256`` column per layer.

    Raises:
        ConfigError: one line naming the missing folder, index, column or file.
    """
    from lcip.io.provenance import sha256_file
    from lcip.io.raster import Grid

    if not root.is_dir():
        raise ConfigError(f"region.folders.root={root}: no such folder")
    index_path = root / index
    if not index_path.is_file():
        raise ConfigError(f"region.folders.index={index}: no file {index_path}")
    if image_layer not in layers:
        raise ConfigError(
            f"region.folders.layers: has no '{image_layer}' (region.image_layer) entry"
        )
    with open(index_path, newline="") as f:
        rows = list(csv.DictReader(f))
    for column in (id_column, split_column):
        if rows and column not in rows[0]:
            raise ConfigError(f"{index_path}: no column '{column}' (columns: {list(rows[0])})")
    tiles = []
    for row in rows:
        folder = root / row[split_column] / row[id_column]
        files = {name: folder / file for name, file in layers.items()}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise ConfigError(f"{index_path}: tile {row[id_column]} has no file {missing[0]}")
        grid = Grid.of(files[image_layer])
        tiles.append(
            Tile(
                tile_id=row[id_column],
                split=row[split_column],
                crs=grid.crs.to_string(),
                bounds=grid.bounds,
                layers={name: p.resolve() for name, p in files.items()},
                meta={f"{name}_sha256": sha256_file(p) for name, p in files.items()},
            )
        )
    if not tiles:
        raise ConfigError(f"{index_path}: lists no tiles")
    return Manifest(tuple(tiles))


def _stamped(path: Path, settings: Mapping[str, Any]) -> bool:
    """Whether the manifest at ``path`` was written with exactly these settings."""
    stamp = path.parent / STAMP_FILE
    if not (path.exists() and stamp.exists()):
        return False
    try:
        return bool(json.loads(stamp.read_text()) == json.loads(json.dumps(settings)))
    except (OSError, ValueError):
        return False


def region(cfg: DictConfig, force: bool = False) -> Path:
    """Make the region's manifest available (see the module docstring).

    Args:
        cfg: composed config (``region``).
        force: regenerate (or re-index) even when up to date.

    Returns:
        the region's manifest.
    """
    force = force or bool(cfg.get("force", False))
    path = region_manifest_path(cfg)
    synthetic = cfg.region.get("synthetic")
    folders = cfg.region.get("folders")
    if synthetic is not None:
        settings = to_dict(synthetic)
        if not force and _stamped(path, settings):
            log.info("region %s is up to date: %s", cfg.region.name, path)
            return path
        from lcip.synthetic import generate_region

        out = generate_region(instantiate(cfg, "region.synthetic"), path.parent)
        write_text(path.parent / STAMP_FILE, json.dumps(settings))
        return out
    if folders is not None:
        settings = {"folders": to_dict(folders), "image_layer": str(cfg.region.image_layer)}
        if not force and _stamped(path, settings):
            Manifest.read(path, verify=True)  # a changed file is one line naming it
            log.info("region %s is up to date: %s", cfg.region.name, path)
            return path
        manifest = folder_manifest(
            Path(str(folders.root)),
            str(folders.index),
            str(folders.id_column),
            str(folders.split_column),
            {str(k): str(v) for k, v in to_dict(folders.layers).items()},
            str(cfg.region.image_layer),
        )
        manifest.write(path)
        write_text(path.parent / STAMP_FILE, json.dumps(settings))
        log.info("region %s: %d tiles indexed in %s", cfg.region.name, len(manifest), path)
        return path
    if not path.exists():
        raise ConfigError(
            f"region.manifest={path}: manifest does not exist and region '{cfg.region.name}' "
            "has no generator (run lcip-acquire region=" + str(cfg.region.name) + " first)"
        )
    return path
