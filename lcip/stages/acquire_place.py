"""Stage ``acquire`` for ``region.source.dataset: place``: any US area from NAIP, NLCD, OSM.

For the area selected by ``region.source`` (a place name, a bounding box or NAIP tile ids,
and a NAIP ``year`` or ``date_range``; :mod:`lcip.acquire.area`) the stage

1. searches the STAC catalog (``acquire.place.stac``) for NAIP scenes intersecting the area and
   keeps the newest scene of every quarter quad (:mod:`lcip.acquire.stac`); each scene is a
   tile, on its own UTM grid;
2. downloads each scene (resumable, size-checked, atomic: :func:`lcip.acquire.http.download`)
   and resamples it to ``acquire.place.resolution`` metres (bilinear; ``native`` keeps the
   scene's grid) as a COG;
3. per tile, writes the NLCD of the nearest release around the tile at 30 m in the tile's
   CRS (:mod:`lcip.acquire.nlcd`), the OSM roads / waterways / water bodies / buildings
   (:mod:`lcip.acquire.osm`), the Microsoft building footprints (:mod:`lcip.acquire.footprints`)
   and, when ``acquire.place.labels`` names a STAC collection, 1 m labels on the tile grid,
   all under ``<region.dir>/tiles/<tile id>/``;
4. writes the manifest (tile id, split, CRS, bounds, layers ``naip``, ``nlcd``, ``osm``,
   ``buildings`` [, ``lc``], and ``<layer>_url`` / ``<layer>_sha256``), remembering the
   checksums (:mod:`lcip.verify`).

``acquire.dry_run=true`` lists the scenes, files and queries with their sizes and fetches
nothing. A rerun whose settings match ``acquire.json`` and whose files verify makes no request
at all; OSM answers and footprint files are cached per area in ``<acquire.dir>/place``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import shapely
from omegaconf import DictConfig
from shapely.geometry.base import BaseGeometry
from tqdm.auto import tqdm

import lcip
from lcip.acquire import area as area_mod
from lcip.acquire import footprints as fp
from lcip.acquire.http import download, probe
from lcip.acquire.nlcd import fetch_nlcd, nearest_release, nlcd_grid, nlcd_params
from lcip.acquire.osm import cache_name as osm_cache_name
from lcip.acquire.osm import fetch_osm
from lcip.acquire.stac import Scene, newest_scenes, quad_box, scene_of, search
from lcip.acquire.stamp import SETTINGS_FILE, up_to_date
from lcip.align import RESAMPLING, align_raster, grid_for
from lcip.atomic import atomic_path, write_text
from lcip.config import to_dict
from lcip.errors import ConfigError, DataError
from lcip.manifest import Manifest, Tile
from lcip.provenance import is_up_to_date, provenance
from lcip.raster import Grid
from lcip.stages.paths import region_manifest_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    """Transfer options from ``acquire``."""

    dry_run: bool
    timeout: float
    retries: int
    progress: bool
    force: bool


def _options(cfg: DictConfig, force: bool) -> Options:
    return Options(
        bool(cfg.acquire.dry_run),
        float(cfg.acquire.timeout),
        int(cfg.acquire.retries),
        bool(cfg.acquire.progress),
        force,
    )


def resolution_of(settings: Mapping[str, Any]) -> float | None:
    """``acquire.place.resolution`` in metres, or None for ``native``.

    Raises:
        ConfigError: for anything but a positive number or ``native``.
    """
    value = settings.get("resolution", 1.0)
    if str(value).lower() == "native":
        return None
    try:
        res = float(value)
    except (TypeError, ValueError):
        res = -1.0
    if not res > 0:
        raise ConfigError(
            f"acquire.place.resolution={value!r}: a pixel size in metres (1.0) or 'native'"
        )
    return res


def assign_splits(ids: Sequence[str], counts: Mapping[str, int]) -> dict[str, str]:
    """Splits of the tiles: the last ``counts['val']`` ids val, ``counts['test']`` before test.

    Every tile not given to val or test is a training tile; at least one tile stays train.
    """
    ids = sorted(ids)
    val, test = int(counts.get("val", 0)), int(counts.get("test", 0))
    out = dict.fromkeys(ids, "train")
    rest = ids[1:] if ids else []
    for tile in reversed(rest):
        if val:
            out[tile], val = "val", val - 1
        elif test:
            out[tile], test = "test", test - 1
    return out


def imagery_params(grid: Grid) -> dict[str, Any]:
    """The parameters :func:`lcip.align.align_raster` records for imagery on ``grid``.

    (A resampled scene whose provenance differs -- other grid, other source -- is made again.)
    """
    return {"kind": "imagery", "resampling": RESAMPLING["imagery"].name, "grid": grid.describe()}


def public_url(url: str, signed: bool) -> str:
    """The URL recorded in the manifest: without the signature's query when it was signed."""
    if not signed:
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def footprint_polygon(grid: Grid, buffer_m: float) -> BaseGeometry:
    """The tile's footprint grown by ``buffer_m``, in longitude / latitude."""
    left, bottom, right, top = grid.bounds
    box = shapely.segmentize(
        shapely.box(left - buffer_m, bottom - buffer_m, right + buffer_m, top + buffer_m),
        max(right - left, top - bottom) / 8,
    )
    return area_mod.to_lonlat(box, grid.crs)


