"""NLCD for place tiles: the WCS window per tile, zip members never streamed per tile, nodata 250.

A loopback stand-in of the USGS GeoServer WCS (WCS 1.0.0 ``GetCoverage`` by ``BBOX`` and
``time``, the request form of FedData's ``get_nlcd_annual``) answers windows of a generated
Annual NLCD raster in the product's own CRS (Albers on WGS 84, nodata 250). No real recorded
MRLC WCS response was found in public repositories, so its answers follow what public clients
report of the real service: a GeoTIFF tagged EPSG:5070 with sub-millimetre jitter in its pixel
size (or, reportedly, no usable CRS), and OGC exception reports for bad requests. The zip tests
serve real zip archives (stored and deflated members) from :class:`LoopbackServer`, which counts
the bytes.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import MemoryFile
from rasterio.warp import Resampling, reproject, transform_bounds
from rasterio.windows import Window

from lcip.acquire.nlcd import (
    ANNUAL_NLCD_WKT,
    NLCD_NODATA,
    NlcdSource,
    choose_release,
    fetch_nlcd,
    nlcd_grid,
    nlcd_source,
    read_nlcd,
)
from lcip.config import compose_config
from lcip.errors import ConfigError, DownloadError
from lcip.io.raster import Grid, write_raster
from tests.httpserver import LoopbackServer
from tests.stand_ins import StandIn

WCS_PATH = "geoserver/mrlc_Land-Cover-Native_conus_year_data/wcs"
COVERAGE = "mrlc_Land-Cover-Native_conus_year_data:Land-Cover-Native_conus_year_data"
CODES = [11, 21, 22, 41, 42, 82, 90]
UTM16 = CRS.from_epsg(26916)  # NAD83 / UTM 16N, as NAIP near Milwaukee
TILE = Grid(UTM16, Affine(1.0, 0.0, 426000.0, 0.0, -1.0, 4765000.0), 900, 1100)
TILE_EAST = Grid(UTM16, Affine(1.0, 0.0, 428000.0, 0.0, -1.0, 4765000.0), 900, 1100)
HALO = 160.0
MEMBER = "Annual_NLCD_LndCov_2024_CU_C1V2.tif"
ZIP_DIRECTORY_MAX = 65557 + 4096  # what RemoteZip reads to list an archive (tail + directory)


# ------------------------------------------------------------------------------ generated NLCD
def _annual_nlcd(dst: Path, margin: float = 1500.0, tiled: bool = False) -> Path:
    """NLCD codes in the product's CRS around both tiles, with a band of nodata 250.

    Codes come in 3 x 3 pixel blocks, or pixel by pixel in a ``tiled`` file (a zip member that
    deflate cannot shrink much).
    """
    crs = CRS.from_wkt(ANNUAL_NLCD_WKT)
    left, bottom, _, top = transform_bounds(UTM16, crs, *TILE.bounds)
    right = transform_bounds(UTM16, crs, *TILE_EAST.bounds)[2]
    x0, y0 = np.floor((left - margin) / 30) * 30, np.ceil((top + margin) / 30) * 30
    width = int(np.ceil((right + margin - x0) / 30))
    height = int(np.ceil((y0 - (bottom - margin)) / 30))
    rng = np.random.default_rng(7)
    step = 1 if tiled else 3
    blocks = rng.choice(CODES, size=(height // step + 1, width // step + 1))
    codes = np.kron(blocks, np.ones((step, step), dtype=np.int64))[:height, :width].astype(np.uint8)
    middle = height // 2
    codes[middle : middle + 4, :] = NLCD_NODATA  # a stripe across the tiles
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "uint8",
        "crs": crs,
        "transform": Affine(30.0, 0.0, x0, 0.0, -30.0, y0),
        "nodata": NLCD_NODATA,
    }
    if tiled:
        profile.update(tiled=True, blockxsize=128, blockysize=128)
    with rasterio.open(dst, "w", **profile) as ds:
        ds.write(codes, 1)
    return dst


def _expected(raster: Path, tile: Grid) -> Any:
    """The generated raster reprojected directly onto the tile's 30 m grid, 250 -> 0."""
    grid = nlcd_grid(tile, HALO)
    out = np.zeros(grid.shape, dtype=np.uint8)
    with rasterio.open(raster) as src:
        reproject(
            src.read(1),
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            src_nodata=NLCD_NODATA,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            dst_nodata=0,
            resampling=Resampling.nearest,
        )
    out[out == NLCD_NODATA] = 0
    return out


