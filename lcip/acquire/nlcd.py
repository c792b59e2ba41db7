"""NLCD for a tile: the nearest release's 30 m classes around the tile, read as a window.

The product is USGS's **Annual NLCD** (Collection 1, land cover, conterminous US, 30 m). Its
files declare nodata **250** (:data:`NLCD_NODATA`) and a custom Albers Equal Area CRS on the
**WGS 84** datum, not EPSG:5070 (which is the same Albers on NAD83). As public code reading
the files reports it (not checked on a live file from here), their WKT reads
``PROJCS["AEA        WGS84",GEOGCS["WGS 84",DATUM["WGS_1984",...]],
PROJECTION["Albers_Conic_Equal_Area"],PARAMETER["latitude_of_center",23],
PARAMETER["longitude_of_center",-96],PARAMETER["standard_parallel_1",29.5],
PARAMETER["standard_parallel_2",45.5],PARAMETER["false_easting",0],
PARAMETER["false_northing",0],UNIT["metre",1]...]`` (:data:`ANNUAL_NLCD_WKT`), i.e. PROJ
``+proj=aea +lat_0=23 +lon_0=-96 +lat_1=29.5 +lat_2=45.5 +x_0=0 +y_0=0 +datum=WGS84``: the
Landsat ARD grid's CRS (the same WKT as ``CONUS_SRS`` in stactools-packages/usgs-lcmap; the
PROJ string as FedData uses it for NLCD, ropensci/FedData#119), with no EPSG code. Pixel edges
fall on multiples of 30 m (CONUS extent -2415600, 164820, 2384400, 3314820, per FedData). The
two datums differ by about a metre here, far below a 30 m pixel. Whatever the source,
:func:`read_nlcd` maps 250 and the source's own nodata to lcip's 0.

Sources (``acquire.place.nlcd.source``):

- ``wcs`` (default): the USGS EROS GeoServer's Web Coverage Service for Annual NLCD land cover,
  one time-enabled coverage holding every year. Each tile asks for its own window only (WCS
  1.0.0 ``GetCoverage`` by ``bbox`` and ``time``, in the coverage's declared CRS, GeoTIFF out),
  which is then reprojected onto the tile's 30 m grid. Endpoint, coverage id and parameters
  are those of rOpenSci FedData's ``get_nlcd_annual`` (https://github.com/ropensci/FedData,
  ``R/NLCD_FUNCTIONS.R``, rewritten to this WCS in ropensci/FedData#135 because the MRLC's S3
  bucket became requester-pays): ``https://dmsdata.cr.usgs.gov/geoserver/
  mrlc_Land-Cover-Native_conus_year_data/wcs?service=WCS&version=1.0.0&request=GetCoverage&
  coverage=mrlc_Land-Cover-Native_conus_year_data:Land-Cover-Native_conus_year_data&
  CRS=EPSG:5070&BBOX=xmin,ymin,xmax,ymax&time=<year>-01-01T00:00:00.000Z&
  format=image/geotiff&resx=30&resy=30``. The server publishes the coverage as EPSG:5070 (the
  same Albers parameters, so coordinates are numerically those of the files) and may answer a
  GeoTIFF without a usable CRS (an unnamed LOCAL_CS has been reported) or with sub-millimetre
  jitter in its geotransform: the requested CRS and exact 30 m grid are then assumed. WCS 2.0.1
  ``GetCoverage`` on this coverage has been reported to fail on the server, hence 1.0.0.
- ``cog``: any Cloud Optimized GeoTIFF of NLCD codes (``cog.url`` with ``{year}``: a mirror, a
  classic NLCD release, a local file), read by HTTP range requests.
- ``zip``: the MRLC's yearly bundle ``Annual_NLCD_LndCov_{year}_CU_C1V2.zip`` (~1.4 GB) and its
  GeoTIFF member. Its compression method is read first (:class:`~lcip.acquire.remotezip.
  RemoteZip`, the archive's central directory): a *stored* member is read by range requests
  like a COG; a *deflated* one would make GDAL transfer the whole member for every tile, so it
  is refused, or with ``zip.deflated: download`` extracted once into ``<cache>/nlcd/`` and read
  locally by every tile.

Years (``years``): Annual NLCD covers 1985-2024 in Collection 1.1 and 1985-2025 since
Collection 1.2 (2025 added: NIEHS/amadeus#250; public clients list the WCS time domain as
1985-2025 and read 2025 from it). Each tile gets the release nearest its imagery year
(:func:`choose_release`), said in one log line.

For each tile, :func:`fetch_nlcd` reads only the window covering the tile's bounds plus a halo
(the prior's blur radius, ``halo_m``) and reprojects it once, with nearest resampling (classes
are never mixed), onto a 30 m grid in the tile's CRS snapped to multiples of 30 m: the NLCD
prior then reads it onto the tile grid itself (its blur is exact and fast on the 30 m blocks).
"""

