"""Any US area as tiles: NAIP scenes found, read onto a grid, with NLCD, OSM and footprints.

The library behind ``lcip-acquire region=place`` (:mod:`lcip.stages.acquire_place`, which reads
the settings) and ``lcip-map``: :func:`find_scenes` searches the STAC catalog for the area's
newest NAIP scene of every quarter quad, :func:`plan_scene` / :func:`describe` say what a run
would fetch, :func:`build_tile` brings one scene and its layers onto the tile's grid, and
:func:`write_checked_manifest` writes the manifest with every file's checksum.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import shapely
from shapely.geometry.base import BaseGeometry

from lcip.acquire import area as area_mod
from lcip.acquire import footprints as fp
from lcip.acquire import naip as naip_mod
from lcip.acquire.http import Sign, download, probe
from lcip.acquire.labels import Labels, fetch_labels
from lcip.acquire.nlcd import (
    choose_release,
    fetch_nlcd,
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
from lcip.errors import ConfigError, DataError
from lcip.io.align import RESAMPLING, align_raster, grid_for
from lcip.io.atomic import atomic_path
from lcip.io.manifest import Manifest, Tile
from lcip.io.provenance import is_up_to_date, provenance
from lcip.io.raster import Grid, is_valid_raster

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    """Transfer options from ``acquire``."""

    dry_run: bool
    timeout: float
    retries: int
    progress: bool
    force: bool


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


__all__ = [
    "Options",
    "ScenePlan",
    "assign_splits",
    "build_tile",
    "describe",
    "fetch_naip",
    "find_scenes",
    "footprint_polygon",
    "imagery_params",
    "plan_scene",
    "public_url",
    "resolution_of",
    "summary",
    "write_checked_manifest",
]