def _agreement(path: Path, expected: Any, tile: Grid) -> float:
    grid = nlcd_grid(tile, HALO)
    with rasterio.open(path) as ds:
        assert ds.crs == grid.crs and ds.transform == grid.transform and ds.nodata == 0
        got = ds.read(1)
    assert NLCD_NODATA not in got
    return float((got == expected).mean())


# ------------------------------------------------------------------------------ WCS stand-in
def _service_exception(code: str, locator: str, text: str) -> bytes:
    """GeoServer's WCS 1.0.0 exception report (OGC ServiceExceptionReport 1.2.0)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ServiceExceptionReport version="1.2.0" xmlns="http://www.opengis.net/ogc" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        f'  <ServiceException code="{code}" locator="{locator}">\n{text}\n</ServiceException>\n'
        "</ServiceExceptionReport>\n"
    ).encode()


def _ows_exception(code: str, text: str) -> bytes:
    """An OWS 1.1 ``ows:ExceptionReport`` (what GeoServer's newer services answer)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ows:ExceptionReport xmlns:ows="http://www.opengis.net/ows/1.1" version="2.0.0">\n'
        f'  <ows:Exception exceptionCode="{code}">\n'
        f"    <ows:ExceptionText>{text}</ows:ExceptionText>\n"
        "  </ows:Exception>\n</ows:ExceptionReport>\n"
    ).encode()


class Wcs:
    """A WCS 1.0.0 GetCoverage route over one generated raster (all years the same codes).

    ``mode``: ``ok`` (GeoTIFF tagged EPSG:5070, pixel size with sub-millimetre jitter),
    ``no_crs`` (a GeoTIFF without CRS) or ``ows400`` (HTTP 400 with an ``ows:ExceptionReport``).
    ``queries`` keeps every request's parameters (keys upper-cased).
    """

    def __init__(self, raster: Path, years: range = range(1985, 2026)) -> None:
        self.raster = raster
        self.years = years
        self.mode = "ok"
        self.queries: list[dict[str, str]] = []

    def __call__(
        self, method: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, str, bytes]:
        q = {k.upper(): v[0] for k, v in query.items()}
        self.queries.append(q)
        if self.mode == "ows400":
            return 400, "application/xml", _ows_exception("InvalidParameterValue", "bad request")
        xml = "application/vnd.ogc.se_xml"
        if q.get("SERVICE") != "WCS" or q.get("VERSION") != "1.0.0":
            return 200, xml, _service_exception("InvalidParameterValue", "version", "WCS 1.0.0")
        if q.get("COVERAGE") != COVERAGE:
            text = f"Could not find coverage {q.get('COVERAGE')}"
            return 200, xml, _service_exception("CoverageNotDefined", "coverage", text)
        if q.get("CRS") != "EPSG:5070":
            return 200, xml, _service_exception("InvalidParameterValue", "crs", q.get("CRS", ""))
        year = int(q.get("TIME", "0")[:4] or 0)
        if year not in self.years or not q.get("TIME", "").endswith("-01-01T00:00:00.000Z"):
            text = f"Invalid time {q.get('TIME')}"
            return 200, xml, _service_exception("InvalidParameterValue", "time", text)
        minx, miny, maxx, maxy = (float(v) for v in q["BBOX"].split(","))
        res = float(q["RESX"]), float(q["RESY"])
        return 200, "image/tiff", self._window(minx, miny, maxx, maxy, res)

    def _window(self, minx: float, miny: float, maxx: float, maxy: float, res: Any) -> bytes:
        width, height = round((maxx - minx) / res[0]), round((maxy - miny) / res[1])
        with rasterio.open(self.raster) as src:
            col = round((minx - src.transform.c) / 30)
            row = round((src.transform.f - maxy) / 30)
            window = Window(col, row, width, height)
            data = src.read(1, window=window, boundless=True, fill_value=NLCD_NODATA)
        jitter = 30.0 - 3.8e-8  # as a real response: 29.9999999620098 m pixels
        profile = {
            "driver": "GTiff",
            "width": width,
            "height": height,
            "count": 1,
            "dtype": "uint8",
            "nodata": NLCD_NODATA,
            "transform": Affine(jitter, 0.0, minx + 0.002, 0.0, -jitter, maxy - 0.008),
        }
        if self.mode != "no_crs":
            profile["crs"] = CRS.from_epsg(5070)
        with MemoryFile() as mem:
            with mem.open(**profile) as ds:
                ds.write(data, 1)
            return bytes(mem.read())