def find_scenes(
    source: Mapping[str, Any], place: Mapping[str, Any], opts: Options
) -> tuple[area_mod.Area, list[Scene]]:
    """The area and its newest NAIP scenes.

    Raises:
        DataError: when no NAIP scene covers the area in the time asked for.
    """
    stac = place["stac"]
    area = area_mod.select_area(source, str(place["geocoder_url"]), opts.timeout)
    geometry = area.geometry
    if area.tiles is not None:
        geometry = shapely.union_all([quad_box(t).buffer(-0.005) for t in area.tiles])
    assert geometry is not None
    when = area_mod.time_range(source)
    items = search(
        str(stac["url"]),
        str(stac["collection"]),
        geometry,
        when,
        sign=bool(stac.get("sign", False)),
        timeout=opts.timeout,
    )
    scenes = newest_scenes(items, str(stac.get("asset", "image")), area.geometry, area.tiles)
    if not scenes:
        raise DataError(
            f"{area.label}: no NAIP scene in collection {stac['collection']!r} of {stac['url']} "
            f"for {when} (NAIP covers the conterminous US every 2-3 years: try another "
            "region.source.year or a date_range)"
        )
    return area, scenes


def _sizes(url: str, known: int | None, timeout: float) -> str:
    if known is not None:
        return str(known)
    try:
        size = probe(url, timeout=timeout).size
    except DataError as exc:
        return f"? ({str(exc)[:80]})"
    return "?" if size is None else str(size)


def describe(
    area: area_mod.Area,
    scenes: Sequence[Scene],
    tiles_dir: Path,
    cache: Path,
    place: Mapping[str, Any],
    nlcd_url: str,
    opts: Options,
) -> str:
    """What a run would fetch: scenes with sizes, NLCD windows, OSM queries, footprint files."""
    lines = [f"{area.label}: {len(scenes)} NAIP scenes", f"{'file':<90} {'bytes':>12}  state"]
    total = 0
    for s in scenes:
        size = _sizes(s.href, s.size, opts.timeout)
        total += int(size) if size.isdigit() else 0
        state = "present" if (tiles_dir / s.id / "naip.tif").is_file() else "to fetch"
        lines.append(f"{public_url(s.href, True):<90} {size:>12}  {state}")
    lines.append(f"{'NLCD window per tile: ' + nlcd_url:<90} {'~0.1 MB':>12}  to read")
    lines.append(f"{'OSM per tile: ' + str(place['osm']['overpass_url']):<90} {'':>12}  to query")
    index = cache / "footprints" / "dataset-links.csv"
    index_url = str(place["footprints"]["index_url"])
    if index.is_file():
        for s in scenes:
            grid_poly = s.geometry
            for f in fp.files_for(
                fp.read_index(index), grid_poly, place["footprints"].get("locations")
            ):
                size = _sizes(f.url, None, opts.timeout)
                state = (
                    "present" if (cache / "footprints" / fp.cache_name(f)).is_file() else "to fetch"
                )
                lines.append(f"{f.url:<90} {size:>12}  {state}")
    else:
        lines.append(f"{index_url:<90} {_sizes(index_url, None, opts.timeout):>12}  to fetch")
    lines.append(f"{len(scenes)} tiles: {total / 1e6:.2f} MB of NAIP to fetch at most")
    return "\n".join(lines)