from __future__ import annotations

import logging
import math
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.warp import transform_bounds

import lcip
from lcip.acquire.http import download, user_agent
from lcip.acquire.remotezip import RemoteZip, ZipMember
from lcip.errors import ConfigError, DownloadError
from lcip.io.align import snapped_grid
from lcip.io.atomic import write_text
from lcip.io.provenance import PROVENANCE_TAG, provenance
from lcip.io.raster import Grid, read_src_on_grid, write_raster

log = logging.getLogger(__name__)

#: NLCD's native resolution (m).
NLCD_RESOLUTION = 30.0

#: The Annual NLCD products' nodata value (mapped to lcip's 0 by :func:`read_nlcd`).
NLCD_NODATA = 250

#: The CRS the Annual NLCD files declare: Albers Equal Area on WGS 84 (not EPSG:5070's NAD83).
ANNUAL_NLCD_WKT = (
    'PROJCS["AEA        WGS84",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,'
    '298.257223563,AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0],'
    'UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],AUTHORITY["EPSG","4326"]],'
    'PROJECTION["Albers_Conic_Equal_Area"],PARAMETER["latitude_of_center",23],'
    'PARAMETER["longitude_of_center",-96],PARAMETER["standard_parallel_1",29.5],'
    'PARAMETER["standard_parallel_2",45.5],PARAMETER["false_easting",0],'
    'PARAMETER["false_northing",0],UNIT["metre",1,AUTHORITY["EPSG","9001"]],'
    'AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
)

#: GDAL settings for reading remote rasters: no directory listing, retries on dropped reads.
GDAL_REMOTE = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.zip",
    "GDAL_HTTP_USERAGENT": user_agent(),
}

SOURCES = ("wcs", "cog", "zip")
_DEFLATED_POLICIES = ("refuse", "download")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass(frozen=True)
class NlcdSource:
    """Where one NLCD release is read from (see the module doc).

    Attributes:
        kind: ``wcs``, ``cog`` or ``zip``.
        year: the release.
        url: the WCS endpoint, the COG or the zip archive (``{year}`` filled in).
        coverage: the WCS coverage id.
        crs: the CRS of WCS requests (the coverage's declared CRS).
        member: the zip member (``{year}`` filled in).
        deflated: ``refuse`` or ``download``, for a deflated zip member.
    """

    kind: str
    year: int
    url: str
    coverage: str = ""
    crs: str = ""
    member: str = ""
    deflated: str = "refuse"

    @property
    def time(self) -> str:
        """The WCS ``time`` of this release (Annual NLCD years are stamped January 1st)."""
        return f"{self.year}-01-01T00:00:00.000Z"

    @property
    def location(self) -> str:
        """What a tile's NLCD came from: recorded in its provenance and in the manifest."""
        if self.kind == "wcs":
            return f"{self.url}?{urlencode({'coverage': self.coverage, 'time': self.time})}"
        if self.kind == "zip":
            return f"{self.url}/{self.member}"
        return self.url


def nearest_release(year: int, years: Sequence[int]) -> int:
    """The NLCD release nearest to ``year`` (the later one on a tie).

    Raises:
        ConfigError: for an empty list of releases.
    """
    if not years:
        raise ConfigError("acquire.place.nlcd.years: empty list of NLCD releases")
    return min((int(y) for y in years), key=lambda y: (abs(y - year), -y))


