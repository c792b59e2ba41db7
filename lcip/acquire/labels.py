"""1 m labels for a tile: every label item of a STAC collection that covers it, mosaicked.

``acquire.place.labels`` names the collection (e.g. the Chesapeake Conservancy's
``chesapeake-lc-7``, ``chesapeake-lc-13`` or ``chesapeake-lu`` on the Planetary Computer), the
asset holding the raster (``data``) and optionally its own catalog ``url`` and ``sign``
(default: those of ``acquire.place.stac``). Label items rarely match a NAIP tile: the
Chesapeake items are 10 x 10 km squares in USA Contiguous Albers, most NAIP quarter quads
straddle two to four of them. :func:`fetch_labels` therefore

1. searches the collection with the tile's footprint (any time: the Chesapeake items have
   ``datetime: null`` and a ``start_datetime`` / ``end_datetime`` range);
2. downloads every intersecting item into the cache (resumable, size-checked:
   :func:`lcip.acquire.http.download`);
3. reads each onto the tile grid with nearest resampling (class codes are never mixed) and
   fills the tile's still unlabelled pixels from it, items closest in time to the imagery
   first (then the newest, then by id), so overlaps are decided the same way on every run;
4. writes the mosaic atomically as a COG with lcip's label conventions: the source codes
   unchanged, **0 = nodata** (a source's own nodata -- 15 for the Chesapeake items, per the
   asset's ``raster:bands`` and the files; 0 in older files -- becomes 0; a source code 0 is
   nodata too), the item ids and file fingerprints in its provenance and the labelled fraction
   in its ``lc_fraction`` tag.

It logs the fraction of the tile that got a label (one line) and warns in one line when the
labels' years do not include the imagery's year (land cover may have changed in between).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from rasterio.enums import Resampling
from shapely.geometry.base import BaseGeometry

import lcip
from lcip.acquire.area import to_lonlat
from lcip.acquire.http import download
from lcip.acquire.stac import scene_of, search, signer, unsigned
from lcip.errors import DataError
from lcip.io.provenance import PROVENANCE_TAG, is_up_to_date, provenance
from lcip.io.raster import Grid, is_valid_raster, open_raster, read_src_on_grid, write_raster

log = logging.getLogger(__name__)

#: The nodata value of the written label layer (lcip's ``lc`` convention).
LC_NODATA = 0
#: The tag of the written label layer holding the fraction of its pixels with a label.
FRACTION_TAG = "lc_fraction"


@dataclass(frozen=True)
class LabelItem:
    """A label item of the collection, as found by the search.

    Attributes:
        id: the item id.
        href: the asset's public URL (signed right before each request when the catalog
            signs its URLs).
        size: the asset's size in bytes when the item says (``file:size``), else None.
        nodata: the asset's nodata value per its ``raster:bands``, else None.
        years: first and last year the labels describe, else None.
    """

    id: str
    href: str
    size: int | None
    nodata: float | None
    years: tuple[int, int] | None


@dataclass(frozen=True)
class Labels:
    """The label layer written for a tile.

    Attributes:
        path: the written raster.
        url: the items' asset URLs (unsigned), separated by spaces, for the manifest.
        items: ids of every item mosaicked (in the order they were applied).
        fraction: the fraction of the tile's pixels that got a label (0..1).
        years: the year ranges of the items.
    """

    path: Path
    url: str
    items: tuple[str, ...]
    fraction: float
    years: tuple[tuple[int, int], ...]


def _year(value: Any) -> int | None:
    text = str(value or "")
    return int(text[:4]) if len(text) >= 4 and text[:4].isdigit() else None


def item_years(item: Mapping[str, Any]) -> tuple[int, int] | None:
    """The years a STAC item describes.

    ``start_datetime`` .. ``end_datetime``, else ``datetime``; None when it says neither.
    """
    props = item.get("properties") or {}
    start = _year(props.get("start_datetime")) or _year(props.get("datetime"))
    end = _year(props.get("end_datetime")) or _year(props.get("datetime")) or start
    if start is None or end is None:
        return None
    return (min(start, end), max(start, end))


def imagery_year(item: Mapping[str, Any]) -> int | None:
    """The year of a NAIP item: ``naip:year``, else the year of its ``datetime``."""
    props = item.get("properties") or {}
    return _year(props.get("naip:year")) or _year(props.get("datetime"))


def asset_nodata(item: Mapping[str, Any], asset: str) -> float | None:
    """The nodata value of an item's asset per its first ``raster:bands`` entry, else None."""
    bands = ((item.get("assets") or {}).get(asset) or {}).get("raster:bands") or []
    value = bands[0].get("nodata") if bands and isinstance(bands[0], Mapping) else None
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def label_item(item: Mapping[str, Any], asset: str) -> LabelItem:
    """The :class:`LabelItem` of a STAC item (dict).

    Raises:
        DataError: when the item has no such asset.
    """
    scene = scene_of(item, asset)
    return LabelItem(scene.id, scene.href, scene.size, asset_nodata(item, asset), item_years(item))