def _write_copy(src: Path, dst: Path) -> Path:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst


def _footprints(
    polygon: BaseGeometry,
    dst: Path,
    cache: Path,
    settings: Mapping[str, Any],
    opts: Options,
) -> Path:
    """The footprints of the index's files covering ``polygon``, written to ``dst``."""
    index_url = str(settings["index_url"])
    index = download(
        index_url,
        cache / "footprints" / "dataset-links.csv",
        retries=opts.retries,
        timeout=opts.timeout,
        progress=opts.progress,
    )
    files = fp.files_for(fp.read_index(index), polygon, settings.get("locations"))
    geoms: list[BaseGeometry] = []
    for f in files:
        path = download(
            f.url,
            cache / "footprints" / fp.cache_name(f),
            retries=opts.retries,
            timeout=opts.timeout,
            progress=opts.progress,
        )
        geoms += fp.read_footprints(path, polygon)
    return fp.write_footprints(geoms, dst)


def _labels(
    scene: Scene, grid: Grid, dst: Path, cache: Path, settings: Mapping[str, Any], opts: Options
) -> tuple[Path, str] | None:
    """1 m labels from a STAC collection onto the tile grid (first covering item wins)."""
    stac = settings["stac"]
    labels = settings["labels"]
    items = search(
        str(labels.get("url") or stac["url"]),
        str(labels["collection"]),
        scene.geometry,
        None,
        sign=bool(labels.get("sign", stac.get("sign", False))),
        timeout=opts.timeout,
    )
    if not items:
        log.warning("tile %s: no labels in %s", scene.id, labels["collection"])
        return None
    label = scene_of(sorted(items, key=lambda i: str(i["id"]))[0], str(labels.get("asset", "data")))
    src = download(
        label.href,
        cache / "labels" / f"{label.id}.tif",
        size=label.size,
        retries=opts.retries,
        timeout=opts.timeout,
        progress=opts.progress,
    )
    align_raster(src, dst, grid, "categorical")
    return dst, public_url(label.href, bool(stac.get("sign", False)))