def choose_release(tile_id: str, imagery_year: int, years: Sequence[int]) -> int:
    """The release for a tile (:func:`nearest_release`), said in one log line.

    Returns:
        the NLCD year.
    """
    release = nearest_release(imagery_year, years)
    how = "same year" if release == imagery_year else "nearest release"
    log.info("tile %s: NLCD %d for NAIP %d (%s)", tile_id, release, imagery_year, how)
    return release


def _setting(settings: Mapping[str, Any], group: str, key: str) -> str:
    value = (settings.get(group) or {}).get(key)
    if not value:
        raise ConfigError(f"acquire.place.nlcd.{group}.{key}: missing (source={group})")
    return str(value)


def nlcd_source(settings: Mapping[str, Any], year: int) -> NlcdSource:
    """The source of release ``year`` from ``acquire.place.nlcd`` (see the module doc).

    Raises:
        ConfigError: unknown source, or a setting it needs is missing.
    """
    kind = str(settings.get("source") or "wcs")
    if kind == "wcs":
        return NlcdSource(
            "wcs",
            year,
            _setting(settings, "wcs", "url"),
            coverage=_setting(settings, "wcs", "coverage"),
            crs=_setting(settings, "wcs", "crs"),
        )
    if kind == "cog":
        return NlcdSource("cog", year, _setting(settings, "cog", "url").format(year=year))
    if kind == "zip":
        deflated = str((settings.get("zip") or {}).get("deflated") or "refuse")
        if deflated not in _DEFLATED_POLICIES:
            raise ConfigError(
                f"acquire.place.nlcd.zip.deflated={deflated}: must be one of {_DEFLATED_POLICIES}"
            )
        return NlcdSource(
            "zip",
            year,
            _setting(settings, "zip", "url").format(year=year),
            member=_setting(settings, "zip", "member").format(year=year),
            deflated=deflated,
        )
    raise ConfigError(f"acquire.place.nlcd.source={kind}: must be one of {SOURCES}")


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


def _to_lcip_codes(codes: Any, nodata: float | None) -> Any:
    """Class codes as uint8 with the product's nodata (250) and the source's own mapped to 0."""
    codes[codes == NLCD_NODATA] = 0
    if nodata is not None and nodata != 0:
        codes[codes == nodata] = 0
    return codes.astype(np.uint8)


def read_nlcd(url: str, grid: Grid, timeout: float = 60, name: str | None = None) -> Any:
    """NLCD class codes on ``grid`` (nearest), read by range requests; 0 outside the source.

    The product's nodata (250) and the source's nodata become 0.

    Args:
        url: a raster GDAL opens (an http(s) URL is read through ``/vsicurl/``).
        grid: the target grid.
        timeout: seconds per request.
        name: the source's name in error messages (default ``url``).

    Raises:
        DownloadError: one line naming the source when it cannot be read.
    """
    name = name or url
    env = {**GDAL_REMOTE, "GDAL_HTTP_TIMEOUT": str(int(timeout))}
    try:
        with rasterio.Env(**env), rasterio.open(gdal_path(url)) as src:
            nodata = src.nodata
            fill = NLCD_NODATA if nodata is None else nodata
            codes = read_src_on_grid(src, grid, bands=1, fill=fill, name=name)
    except RasterioError as exc:
        raise DownloadError(f"{name}: cannot read NLCD ({' '.join(str(exc).split())})") from None
    return _to_lcip_codes(codes, nodata)


# ----------------------------------------------------------------------------------------- WCS
def wcs_bbox(grid: Grid, crs: str) -> tuple[float, float, float, float]:
    """The box to ask the WCS for: ``grid`` in ``crs``, one pixel wider, on the 30 m lattice."""
    left, bottom, right, top = transform_bounds(grid.crs, CRS.from_user_input(crs), *grid.bounds)
    r = NLCD_RESOLUTION
    return (
        math.floor(left / r - 1) * r,
        math.floor(bottom / r - 1) * r,
        math.ceil(right / r + 1) * r,
        math.ceil(top / r + 1) * r,
    )