def applied_order(items: Sequence[LabelItem], year: int | None) -> list[LabelItem]:
    """Items in the order they fill the tile.

    Nearest in time to ``year`` first (an item whose years include it is at distance 0), then
    the newest, then by id; items without years last.
    """

    def key(item: LabelItem) -> tuple[int, int, str]:
        if item.years is None:
            return (1 << 30, 0, item.id)
        start, end = item.years
        distance = 0 if year is None else max(start - year, year - end, 0)
        return (distance, -end, item.id)

    return sorted(items, key=key)


def tile_footprint(grid: Grid) -> BaseGeometry:
    """The tile grid's footprint in longitude / latitude (edges densified)."""
    left, bottom, right, top = grid.bounds
    box = shapely.segmentize(
        shapely.box(left, bottom, right, top), max(right - left, top - bottom) / 8
    )
    return to_lonlat(box, grid.crs)


def read_labels(path: Path, grid: Grid, item_nodata: float | None = None) -> npt.NDArray[Any]:
    """One label raster on ``grid`` (nearest), its nodata (the file's, the item's, and 0) as 0.

    Args:
        path: the label raster (any CRS).
        grid: the tile grid.
        item_nodata: the nodata value its STAC item declares (None: only the file's).

    Returns:
        integer array (height, width), :data:`LC_NODATA` where unlabelled.

    Raises:
        DataError: when the file is not a raster of integer class codes.
    """
    with open_raster(path) as src:
        dtype = np.dtype(src.dtypes[0])
        if dtype.kind not in "iu":
            raise DataError(f"{path}: label raster of {dtype} values, expected integer classes")
        invalid = [v for v in (src.nodata, item_nodata, LC_NODATA) if v is not None]
        data = read_src_on_grid(
            src,
            grid,
            bands=1,
            resampling=Resampling.nearest,
            fill=src.nodata if src.nodata is not None else LC_NODATA,
            name=str(path),
        )
    return np.where(np.isin(data, invalid), LC_NODATA, data)


def mosaic(sources: Sequence[tuple[Path, float | None]], grid: Grid) -> npt.NDArray[Any]:
    """Label rasters mosaicked onto ``grid``: each fills the pixels still unlabelled.

    Args:
        sources: (raster, the nodata its item declares) in the order they are applied.
        grid: the tile grid.

    Returns:
        the mosaic (height, width; :data:`LC_NODATA` where no source has a label).
    """
    out: npt.NDArray[Any] | None = None
    for path, nodata in sources:
        data = read_labels(path, grid, nodata)
        if out is None:
            out = np.full(grid.shape, LC_NODATA, dtype=data.dtype)
        elif data.dtype != out.dtype:
            out = out.astype(np.promote_types(out.dtype, data.dtype))
        take = (out == LC_NODATA) & (data != LC_NODATA)
        out[take] = data[take]
    if out is None:
        out = np.full(grid.shape, LC_NODATA, dtype=np.uint8)
    return out


def mosaic_params(grid: Grid, items: Sequence[LabelItem]) -> dict[str, Any]:
    """The parameters recorded in the label layer's provenance."""
    return {
        "kind": "labels",
        "resampling": Resampling.nearest.name,
        "grid": grid.describe(),
        "items": [i.id for i in items],
        "nodata": [i.nodata for i in items],
        "output_nodata": LC_NODATA,
    }


def write_mosaic(items: Sequence[LabelItem], files: Sequence[Path], grid: Grid, dst: Path) -> float:
    """Mosaic the items' files onto ``grid`` into ``dst`` (COG, atomic) unless it is up to date.

    Returns:
        the fraction of the tile's pixels that have a label.
    """
    inputs = {item.id: path for item, path in zip(items, files, strict=True)}
    expected = provenance(mosaic_params(grid, items), inputs)
    if is_up_to_date(dst, expected, grid, 1):
        with open_raster(dst) as src:
            tagged = src.tags().get(FRACTION_TAG)
            if tagged is not None:
                return float(tagged)
            data = src.read(1)
        return float((data != LC_NODATA).mean())
    data = mosaic([(f, i.nodata) for i, f in zip(items, files, strict=True)], grid)
    fraction = float(np.count_nonzero(data != LC_NODATA)) / float(data.size)
    write_raster(
        dst,
        data,
        grid,
        nodata=LC_NODATA,
        tags={
            PROVENANCE_TAG: expected,
            "lcip_version": lcip.__version__,
            FRACTION_TAG: f"{fraction:.6f}",
            "layer": "lc",
        },
        band_names=["lc"],
        cog=True,
    )
    return fraction