def build_tile(
    scene: Scene,
    split: str,
    tile_dir: Path,
    cache: Path,
    place: Mapping[str, Any],
    nlcd_url: str,
    opts: Options,
) -> Tile:
    """Fetch and align one tile's layers (imagery and NLCD skipped when up to date)."""
    signed = bool(place["stac"].get("sign", False))
    res = resolution_of(place)
    native = tile_dir / ("naip.tif" if res is None else "naip_native.tif")
    download(
        scene.href,
        native,
        size=scene.size,
        retries=opts.retries,
        timeout=opts.timeout,
        progress=opts.progress,
        desc=scene.id,
    )
    naip = tile_dir / "naip.tif"
    if res is not None:
        target = grid_for(native, resolution=res)
        expected = provenance(imagery_params(target), {"source": native})
        if opts.force or not is_up_to_date(naip, expected, target):
            align_raster(native, naip, target, "imagery")
    grid = Grid.of(naip)
    layers: dict[str, Path] = {"naip": naip}
    urls = {"naip": public_url(scene.href, signed)}
    nlcd = tile_dir / "nlcd.tif"
    halo_m = float(place["nlcd"]["halo_m"])
    nlcd_target = nlcd_grid(grid, halo_m)
    expected = provenance(nlcd_params(nlcd_url, nlcd_target, halo_m))
    if opts.force or not is_up_to_date(nlcd, expected, nlcd_target):
        fetch_nlcd(nlcd_url, grid, nlcd, halo_m, opts.timeout)
    layers["nlcd"], urls["nlcd"] = nlcd, nlcd_url
    # Vector layers and labels come from caches: written again on every run that gets here.
    osm = place["osm"]
    polygon = footprint_polygon(grid, float(osm["buffer_m"]))
    if osm.get("overpass_url"):
        url = str(osm["overpass_url"])
        layers["osm"] = _write_copy(
            fetch_osm(polygon, url, cache / "osm", opts.timeout), tile_dir / "osm.gpkg"
        )
        urls["osm"] = f"{url}#{osm_cache_name(polygon, url)}"
    if place["footprints"].get("index_url"):
        layers["buildings"] = _footprints(
            polygon, tile_dir / "buildings.gpkg", cache, place["footprints"], opts
        )
        urls["buildings"] = str(place["footprints"]["index_url"])
    if place.get("labels") and place["labels"].get("collection"):
        got = _labels(scene, grid, tile_dir / "lc.tif", cache, place, opts)
        if got is not None:
            layers["lc"], urls["lc"] = got
    meta = {f"{k}_url": v for k, v in urls.items()}
    return Tile(scene.id, split, grid.crs.to_string(), grid.bounds, layers, meta)


def write_checked_manifest(tiles: Sequence[Tile], path: Path) -> Manifest:
    """Write the manifest with every layer's sha256 (computed once and remembered)."""
    from lcip.provenance import sha256_file
    from lcip.verify import remember_many

    out, checked = [], []
    for t in tiles:
        meta = dict(t.meta)
        for name, file in t.layers.items():
            digest = sha256_file(file)
            checked.append((file, digest))
            meta[f"{name}_sha256"] = digest
        out.append(Tile(t.tile_id, t.split, t.crs, t.bounds, t.layers, meta))
    remember_many(checked)
    Manifest(tuple(out)).write(path)
    return Manifest.read(path)


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
    nlcd_url = str(place["nlcd"]["url"]).format(year=nlcd_year)
    manifest_path = region_manifest_path(cfg)
    settings = {"source": source, "place": place, "lcip_version": lcip.__version__}
    stamp = manifest_path.parent / SETTINGS_FILE
    if not force and not opts.dry_run and up_to_date(manifest_path, stamp, settings):
        log.info("region %s is up to date: %s", cfg.region.name, manifest_path)
        return manifest_path
    cache = Path(cfg.acquire.dir) / "place"
    tiles_dir = Path(cfg.region.dir) / "tiles"
    area, scenes = find_scenes(source, place, opts)
    if opts.dry_run:
        print(describe(area, scenes, tiles_dir, cache, place, nlcd_url, opts))
        return None
    log.info("%s: %d NAIP scenes; NLCD %d (for %d)", area.label, len(scenes), nlcd_year, year)
    splits = assign_splits([s.id for s in scenes], source.get("splits") or {})
    tiles = [
        build_tile(s, splits[s.id], tiles_dir / s.id, cache, place, nlcd_url, opts)
        for s in tqdm(scenes, desc="tiles", unit="tile", disable=not opts.progress)
    ]
    write_checked_manifest(tiles, manifest_path)
    write_text(stamp, json.dumps(settings, indent=1, sort_keys=True))
    log.info("region %s: manifest %s", cfg.region.name, manifest_path)
    return manifest_path


__all__ = [
    "SETTINGS_FILE",
    "acquire_place",
    "assign_splits",
    "build_tile",
    "describe",
    "find_scenes",
    "footprint_polygon",
    "public_url",
    "resolution_of",
    "write_checked_manifest",
]
