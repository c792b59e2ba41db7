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
from lcip.acquire import naip as naip_mod
from lcip.acquire.http import Sign, download, probe
from lcip.acquire.labels import Labels, fetch_labels
from lcip.acquire.nlcd import (
    choose_release,
    fetch_nlcd,
    nearest_release,
    nlcd_grid,
    nlcd_params,
    nlcd_source,
)
from lcip.acquire.osm import cache_name as osm_cache_name
from lcip.acquire.osm import fetch_osm
from lcip.acquire.stac import (
    MAX_GEOMETRY_BYTES,
    Scene,
    newest_scenes,
    quad_box,
    search,
    signer,
)
from lcip.acquire.stamp import SETTINGS_FILE, up_to_date
from lcip.config import to_dict
from lcip.errors import ConfigError, DataError
from lcip.io.align import RESAMPLING, align_raster, grid_for
from lcip.io.atomic import atomic_path, write_text
from lcip.io.manifest import Manifest, Tile
from lcip.io.provenance import is_up_to_date, provenance
from lcip.io.raster import Grid, is_valid_raster
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
    An area of one NAIP scene is therefore one ``train`` tile and nothing else: ``lcip-map``
    trains and validates on every tile of its area (transductive, as the paper), so it maps
    such an area as it is; a stage-by-stage run validates on the training tile with
    ``data.val_splits=[train]`` (one log line says so).
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
    if len(ids) == 1 and val + test:
        log.info(
            "one NAIP scene: tile %s is the only tile, a training tile (no val or test tile; "
            "lcip-map trains and validates on it; with lcip-train add data.val_splits=[train])",
            ids[0],
        )
    return out


def imagery_params(grid: Grid) -> dict[str, Any]:
    """The parameters :func:`lcip.io.align.align_raster` records for imagery on ``grid``.

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
    source: Mapping[str, Any], place: Mapping[str, Any], opts: Options, cache: Path | None = None
) -> tuple[area_mod.Area, list[Scene]]:
    """The area and its newest NAIP scenes (geocoding answers cached under ``cache/geocode``).

    Raises:
        DataError: when no NAIP scene covers the area in the time asked for.
    """
    stac = place["stac"]
    geocoded = None if cache is None else cache / "geocode"
    area = area_mod.select_area(source, str(place["geocoder_url"]), opts.timeout, geocoded)
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
        timeout=opts.timeout,
        max_geometry_bytes=int(stac.get("max_geometry_bytes", MAX_GEOMETRY_BYTES)),
    )
    _PROBED.clear()
    scenes = newest_scenes(items, str(stac.get("asset", "image")), area.geometry, area.tiles)
    if not scenes:
        raise DataError(
            f"{area.label}: no NAIP scene in collection {stac['collection']!r} of {stac['url']} "
            f"for {when} (NAIP covers the conterminous US every 2-3 years: try another "
            "region.source.year or a date_range)"
        )
    return area, scenes


#: Sizes the servers gave in this run (HEAD requests), by URL; emptied by :func:`find_scenes`.
_PROBED: dict[str, int | None] = {}


def _signer(place: Mapping[str, Any], opts: Options) -> Sign:
    """Signs a scene's URL right before each request (``acquire.place.stac.sign``)."""
    enabled = bool(place["stac"].get("sign", False))
    return signer(enabled, timeout=opts.timeout, retries=opts.retries)


def _probed_size(url: str, timeout: float, sign: Sign | None = None) -> int | None:
    """The remote file's size from a ``HEAD`` request (asked once per run and URL)."""
    if url not in _PROBED:
        _PROBED[url] = probe(url, timeout=timeout, sign=sign).size
    return _PROBED[url]


def _sizes(url: str, known: int | None, timeout: float, sign: Sign | None = None) -> str:
    if known is not None:
        return str(known)
    try:
        size = _probed_size(url, timeout, sign)
    except DataError as exc:
        return f"? ({str(exc)[:80]})"
    return "?" if size is None else str(size)