def wcs_request(source: NlcdSource, bbox: tuple[float, float, float, float]) -> str:
    """The WCS 1.0.0 ``GetCoverage`` URL for ``bbox`` (in ``source.crs``) of one release."""
    query = {
        "service": "WCS",
        "version": "1.0.0",
        "request": "GetCoverage",
        "coverage": source.coverage,
        "CRS": source.crs,
        "BBOX": ",".join(f"{v:.0f}" for v in bbox),
        "time": source.time,
        "format": "image/geotiff",
        "resx": f"{NLCD_RESOLUTION:g}",
        "resy": f"{NLCD_RESOLUTION:g}",
    }
    sep = "&" if "?" in source.url else "?"
    return f"{source.url}{sep}{urlencode(query)}"


def _exception_text(body: bytes) -> str:
    """The messages of an OGC exception report (WCS 1.0 or OWS), else the body's start."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return " ".join(body[:200].decode("utf-8", "replace").split())
    texts = []
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        code = element.get("code") or element.get("exceptionCode")
        text = " ".join((element.text or "").split())
        if tag in ("ServiceException", "Exception") and code:
            texts.append(f"[{code}]")
        if tag in ("ServiceException", "ExceptionText") and text:
            texts.append(text)
    return " ".join(texts) or root.tag.rsplit("}", 1)[-1]


def _fetch_coverage(url: str, dest: Path, timeout: float) -> None:
    """GET a coverage into ``dest``; an error status or a non-TIFF body is a DownloadError."""
    download(url, dest, timeout=timeout, retries=2, progress=False)  # HTTP errors name the URL
    with open(dest, "rb") as f:
        head = f.read(4)
    if head not in _TIFF_MAGIC:
        detail = _exception_text(dest.read_bytes())
        raise DownloadError(f"{url}: the WCS answered no GeoTIFF: {detail}")


def _fix_georeference(path: Path, bbox: tuple[float, float, float, float], crs: str) -> None:
    """Give a WCS answer the requested CRS and exact 30 m grid when the server's are off."""
    r = NLCD_RESOLUTION
    width = round((bbox[2] - bbox[0]) / r)
    height = round((bbox[3] - bbox[1]) / r)
    with rasterio.open(path, "r+") as ds:
        if ds.crs is None or not ds.crs.is_projected:
            ds.crs = CRS.from_user_input(crs)
        t = ds.transform
        near = abs(t.c - bbox[0]) < r / 2 and abs(t.f - bbox[3]) < r / 2
        if (ds.width, ds.height) == (width, height) and near and abs(abs(t.a) - r) < 1e-3:
            ds.transform = Affine(r, 0.0, bbox[0], 0.0, -r, bbox[3])


def read_nlcd_wcs(source: NlcdSource, grid: Grid, timeout: float = 60) -> Any:
    """NLCD codes on ``grid`` from one WCS ``GetCoverage`` of the window around it.

    Raises:
        DownloadError: one line naming the request URL (HTTP error, an exception report, or
            an answer that is no readable GeoTIFF).
    """
    bbox = wcs_bbox(grid, source.crs)
    url = wcs_request(source, bbox)
    with tempfile.TemporaryDirectory(prefix="lcip-nlcd-") as tmp:
        path = Path(tmp) / "coverage.tif"
        _fetch_coverage(url, path, timeout)
        try:
            _fix_georeference(path, bbox, source.crs)
        except RasterioError as exc:
            raise DownloadError(
                f"{url}: unreadable GeoTIFF ({' '.join(str(exc).split())})"
            ) from None
        return read_nlcd(str(path), grid, timeout, name=url)


# ----------------------------------------------------------------------------------------- zip
@cache
def _zip_member(url: str, member: str, timeout: float) -> ZipMember:
    """The central directory entry of ``member`` (read once per archive and process)."""
    return RemoteZip(url, timeout=timeout).member(member)


def _stamp_matches(stamp: Path, local: Path, source: NlcdSource) -> bool:
    if not (stamp.is_file() and local.is_file()):
        return False
    expected = f"{source.url}\n{source.member}\n{local.stat().st_size}\n"
    return stamp.read_text() == expected