@pytest.fixture
def wcs(tmp_path: Path) -> Iterator[tuple[StandIn, Wcs]]:
    raster = _annual_nlcd(tmp_path / "annual_nlcd.tif")
    route = Wcs(raster)
    root = tmp_path / "served"
    root.mkdir()
    server = StandIn(root, {WCS_PATH: route})
    with server:
        yield server, route


def _wcs_source(server: StandIn, year: int = 2024, coverage: str = COVERAGE) -> NlcdSource:
    wcs = {"url": server.url(WCS_PATH), "coverage": coverage, "crs": "EPSG:5070"}
    return nlcd_source({"source": "wcs", "wcs": wcs}, year)


def test_wcs_window_lands_on_the_tile_grid_with_nodata_zero(
    wcs: tuple[StandIn, Wcs], tmp_path: Path
) -> None:
    server, route = wcs
    source = _wcs_source(server)
    dst = fetch_nlcd(source, TILE, tmp_path / "tile" / "nlcd.tif", HALO, cache_dir=tmp_path)
    expected = _expected(route.raster, TILE)
    assert _agreement(dst, expected, TILE) >= 0.995
    with rasterio.open(dst) as ds:
        got = ds.read(1)
    assert set(np.unique(got)) <= {0, *CODES} and (got == 0).sum() >= got.shape[1]  # the stripe
    assert ((expected == 0) == (got == 0)).mean() >= 0.995
    # One GetCoverage per tile: the window in the coverage's CRS, on its 30 m lattice.
    assert len(route.queries) == 1
    q = route.queries[0]
    assert (q["REQUEST"], q["CRS"], q["TIME"]) == ("GetCoverage", "EPSG:5070", source.time)
    assert q["TIME"] == "2024-01-01T00:00:00.000Z" and q["FORMAT"] == "image/geotiff"
    bbox = [float(v) for v in q["BBOX"].split(",")]
    assert all(v % 30 == 0 for v in bbox)
    need = transform_bounds(UTM16, "EPSG:5070", *nlcd_grid(TILE, HALO).bounds)
    assert bbox[0] <= need[0] and bbox[1] <= need[1] and bbox[2] >= need[2] and bbox[3] >= need[3]
    assert (bbox[2] - bbox[0]) * (bbox[3] - bbox[1]) < 4 * (need[2] - need[0]) * (need[3] - need[1])
    assert server.bytes_served < 100_000


def test_wcs_answer_without_crs_gets_the_requested_one(
    wcs: tuple[StandIn, Wcs], tmp_path: Path
) -> None:
    server, route = wcs
    route.mode = "no_crs"
    dst = fetch_nlcd(_wcs_source(server), TILE_EAST, tmp_path / "nlcd.tif", HALO)
    assert _agreement(dst, _expected(route.raster, TILE_EAST), TILE_EAST) >= 0.995