@dataclass(frozen=True)
class ScenePlan:
    """What one scene will cost: how it is read, and bytes on the network and on disk.

    Attributes:
        scene: the scene.
        mode: ``download`` (the whole file, then resampled) or ``remote`` (its overview read
            onto the grid, :mod:`lcip.acquire.naip`).
        present: the tile's ``naip.tif`` is already there (nothing to fetch; not probed).
        size: the remote file's size (``file:size`` or a ``HEAD`` request), None if unknown.
        transfer: bytes to move (estimate for remote reads), None if unknown.
        disk: bytes left on disk (the downloaded scene and the resampled one, uncompressed
            estimate), None if unknown.
    """

    scene: Scene
    mode: str
    present: bool
    size: int | None
    transfer: int | None
    disk: int | None


def plan_scene(scene: Scene, tile_dir: Path, place: Mapping[str, Any], opts: Options) -> ScenePlan:
    """The :class:`ScenePlan` of a scene (a ``HEAD`` request when its size is unknown).

    Raises:
        DownloadError: when the server does not answer the ``HEAD`` request.
    """
    res = resolution_of(place)
    mode = naip_mod.read_mode(scene.item, res, place["stac"].get("read", "auto"))
    if is_valid_raster(tile_dir / "naip.tif"):
        return ScenePlan(scene, mode, True, scene.size, 0, None)
    size = scene.size
    if size is None:
        size = _probed_size(scene.href, opts.timeout, _signer(place, opts))
    asset = str(place["stac"].get("asset", "image"))
    out = naip_mod.output_bytes(scene.item, res, asset)
    if mode == "remote" or res is None:
        disk = out if res is not None else size
    else:
        disk = None if size is None or out is None else size + out
    transfer = naip_mod.transfer_bytes(scene.item, size, mode, res)
    return ScenePlan(scene, mode, False, size, transfer, disk)


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"


def summary(plans: Sequence[ScenePlan], place: Mapping[str, Any]) -> str:
    """One line: NAIP bytes a run moves and leaves on disk (the first line a run logs)."""
    res = resolution_of(place)
    todo = [p for p in plans if not p.present]
    remote = sum(p.mode == "remote" for p in todo)
    transfer = sum(p.transfer or 0 for p in todo)
    disk = sum(p.disk or 0 for p in todo)
    unknown = " (sizes unknown for some)" if any(p.disk is None for p in todo) else ""
    at = "native" if res is None else f"{res:g} m"
    return (
        f"{len(plans)} tiles: {len(todo)} NAIP scenes to fetch at {at} ({remote} read remotely "
        f"from overviews, {len(todo) - remote} downloaded whole): ~{transfer / 1e6:.1f} MB to "
        f"transfer, ~{disk / 1e6:.1f} MB on disk{unknown}"
    )