def zip_reader(
    source: NlcdSource, cache_dir: Path, timeout: float = 60, progress: bool = False
) -> str:
    """What GDAL opens for a zip source: the member by ranges, or its one local copy.

    A member already downloaded (``<cache_dir>/nlcd/<member>``, verified when it was written)
    is used without any request. Otherwise the archive's central directory tells the member's
    compression: stored members are read through ``/vsizip//vsicurl/``; a deflated one is
    refused, or downloaded once when ``zip.deflated`` is ``download``.

    Raises:
        DownloadError: a deflated member with ``zip.deflated: refuse`` (one line naming the
            setting and the size), or a transfer error.
    """
    if not source.url.startswith(("http://", "https://")):
        return f"/vsizip/{source.url}/{source.member}"  # a local archive: nothing is streamed
    local = Path(cache_dir) / "nlcd" / Path(source.member).name
    stamp = local.with_name(local.name + ".source")
    if _stamp_matches(stamp, local, source):
        return str(local)
    member = _zip_member(source.url, source.member, timeout)
    if member.compression == "stored":
        return f"/vsizip//vsicurl/{source.url}/{source.member}"
    where = f"{source.url}: member {source.member}"
    if source.deflated != "download":
        raise DownloadError(
            f"{where} is {member.compression} ({member.compressed_size / 1e9:.2f} GB): reading "
            "a window would transfer the whole member for every tile; set "
            "acquire.place.nlcd.zip.deflated=download to fetch it once into "
            f"{local.parent} ({member.compressed_size} bytes), or acquire.place.nlcd.source=wcs"
        )
    log.info(
        "%s is %s: downloading it once (%.2f GB) to %s",
        where,
        member.compression,
        member.compressed_size / 1e9,
        local,
    )
    RemoteZip(source.url, timeout=timeout).extract(member, local, progress=progress)
    write_text(stamp, f"{source.url}\n{source.member}\n{local.stat().st_size}\n")
    return str(local)


# ------------------------------------------------------------------------------------ one tile
def nlcd_params(url: str, grid: Grid, halo_m: float) -> dict[str, Any]:
    """The parameters a tile's NLCD file records in its provenance."""
    return {"source": url, "grid": grid.describe(), "halo_m": halo_m, "resampling": "nearest"}


def fetch_nlcd(
    source: NlcdSource | str,
    tile: Grid,
    dst: Path,
    halo_m: float,
    timeout: float = 60,
    cache_dir: Path | None = None,
    progress: bool = False,
) -> Path:
    """Write the NLCD around a tile (30 m, the tile's CRS) as a COG with its provenance.

    Args:
        source: where the release is read (:func:`nlcd_source`); a plain string is a COG URL.
        tile: the tile grid.
        dst: output file.
        halo_m: metres of NLCD kept around the tile (at least the prior's blur radius).
        timeout: seconds per request.
        cache_dir: the acquisition cache (a downloaded zip member goes to ``<cache_dir>/nlcd``);
            default: ``dst``'s folder.
        progress: show a progress bar when a zip member is downloaded.

    Returns:
        ``dst``.

    Raises:
        DownloadError: one line naming the URL when the source cannot be read.
    """
    if isinstance(source, str):
        source = NlcdSource("cog", 0, source)
    grid = nlcd_grid(tile, halo_m)
    if source.kind == "wcs":
        codes = read_nlcd_wcs(source, grid, timeout)
    elif source.kind == "zip":
        reader = zip_reader(source, Path(cache_dir or dst.parent), timeout, progress)
        codes = read_nlcd(reader, grid, timeout, name=source.location)
    else:
        codes = read_nlcd(source.url, grid, timeout)
    params = nlcd_params(source.location, grid, halo_m)
    return write_raster(
        dst,
        codes,
        grid,
        nodata=0,
        tags={PROVENANCE_TAG: provenance(params), "lcip_version": lcip.__version__},
        cog=True,
    )


__all__ = [
    "ANNUAL_NLCD_WKT",
    "NLCD_NODATA",
    "NLCD_RESOLUTION",
    "SOURCES",
    "NlcdSource",
    "choose_release",
    "fetch_nlcd",
    "gdal_path",
    "nearest_release",
    "nlcd_grid",
    "nlcd_params",
    "nlcd_source",
    "read_nlcd",
    "read_nlcd_wcs",
    "wcs_bbox",
    "wcs_request",
    "zip_reader",
]
