"""NAIP scenes onto a coarser grid straight from the remote COG, and what a run will cost.

NAIP from 2022 on is 0.3 m (a quarter quad is about 25,000 x 19,000 px, ~2 GB as a COG); lcip
works at 1 m (``acquire.place.resolution``). Downloading whole scenes to resample them would
move and store ~10 times the bytes needed. NAIP COGs carry overviews (factors 2, 4, 8, ...):
:func:`read_remote` opens the scene through GDAL (``/vsicurl/``, byte-range requests), picks the
coarsest overview that is still at least as fine as the target resolution (0.6 m for a 0.3 m
scene and a 1 m grid: a quarter of the full-resolution bytes), and warps it onto the grid
(bilinear), writing only the result.

``acquire.place.stac.read`` chooses per scene (:func:`read_mode`): ``auto`` (default) reads
remotely when the item's pixel (``gsd`` or ``proj:transform``) is at most half the target
resolution, i.e. when an overview saves bytes, and downloads the whole scene otherwise (0.6 m
NAIP at 1 m needs every full-resolution pixel anyway; the download is resumable and checked);
``remote`` and ``download`` force one way. ``resolution: native`` always downloads.

:func:`output_bytes` and :func:`transfer_bytes` estimate, from the item's ``proj:shape`` and
pixel size, what a scene costs on disk and on the network (for the dry run and the first log
line of a run).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError

import lcip
from lcip.acquire.nlcd import GDAL_REMOTE, gdal_path
from lcip.errors import ConfigError, DownloadError
from lcip.io.align import snapped_grid
from lcip.io.provenance import PROVENANCE_TAG, is_up_to_date, provenance
from lcip.io.raster import Grid, read_src_on_grid, write_raster

log = logging.getLogger(__name__)

#: Values of ``acquire.place.stac.read``.
READ_MODES = ("auto", "download", "remote")

#: Bands of a NAIP scene (R, G, B, NIR) when the item does not list them.
NAIP_BANDS = 4


def pixel_size(item: Mapping[str, Any]) -> float | None:
    """A STAC item's pixel size (m): its ``gsd``, else ``proj:transform``'s; None if neither."""
    props = item.get("properties") or {}
    gsd = props.get("gsd")
    if isinstance(gsd, int | float) and gsd > 0:
        return float(gsd)
    transform = props.get("proj:transform")
    if isinstance(transform, list | tuple) and len(transform) >= 6 and transform[0]:
        return abs(float(transform[0]))
    return None


def read_mode(item: Mapping[str, Any], resolution: float | None, setting: Any = "auto") -> str:
    """``remote`` or ``download``: how a scene is brought onto a ``resolution`` m grid.

    Args:
        item: the scene's STAC item.
        resolution: target pixel size (m); None for the scene's own grid (always a download).
        setting: ``acquire.place.stac.read`` (see the module doc).

    Raises:
        ConfigError: for a setting not in :data:`READ_MODES`.
    """
    mode = str(setting or "auto").lower()
    if mode not in READ_MODES:
        raise ConfigError(f"acquire.place.stac.read={setting!r}: one of {list(READ_MODES)}")
    if resolution is None:
        return "download"
    if mode != "auto":
        return mode
    native = pixel_size(item)
    return "remote" if native is not None and native * 2 <= resolution * (1 + 1e-6) else "download"


def overview_factor(native: float, resolution: float) -> int:
    """The largest power of two ``f`` with ``native * f <= resolution`` (1 when none is)."""
    factor = 1
    while native * factor * 2 <= resolution * (1 + 1e-6):
        factor *= 2
    return factor


def _shape(item: Mapping[str, Any]) -> tuple[int, int] | None:
    shape = (item.get("properties") or {}).get("proj:shape")
    if isinstance(shape, list | tuple) and len(shape) == 2:
        return int(shape[0]), int(shape[1])
    return None


def _bands(item: Mapping[str, Any], asset: str) -> int:
    bands = ((item.get("assets") or {}).get(asset) or {}).get("eo:bands")
    return len(bands) if isinstance(bands, list) and bands else NAIP_BANDS


def output_bytes(
    item: Mapping[str, Any], resolution: float | None, asset: str = "image"
) -> int | None:
    """Uncompressed bytes of a scene on a ``resolution`` m grid (uint8 bands), or None.

    From the item's ``proj:shape`` and pixel size; ``resolution`` None is the scene's own grid.
    (lcip's DEFLATE COGs of NAIP take about half to two thirds of this.)
    """
    shape, native = _shape(item), pixel_size(item)
    if shape is None or native is None:
        return None
    scale = 1.0 if resolution is None else native / resolution
    rows, cols = math.ceil(shape[0] * scale), math.ceil(shape[1] * scale)
    return rows * cols * _bands(item, asset)


def transfer_bytes(
    item: Mapping[str, Any], remote_size: int | None, mode: str, resolution: float | None
) -> int | None:
    """Bytes a scene moves over the network: the whole file, or about its overview's share."""
    if remote_size is None or mode == "download" or resolution is None:
        return remote_size
    native = pixel_size(item)
    factor = 1 if native is None else overview_factor(native, resolution)
    return math.ceil(remote_size / factor**2)


def remote_params(source: str, resolution: float) -> dict[str, Any]:
    """The parameters a scene read by :func:`read_remote` records in its provenance."""
    return {
        "kind": "imagery",
        "resampling": Resampling.bilinear.name,
        "source": source,
        "resolution": resolution,
        "read": "remote overview",
    }


def is_read(dst: Path, source: str, resolution: float) -> bool:
    """Whether ``dst`` is a whole raster that :func:`read_remote` made from ``source``."""
    return is_up_to_date(dst, provenance(remote_params(source, resolution)))


def overview_level(factors: list[int], native: float, resolution: float) -> int | None:
    """The index (``OVERVIEW_LEVEL``) of the coarsest overview as fine as ``resolution``.

    None when no overview is (read the full resolution).
    """
    best: int | None = None
    for i, factor in enumerate(factors):
        if native * factor <= resolution * (1 + 1e-6):
            best = i
    return best


def read_remote(
    url: str,
    dst: Path,
    resolution: float,
    *,
    source: str | None = None,
    sign: Callable[[str], str] | None = None,
    timeout: float = 60,
) -> Path:
    """Write a remote scene onto its snapped ``resolution`` m grid (bilinear) as a COG.

    Only the blocks of the overview used (see the module doc) and the file's header travel.

    Args:
        url: the scene's COG (http(s) or a local path).
        dst: the output file (written atomically, with its provenance).
        resolution: target pixel size in the scene's CRS units (m).
        source: the URL recorded in the provenance (default ``url``; pass the unsigned one).
        sign: makes the URL to open from ``url`` (e.g. adds a SAS token) right before GDAL
            opens it; after a failure that mentions HTTP 403, once more (its ``fresh`` method
            when it has one: :class:`lcip.acquire.http.FreshSign`).
        timeout: seconds per request.

    Returns:
        ``dst``.

    Raises:
        DownloadError: one line naming the (unsigned) URL when it cannot be read.
    """
    public = source or url
    # No extension filter: a signed URL ends in its query (EMPTY_DIR already stops GDAL from
    # looking for side-car files).
    env = {k: v for k, v in GDAL_REMOTE.items() if k != "CPL_VSIL_CURL_ALLOWED_EXTENSIONS"}
    env["GDAL_HTTP_TIMEOUT"] = str(int(timeout))
    attempts = 2 if sign is not None else 1
    for attempt in range(attempts):
        if sign is None:
            href = url
        else:  # after a 403, a fresh token when the signer can make one
            href = (getattr(sign, "fresh", sign) if attempt else sign)(url)
        try:
            with rasterio.Env(**env):
                data, grid, nodata, names = _read(gdal_path(href), resolution, public)
            break
        except RasterioError as exc:
            message = " ".join(str(exc).split()).replace(href, public)
            if attempt + 1 < attempts and "403" in message:
                log.info("%s: HTTP 403; signing the URL again", public)
                continue
            raise DownloadError(f"{public}: cannot read the scene ({message[:300]})") from None
    tags = {
        PROVENANCE_TAG: provenance(remote_params(public, resolution)),
        "lcip_version": lcip.__version__,
    }
    return write_raster(
        dst,
        data,
        grid,
        nodata=nodata,
        tags=tags,
        band_names=list(names) if any(names) else None,
        cog=True,
    )


def _read(path: str, resolution: float, name: str) -> tuple[Any, Grid, Any, tuple[Any, ...]]:
    """The scene at ``path`` on its snapped grid, read from the best overview."""
    with rasterio.open(path) as src:
        grid = snapped_grid(src.crs, tuple(src.bounds), resolution)
        native = min(abs(src.transform.a), abs(src.transform.e))
        level = overview_level(src.overviews(1), native, resolution)
        nodata, names = src.nodata, src.descriptions
        if level is None:
            data = read_src_on_grid(src, grid, resampling=Resampling.bilinear, name=name)
            return data, grid, nodata, names
    with rasterio.open(path, overview_level=level) as ovr:
        log.info("%s: read from overview %d (%g m)", name, level, abs(ovr.transform.a))
        data = read_src_on_grid(ovr, grid, resampling=Resampling.bilinear, name=name)
    return data, grid, nodata, names


__all__ = [
    "NAIP_BANDS",
    "READ_MODES",
    "is_read",
    "output_bytes",
    "overview_factor",
    "overview_level",
    "pixel_size",
    "read_mode",
    "read_remote",
    "remote_params",
    "transfer_bytes",
]
