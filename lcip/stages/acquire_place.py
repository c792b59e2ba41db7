"""Stage ``acquire`` for ``region.source.dataset: place``: any US area from NAIP, NLCD, OSM.

For the area selected by ``region.source`` (a place name, a bounding box or NAIP tile ids,
and a NAIP ``year`` or ``date_range``; :mod:`lcip.acquire.area`) the stage

1. searches the STAC catalog (``acquire.place.stac``) for NAIP scenes intersecting the area and
   keeps the newest scene of every quarter quad (:mod:`lcip.acquire.stac`; a complex area is
   searched by its simplified hull, then filtered exactly); each scene is a tile, on its own
   UTM grid;
2. brings each scene to ``acquire.place.resolution`` metres (bilinear; ``native`` keeps the
   scene's grid) as a COG: a 0.3 m scene is read remotely from its overview onto the grid
   (:mod:`lcip.acquire.naip`), others are downloaded (resumable, atomic, size-checked against
   the catalog's ``file:size`` or a ``HEAD`` request: :func:`lcip.acquire.http.download`) and
   resampled; the first log line says the bytes to transfer and the disk they take;
3. per tile, writes the NLCD of the nearest release around the tile at 30 m in the tile's
   CRS (:mod:`lcip.acquire.nlcd`), the OSM roads / waterways / water bodies / buildings
   (:mod:`lcip.acquire.osm`), the Microsoft building footprints (:mod:`lcip.acquire.footprints`)
   and, when ``acquire.place.labels`` names a STAC collection, 1 m labels on the tile grid,
   all under ``<region.dir>/tiles/<tile id>/``;
4. writes the manifest (tile id, split, CRS, bounds, layers ``naip``, ``nlcd``, ``osm``,
   ``buildings`` [, ``lc``], and ``<layer>_url`` / ``<layer>_sha256``), remembering the
   checksums (:mod:`lcip.io.verify`).

``acquire.dry_run=true`` lists the scenes (remote size, how each is read, bytes to transfer
and on disk), files and queries with their sizes and fetches nothing. A rerun whose settings
match ``acquire.json`` and whose files verify makes no request at all; OSM answers and
indexed footprint files are cached in ``<acquire.dir>/place``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig
from tqdm.auto import tqdm

import lcip
from lcip.acquire import area as area_mod
from lcip.acquire.nlcd import (
    nearest_release,
    nlcd_source,
)
from lcip.acquire.place import (
    Options,
    assign_splits,
    build_tile,
    describe,
    find_scenes,
    plan_scene,
    resolution_of,
    summary,
    write_checked_manifest,
)
from lcip.acquire.stamp import SETTINGS_FILE, up_to_date
from lcip.config import to_dict
from lcip.errors import ConfigError
from lcip.io.atomic import write_text
from lcip.stages.paths import region_manifest_path

log = logging.getLogger(__name__)


def _options(cfg: DictConfig, force: bool) -> Options:
    return Options(
        bool(cfg.acquire.dry_run),
        float(cfg.acquire.timeout),
        int(cfg.acquire.retries),
        bool(cfg.acquire.progress),
        force,
    )


def acquire_place(cfg: DictConfig, force: bool = False) -> Path | None:
    """Acquire a ``place`` region (see the module doc).

    Args:
        cfg: composed config (``region`` with ``source.dataset: place``, ``acquire``).
        force: search and rebuild every layer even when up to date (downloads already whole
            are still kept).

    Returns:
        the manifest, or None for a dry run.

    Raises:
        ConfigError: for bad settings.
        DataError: when the area has no NAIP coverage or a place is not found.
        DownloadError: one line naming the URL when a transfer fails.
    """
    opts = _options(cfg, force)
    source = to_dict(cfg.region.source)
    if "place" not in cfg.acquire:
        raise ConfigError("acquire.place: missing (the settings of region.source.dataset=place)")
    place = to_dict(cfg.acquire.place)
    resolution_of(place)
    area_mod.selector(source)
    year = area_mod.nominal_year(source)
    nlcd_year = nearest_release(year, list(place["nlcd"]["years"]))
    nlcd_url = nlcd_source(place["nlcd"], nlcd_year).location
    manifest_path = region_manifest_path(cfg)
    settings = {"source": source, "place": place, "lcip_version": lcip.__version__}
    stamp = manifest_path.parent / SETTINGS_FILE
    if not force and not opts.dry_run and up_to_date(manifest_path, stamp, settings):
        log.info("region %s is up to date: %s", cfg.region.name, manifest_path)
        return manifest_path
    cache = Path(cfg.acquire.dir) / "place"
    tiles_dir = Path(cfg.region.dir) / "tiles"
    area, scenes = find_scenes(source, place, opts, cache)
    if opts.dry_run:
        print(describe(area, scenes, tiles_dir, cache, place, nlcd_url, opts))
        return None
    log.info("%s", summary([plan_scene(s, tiles_dir / s.id, place, opts) for s in scenes], place))
    log.info("%s: %d NAIP scenes; NLCD %d (for %d)", area.label, len(scenes), nlcd_year, year)
    splits = assign_splits([s.id for s in scenes], source.get("splits") or {})
    tiles = [
        build_tile(s, splits[s.id], tiles_dir / s.id, cache, place, year, opts)
        for s in tqdm(scenes, desc="tiles", unit="tile", disable=not opts.progress)
    ]
    write_checked_manifest(tiles, manifest_path)
    write_text(stamp, json.dumps(settings, indent=1, sort_keys=True))
    log.info("region %s: manifest %s", cfg.region.name, manifest_path)
    return manifest_path


__all__ = ["acquire_place"]