@pytest.mark.parametrize(
    ("mode", "coverage", "year", "says"),
    [
        ("ok", "mrlc:no_such_coverage", 2024, "CoverageNotDefined"),
        ("ok", COVERAGE, 1900, "Invalid time 1900-01-01T00:00:00.000Z"),
        ("ows400", COVERAGE, 2024, "HTTP 400"),
    ],
)
def test_wcs_error_is_one_line_naming_the_request(
    wcs: tuple[StandIn, Wcs], tmp_path: Path, mode: str, coverage: str, year: int, says: str
) -> None:
    server, route = wcs
    route.mode = mode
    source = _wcs_source(server, year, coverage)
    dst = tmp_path / "nlcd.tif"
    with pytest.raises(DownloadError) as err:
        fetch_nlcd(source, TILE, dst, HALO)
    message = str(err.value)
    assert "\n" not in message and message.startswith(server.url(WCS_PATH) + "?")
    assert says in message
    assert not dst.exists()


# ------------------------------------------------------------------------------------- zips
def _zips(root: Path, tmp_path: Path) -> tuple[Path, int, int]:
    """stored.zip and deflated.zip holding the same tiled GeoTIFF; its sizes in each."""
    member = _annual_nlcd(tmp_path / "member.tif", margin=30000.0, tiled=True)
    for name, method in (
        ("stored.zip", zipfile.ZIP_STORED),
        ("deflated.zip", zipfile.ZIP_DEFLATED),
    ):
        with zipfile.ZipFile(root / name, "w", compression=method) as zf:
            zf.write(member, MEMBER)
    with zipfile.ZipFile(root / "deflated.zip") as zf:
        compressed = zf.getinfo(MEMBER).compress_size
    return member, member.stat().st_size, compressed


def _zip_source(server: LoopbackServer, name: str, deflated: str = "refuse") -> NlcdSource:
    settings = {
        "source": "zip",
        "zip": {
            "url": server.url(name),
            "member": "Annual_NLCD_LndCov_{year}_CU_C1V2.tif",
            "deflated": deflated,
        },
    }
    return nlcd_source(settings, 2024)