def describe(
    area: area_mod.Area,
    scenes: Sequence[Scene],
    tiles_dir: Path,
    cache: Path,
    place: Mapping[str, Any],
    nlcd_url: str,
    opts: Options,
) -> str:
    """What a run would fetch: scenes with sizes, NLCD windows, OSM queries, footprint files.

    Per scene: the remote file's size (``HEAD`` request when the catalog does not say), how it
    is read (``download`` or ``remote``), the bytes to transfer and the disk it takes
    (:class:`ScenePlan`); then the totals.
    """
    lines = [
        f"{area.label}: {len(scenes)} NAIP scenes",
        f"{'file':<90} {'bytes':>12}  {'read':<8} {'transfer':>10} {'disk':>10}  state",
    ]
    plans = []
    for s in scenes:
        try:
            plan = plan_scene(s, tiles_dir / s.id, place, opts)
        except DataError as exc:
            lines.append(f"{public_url(s.href, True):<90} {'?':>12}  ({str(exc)[:80]})")
            continue
        plans.append(plan)
        size = "?" if plan.size is None else str(plan.size)
        state = "present" if plan.present else "to fetch"
        lines.append(
            f"{public_url(s.href, True):<90} {size:>12}  {plan.mode:<8} "
            f"{_mb(plan.transfer):>10} {_mb(plan.disk):>10}  {state}"
        )
    lines.append(f"{'NLCD window per tile: ' + nlcd_url:<90} {'~0.1 MB':>12}  to read")
    lines.append(f"{'OSM per tile: ' + str(place['osm']['overpass_url']):<90} {'':>12}  to query")
    settings = place["footprints"]
    index_url = str(settings.get("index_url") or "")
    index = cache / "footprints" / fp.index_cache_name(index_url)
    if index_url and index.is_file():
        seen: set[str] = set()
        for s in scenes:
            for f in fp.files_for(fp.read_index(index), s.geometry, settings.get("locations")):
                if f.url in seen:
                    continue
                seen.add(f.url)
                indexed = fp.is_indexed(cache / "footprints" / fp.indexed_name(f))
                size = "" if indexed else _sizes(f.url, None, opts.timeout)
                state = "present (indexed)" if indexed else "to fetch, index once"
                lines.append(f"{f.url:<90} {size:>12}  {state}")
    elif index_url:
        lines.append(f"{index_url:<90} {_sizes(index_url, None, opts.timeout):>12}  to fetch")
    lines.append(summary(plans, place))
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
    """The footprints of the index's files covering ``polygon``, written to ``dst``.

    Each quadkey file is downloaded and parsed once, into a GeoPackage with a spatial index
    (:func:`lcip.acquire.footprints.index_footprints`; the gzip is then removed); every tile
    reads its footprints from that by bounding box. Throttled requests (429, 503) are retried
    by :func:`lcip.acquire.http.download`.
    """
    index_url = str(settings["index_url"])
    folder = cache / "footprints"
    index = download(
        index_url,
        folder / fp.index_cache_name(index_url),
        retries=opts.retries,
        timeout=opts.timeout,
        progress=opts.progress,
    )
    files = fp.files_for(fp.read_index(index), polygon, settings.get("locations"))
    geoms: list[BaseGeometry] = []
    for f in files:
        indexed = folder / fp.indexed_name(f)
        if not fp.is_indexed(indexed):
            path = download(
                f.url,
                folder / fp.cache_name(f),
                retries=opts.retries,
                timeout=opts.timeout,
                progress=opts.progress,
            )
            fp.index_footprints(path, indexed)
            path.unlink()
        geoms += fp.footprints_in(indexed, polygon)
    return fp.write_footprints(geoms, dst)


def _labels(
    scene: Scene, grid: Grid, dst: Path, cache: Path, settings: Mapping[str, Any], opts: Options
) -> Labels | None:
    """1 m labels on the tile grid: every covering item mosaicked (:mod:`lcip.acquire.labels`)."""
    return fetch_labels(
        scene.id,
        grid,
        dst,
        cache / "labels",
        settings["labels"],
        catalog_url=str(settings["stac"]["url"]),
        imagery=scene.item,
        sign=bool(settings["stac"].get("sign", False)),
        timeout=opts.timeout,
        retries=opts.retries,
        progress=opts.progress,
    )


def _resampled_up_to_date(native: Path, naip: Path, res: float) -> bool:
    """Whether ``naip`` was resampled from ``native`` as it is now (no request needed)."""
    if not native.is_file():
        return False
    try:
        target = grid_for(native, resolution=res)
    except DataError:  # a truncated or corrupt scene: fetched again
        return False
    return is_up_to_date(naip, provenance(imagery_params(target), {"source": native}), target)


def fetch_naip(scene: Scene, tile_dir: Path, place: Mapping[str, Any], opts: Options) -> Path:
    """The tile's ``naip.tif`` at ``acquire.place.resolution``: read or downloaded, checked.

    A scene whose overviews serve the resolution (:func:`lcip.acquire.naip.read_mode`) is read
    remotely onto the grid, nothing else kept. Otherwise the whole scene is downloaded to
    ``naip_native.tif`` (``naip.tif`` itself for ``native``), size-checked against the
    catalog's ``file:size`` or the server's answer to a ``HEAD`` request (also when a file is
    already there: a truncated one is fetched again), and resampled (bilinear).

    Raises:
        DownloadError: one line naming the URL when a transfer fails.
    """
    res = resolution_of(place)
    naip = tile_dir / "naip.tif"
    public = public_url(scene.href, bool(place["stac"].get("sign", False)))
    sign = _signer(place, opts)
    if naip_mod.read_mode(scene.item, res, place["stac"].get("read", "auto")) == "remote":
        assert res is not None
        if opts.force or not naip_mod.is_read(naip, public, res):
            naip_mod.read_remote(
                scene.href, naip, res, source=public, sign=sign, timeout=opts.timeout
            )
        return naip
    native = tile_dir / ("naip.tif" if res is None else "naip_native.tif")
    if not opts.force and res is not None and _resampled_up_to_date(native, naip, res):
        return naip
    size = scene.size if scene.size is not None else _probed_size(scene.href, opts.timeout, sign)
    download(
        scene.href,
        native,
        size=size,
        retries=opts.retries,
        timeout=opts.timeout,
        progress=opts.progress,
        desc=scene.id,
        sign=sign,
    )
    if res is not None:
        target = grid_for(native, resolution=res)
        expected = provenance(imagery_params(target), {"source": native})
        if opts.force or not is_up_to_date(naip, expected, target):
            align_raster(native, naip, target, "imagery")
    return naip