def _span(years: tuple[int, int]) -> str:
    return str(years[0]) if years[0] == years[1] else f"{years[0]}-{years[1]}"


def year_warning(tile_id: str, years: Sequence[tuple[int, int]], imagery: int | None) -> str | None:
    """The one-line warning when the labels' years do not all include the imagery's year."""
    if imagery is None or not years or all(a <= imagery <= b for a, b in years):
        return None
    spans = ", ".join(_span(y) for y in sorted(set(years)))
    return (
        f"tile {tile_id}: labels from {spans} but imagery from {imagery}: "
        "land cover may have changed in between"
    )


def _whole(path: Path, url: str) -> Path:
    """``path`` when it is a whole raster; else it is removed (fetched anew by the next run)."""
    if not is_valid_raster(path):
        path.unlink(missing_ok=True)
        raise DataError(
            f"{url}: the label file downloaded to {path} is not a whole raster; removed, "
            "the next run fetches it again"
        )
    return path


def fetch_labels(
    tile_id: str,
    grid: Grid,
    dst: Path,
    cache: Path,
    settings: Mapping[str, Any],
    *,
    catalog_url: str,
    imagery: Mapping[str, Any] | None = None,
    sign: bool = False,
    timeout: float = 60,
    retries: int = 5,
    progress: bool = True,
) -> Labels | None:
    """The tile's labels from every intersecting item of a STAC collection (see module doc).

    Args:
        tile_id: the tile's id (for messages).
        grid: the tile grid.
        dst: the label layer to write.
        cache: the folder the items' rasters are downloaded to (kept between runs).
        settings: ``acquire.place.labels``: ``collection``, ``asset`` (``data``), optional
            ``url`` (default ``catalog_url``) and ``sign`` (default ``sign``).
        catalog_url: the STAC API searched when ``settings`` names none.
        imagery: the tile's NAIP item (for its year); None skips the year check.
        sign: whether the catalog's asset URLs need a signature (Planetary Computer): each
            download is then signed right before every request and re-signed once after a 403
            (:func:`lcip.acquire.stac.signer`).
        timeout: seconds to wait for a server.
        retries: retries per request.
        progress: show progress bars.

    Returns:
        the written layer, or None when no item intersects the tile (a warning says so).

    Raises:
        DownloadError: one line naming the URL when the search or a download fails.
        DataError: when an item lacks the asset or its file is not a label raster.
    """
    collection = str(settings["collection"])
    asset = str(settings.get("asset") or "data")
    url = str(settings.get("url") or catalog_url)
    signed = bool(sign if settings.get("sign") is None else settings["sign"])
    year = None if imagery is None else imagery_year(imagery)
    found = search(url, collection, tile_footprint(grid), None, timeout=timeout)
    sign_url = signer(signed, timeout=timeout, retries=retries)
    if not found:
        log.warning("tile %s: no labels in %s", tile_id, collection)
        return None
    items = applied_order([label_item(i, asset) for i in found], year)
    files = [
        _whole(
            download(
                item.href,
                cache / f"{item.id}.tif",
                size=item.size,
                retries=retries,
                timeout=timeout,
                progress=progress,
                desc=item.id,
                sign=sign_url,
            ),
            unsigned(item.href),
        )
        for item in items
    ]
    fraction = write_mosaic(items, files, grid, dst)
    years = tuple(i.years for i in items if i.years is not None)
    log.info(
        "tile %s: %.1f%% labelled by %d %s items (%s)",
        tile_id,
        100 * fraction,
        len(items),
        collection,
        ", ".join(i.id for i in items),
    )
    warning = year_warning(tile_id, years, year)
    if warning is not None:
        log.warning(warning)
    return Labels(
        dst,
        " ".join(unsigned(i.href) for i in items),
        tuple(i.id for i in items),
        fraction,
        years,
    )


__all__ = [
    "FRACTION_TAG",
    "LC_NODATA",
    "LabelItem",
    "Labels",
    "applied_order",
    "asset_nodata",
    "fetch_labels",
    "imagery_year",
    "item_years",
    "label_item",
    "mosaic",
    "mosaic_params",
    "read_labels",
    "tile_footprint",
    "write_mosaic",
    "year_warning",
]