def test_deflated_member_is_refused_naming_the_setting(
    loopback: LoopbackServer, tmp_path: Path
) -> None:
    _, size, compressed = _zips(loopback.root, tmp_path)
    assert compressed > 4 * ZIP_DIRECTORY_MAX and size > 2 * compressed
    dst = tmp_path / "tile" / "nlcd.tif"
    with pytest.raises(DownloadError) as err:
        fetch_nlcd(_zip_source(loopback, "deflated.zip"), TILE, dst, HALO, cache_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message and loopback.url("deflated.zip") in message
    assert "deflated" in message and f"{compressed} bytes" in message
    assert "acquire.place.nlcd.zip.deflated=download" in message
    assert loopback.bytes_served <= ZIP_DIRECTORY_MAX  # the directory only, no member bytes
    assert not dst.exists() and not (tmp_path / "nlcd").exists()


def test_deflated_member_is_downloaded_once_for_all_tiles(
    loopback: LoopbackServer, tmp_path: Path
) -> None:
    member, _, compressed = _zips(loopback.root, tmp_path)
    source = _zip_source(loopback, "deflated.zip", deflated="download")
    first = fetch_nlcd(source, TILE, tmp_path / "a" / "nlcd.tif", HALO, cache_dir=tmp_path)
    assert compressed <= loopback.bytes_served <= compressed + ZIP_DIRECTORY_MAX
    local = tmp_path / "nlcd" / MEMBER
    assert local.read_bytes() == member.read_bytes()
    loopback.reset_counters()
    second = fetch_nlcd(source, TILE_EAST, tmp_path / "b" / "nlcd.tif", HALO, cache_dir=tmp_path)
    assert loopback.requests == [] and loopback.bytes_served == 0  # the local copy, no request
    for path, tile in ((first, TILE), (second, TILE_EAST)):
        assert _agreement(path, _expected(member, tile), tile) >= 0.995
        with rasterio.open(path) as ds:
            assert source.location in ds.tags()["lcip_provenance"]


def test_stored_member_is_read_by_ranges(loopback: LoopbackServer, tmp_path: Path) -> None:
    member, size, _ = _zips(loopback.root, tmp_path)
    source = _zip_source(loopback, "stored.zip")
    for i, tile in enumerate((TILE, TILE_EAST)):
        dst = fetch_nlcd(source, tile, tmp_path / f"{i}" / "nlcd.tif", HALO, cache_dir=tmp_path)
        assert _agreement(dst, _expected(member, tile), tile) >= 0.995
    assert loopback.bytes_served < size / 8
    assert any(r[2] for r in loopback.requests)  # ranges, not the whole archive
    assert not (tmp_path / "nlcd").exists()


# ------------------------------------------------------------------------- nodata, years, config
def test_read_nlcd_maps_250_and_the_source_nodata_to_zero(tmp_path: Path) -> None:
    grid = Grid(CRS.from_epsg(5070), Affine(30.0, 0.0, 600000.0, 0.0, -30.0, 2200000.0), 4, 5)
    codes = np.array(
        [[11, 250, 255, 21, 22], [41, 42, 43, 250, 255], [81, 82, 90, 95, 11], [0, 52, 71, 31, 24]],
        dtype=np.uint8,
    )
    path = write_raster(tmp_path / "nlcd.tif", codes, grid, nodata=255)
    got = read_nlcd(str(path), grid)
    assert got.dtype == np.uint8
    assert np.array_equal(got, np.where((codes == 250) | (codes == 255), 0, codes))


def test_each_tile_logs_the_release_it_got(caplog: pytest.LogCaptureFixture) -> None:
    years = list(range(1985, 2025))
    with caplog.at_level(logging.INFO, logger="lcip.acquire.nlcd"):
        assert choose_release("m_4208701_ne_16_060_20250902", 2025, years) == 2024
        assert choose_release("m_4208701_nw_16_060_20200902", 2020, years) == 2020
    assert caplog.messages == [
        "tile m_4208701_ne_16_060_20250902: NLCD 2024 for NAIP 2025 (nearest release)",
        "tile m_4208701_nw_16_060_20200902: NLCD 2020 for NAIP 2020 (same year)",
    ]


def test_default_source_is_the_wcs_and_years_reach_2025() -> None:
    nlcd = compose_config([]).acquire.place.nlcd
    assert nlcd.source == "wcs" and list(nlcd.years) == list(range(1985, 2026))
    source = nlcd_source(nlcd, 2025)
    assert (
        source.url
        == "https://dmsdata.cr.usgs.gov/geoserver/mrlc_Land-Cover-Native_conus_year_data/wcs"
    )
    assert source.coverage == COVERAGE and source.crs == "EPSG:5070"
    assert "time=2025-01-01T00%3A00%3A00.000Z" in source.location
    zipped = nlcd_source({**nlcd, "source": "zip"}, 2025)
    assert zipped.url.endswith("/Annual_NLCD_LndCov_2025_CU_C1V2.zip")
    assert zipped.member == "Annual_NLCD_LndCov_2025_CU_C1V2.tif" and zipped.deflated == "refuse"


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"source": "s3"}, "acquire.place.nlcd.source=s3"),
        ({"source": "cog", "cog": {"url": None}}, "acquire.place.nlcd.cog.url"),
        (
            {"source": "zip", "zip": {"url": "x.zip", "member": "m.tif", "deflated": "stream"}},
            "acquire.place.nlcd.zip.deflated=stream",
        ),
    ],
)
def test_bad_source_settings_name_the_key(settings: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        nlcd_source(settings, 2024)


def test_a_local_archive_is_read_in_place(tmp_path: Path) -> None:
    member = _annual_nlcd(tmp_path / "member.tif")
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(member, MEMBER)
    settings = {"source": "zip", "zip": {"url": str(archive), "member": MEMBER}}
    dst = fetch_nlcd(nlcd_source(settings, 2024), TILE, tmp_path / "nlcd.tif", HALO)
    assert _agreement(dst, _expected(member, TILE), TILE) >= 0.995
    assert not (tmp_path / "nlcd").exists()  # nothing copied into the cache
