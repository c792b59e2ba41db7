"""NLCD for a tile: the nearest release's 30 m classes around the tile, read remotely.

Source (``acquire.place.nlcd``): ``url``, a raster GDAL can read by HTTP range requests,
with ``{year}`` replaced by the release chosen (:func:`nearest_release`) among ``years``. The
default is USGS's **Annual NLCD** (Collection 1, land cover, 1985 onwards, CONUS, 30 m in
CONUS Albers EPSG:5070), distributed by the MRLC as one Cloud Optimized GeoTIFF per year
inside a zip, read here with GDAL's ``/vsizip//vsicurl/`` without downloading the archive.
Any other COG of NLCD class codes works (a mirror, a classic NLCD release, a local file).

For each tile, :func:`fetch_nlcd` reads only the window covering the tile's bounds plus a halo
(the prior's blur radius, ``halo_m``) at the source's native 30 m, and reprojects it once,
with nearest resampling (classes are never mixed), onto a 30 m grid in the tile's UTM CRS
snapped to multiples of 30 m: the NLCD prior then reads it onto the tile grid itself (its
blur is exact and fast on the 30 m blocks).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError

import lcip
from lcip.align import snapped_grid
from lcip.errors import ConfigError, DownloadError
from lcip.provenance import PROVENANCE_TAG, provenance
from lcip.raster import Grid, read_src_on_grid, write_raster

log = logging.getLogger(__name__)

#: NLCD's native resolution (m).
NLCD_RESOLUTION = 30.0

#: GDAL settings for reading remote rasters: no directory listing, retries on dropped reads.
GDAL_REMOTE = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.zip",
}


def nearest_release(year: int, years: Sequence[int]) -> int:
    """The NLCD release nearest to ``year`` (the later one on a tie).

    Raises:
        ConfigError: for an empty list of releases.
    """
    if not years:
        raise ConfigError("acquire.place.nlcd.years: empty list of NLCD releases")
    return min((int(y) for y in years), key=lambda y: (abs(y - year), -y))


def gdal_path(url: str) -> str:
    """``url`` as GDAL opens it: ``/vsicurl/`` before http(s) addresses, others unchanged."""
    if url.startswith(("http://", "https://")):
        return f"/vsicurl/{url}"
    return url


def nlcd_grid(tile: Grid, halo_m: float) -> Grid:
    """The 30 m grid in the tile's CRS covering the tile plus ``halo_m`` on every side."""
    left, bottom, right, top = tile.bounds
    bounds = (left - halo_m, bottom - halo_m, right + halo_m, top + halo_m)
    return snapped_grid(tile.crs, bounds, NLCD_RESOLUTION)


def read_nlcd(url: str, grid: Grid, timeout: float = 60) -> Any:
    """NLCD class codes on ``grid`` (nearest), read by range requests; 0 outside the source.

    Raises:
        DownloadError: one line naming the URL when it cannot be read.
    """
    env = {**GDAL_REMOTE, "GDAL_HTTP_TIMEOUT": str(int(timeout))}
    try:
        with rasterio.Env(**env), rasterio.open(gdal_path(url)) as src:
            nodata = 0 if src.nodata is None else src.nodata
            codes = read_src_on_grid(src, grid, bands=1, fill=nodata, name=url)
    except RasterioError as exc:
        raise DownloadError(f"{url}: cannot read NLCD ({' '.join(str(exc).split())})") from None
    if nodata != 0:
        codes[codes == nodata] = 0
    return codes.astype(np.uint8)


def nlcd_params(url: str, grid: Grid, halo_m: float) -> dict[str, Any]:
    """The parameters a tile's NLCD file records in its provenance."""
    return {"source": url, "grid": grid.describe(), "halo_m": halo_m, "resampling": "nearest"}


def fetch_nlcd(url: str, tile: Grid, dst: Path, halo_m: float, timeout: float = 60) -> Path:
    """Write the NLCD around a tile (30 m, the tile's CRS) as a COG with its provenance.

    Args:
        url: the NLCD raster (see the module doc), ``{year}`` already filled in.
        tile: the tile grid.
        dst: output file.
        halo_m: metres of NLCD kept around the tile (at least the prior's blur radius).
        timeout: seconds per request.

    Returns:
        ``dst``.
    """
    grid = nlcd_grid(tile, halo_m)
    codes = read_nlcd(url, grid, timeout)
    params = nlcd_params(url, grid, halo_m)
    return write_raster(
        dst,
        codes,
        grid,
        nodata=0,
        tags={PROVENANCE_TAG: provenance(params), "lcip_version": lcip.__version__},
        cog=True,
    )


__all__ = [
    "NLCD_RESOLUTION",
    "fetch_nlcd",
    "gdal_path",
    "nearest_release",
    "nlcd_grid",
    "nlcd_params",
]