def build_tile(
    scene: Scene,
    split: str,
    tile_dir: Path,
    cache: Path,
    place: Mapping[str, Any],
    naip_year: int,
    opts: Options,
) -> Tile:
    """Fetch and align one tile's layers (imagery and NLCD skipped when up to date)."""
    signed = bool(place["stac"].get("sign", False))
    naip = fetch_naip(scene, tile_dir, place, opts)
    grid = Grid.of(naip)
    layers: dict[str, Path] = {"naip": naip}
    urls = {"naip": public_url(scene.href, signed)}
    nlcd = tile_dir / "nlcd.tif"
    halo_m = float(place["nlcd"]["halo_m"])
    nlcd_target = nlcd_grid(grid, halo_m)
    imagery_year = int(scene.datetime[:4]) if scene.datetime[:4].isdigit() else naip_year
    release = choose_release(scene.id, imagery_year, list(place["nlcd"]["years"]))
    nlcd_src = nlcd_source(place["nlcd"], release)
    expected = provenance(nlcd_params(nlcd_src.location, nlcd_target, halo_m))
    if opts.force or not is_up_to_date(nlcd, expected, nlcd_target):
        fetch_nlcd(nlcd_src, grid, nlcd, halo_m, opts.timeout, cache, opts.progress)
    layers["nlcd"], urls["nlcd"] = nlcd, nlcd_src.location
    # Vector layers and labels come from caches: written again on every run that gets here.
    osm = place["osm"]
    polygon = footprint_polygon(grid, float(osm["buffer_m"]))
    if osm.get("overpass_url"):
        url = str(osm["overpass_url"])
        layers["osm"] = _write_copy(
            fetch_osm(polygon, url, cache / "osm", float(osm.get("timeout", 180))),
            tile_dir / "osm.gpkg",
        )
        urls["osm"] = f"{url}#{osm_cache_name(polygon, url)}"
    if place["footprints"].get("index_url"):
        layers["buildings"] = _footprints(
            polygon, tile_dir / "buildings.gpkg", cache, place["footprints"], opts
        )
        urls["buildings"] = str(place["footprints"]["index_url"])
    fraction: float | None = None
    if place.get("labels") and place["labels"].get("collection"):
        got = _labels(scene, grid, tile_dir / "lc.tif", cache, place, opts)
        if got is not None:
            layers["lc"], urls["lc"] = got.path, got.url
            fraction = got.fraction
    meta = {f"{k}_url": v for k, v in urls.items()}
    if fraction is not None:
        meta["lc_fraction"] = f"{fraction:.4f}"
    return Tile(scene.id, split, grid.crs.to_string(), grid.bounds, layers, meta)


def write_checked_manifest(tiles: Sequence[Tile], path: Path) -> Manifest:
    """Write the manifest with every layer's sha256 (computed once and remembered)."""
    from lcip.io.provenance import sha256_file
    from lcip.io.verify import remember_many

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


__all__ = [
    "SETTINGS_FILE",
    "ScenePlan",
    "acquire_place",
    "assign_splits",
    "build_tile",
    "describe",
    "fetch_naip",
    "find_scenes",
    "footprint_polygon",
    "plan_scene",
    "public_url",
    "resolution_of",
    "summary",
    "write_checked_manifest",
]
