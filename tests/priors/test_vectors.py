"""Tests for lcip.priors.vectors: reading OSM / footprints and rasterizing onto tile grids."""

from __future__ import annotations

import bz2
import math
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS

from lcip.errors import DataError
from lcip.io.raster import Grid
from lcip.priors.vectors import (
    LAYER_NAMES,
    ROAD_WIDTHS,
    VectorSources,
    clear_cache,
    load_sources,
    rasterize_vectors,
    read_buildings,
    read_osm,
    write_vector_layers,
)
from tests.paths import REALDATA

OSM_DIR = REALDATA / "osm"

# Synthetic scene: a 100 x 100 px grid at 1 m in UTM 18N. Shapes are defined in pixel
# coordinates (col, row), converted to UTM and then to lon/lat, so the expected pixels are known.
EPSG = 32618
X0, Y0 = 500_000.0, 4_200_000.0
GRID = Grid(CRS.from_epsg(EPSG), Affine(1.0, 0.0, X0, 0.0, -1.0, Y0), 100, 100)
_TO_LONLAT = Transformer.from_crs(EPSG, 4326, always_xy=True)


def px(col: float, row: float) -> tuple[float, float]:
    """UTM coordinates of a pixel-space point."""
    return X0 + col, Y0 - row


def lonlat(col: float, row: float) -> tuple[float, float]:
    lon, lat = _TO_LONLAT.transform(*px(col, row))
    return float(lon), float(lat)


def box_px(c0: float, r0: float, c1: float, r1: float) -> list[tuple[float, float]]:
    """Closed ring of a pixel-space box (cols c0..c1, rows r0..r1)."""
    return [(c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0)]


class OsmWriter:
    """Writes a tiny OSM XML file from pixel-space ways."""

    def __init__(self) -> None:
        self.nodes: list[str] = []
        self.ways: list[str] = []
        self.relations: list[str] = []
        self._next = 1

    def _id(self) -> int:
        self._next += 1
        return self._next

    def way(self, pts: list[tuple[float, float]], **tags: str) -> int:
        refs: list[int] = []
        for i, (c, r) in enumerate(pts):
            if i == len(pts) - 1 and len(pts) > 2 and pts[0] == pts[-1]:
                refs.append(refs[0])
                continue
            nid = self._id()
            lon, lat = lonlat(c, r)
            self.nodes.append(f'  <node id="{nid}" lat="{lat:.10f}" lon="{lon:.10f}" version="1"/>')
            refs.append(nid)
        wid = self._id()
        body = "".join(f'<nd ref="{n}"/>' for n in refs)
        body += "".join(f'<tag k="{k}" v="{v}"/>' for k, v in tags.items())
        self.ways.append(f'  <way id="{wid}" version="1">{body}</way>')
        return wid

    def multipolygon(self, outer: int, inner: int, **tags: str) -> None:
        body = f'<member type="way" ref="{outer}" role="outer"/>'
        body += f'<member type="way" ref="{inner}" role="inner"/>'
        body += '<tag k="type" v="multipolygon"/>'
        body += "".join(f'<tag k="{k}" v="{v}"/>' for k, v in tags.items())
        self.relations.append(f'  <relation id="{self._id()}" version="1">{body}</relation>')

    def text(self) -> str:
        lines = ["<?xml version='1.0' encoding='UTF-8'?>", '<osm version="0.6" generator="test">']
        lines += self.nodes + self.ways + self.relations + ["</osm>"]
        return "\n".join(lines) + "\n"


def scene_osm() -> str:
    w = OsmWriter()
    # residential road along the centre of row 60, cols 20..80, 6 m wide -> rows 58..62
    w.way([(20, 60.5), (80, 60.5)], highway="residential", name="Test Street")
    # footway (not drawn by default) along row 10.5; tunnel (never drawn) along row 30.5
    w.way([(5, 10.5), (35, 10.5)], highway="footway")
    w.way([(60, 30.5), (80, 30.5)], highway="primary", tunnel="yes")
    # traffic signal node: a point feature, ignored
    # river along col 90.5, 10 m wide -> cols 86..94; a culverted ditch is ignored
    w.way([(90.5, -5), (90.5, 105)], waterway="river")
    w.way([(50.5, 70), (50.5, 99)], waterway="ditch", tunnel="culvert")
    # pond: cols 60..80, rows 80..95
    w.way(box_px(60, 80, 80, 95), natural="water")
    # lake with an island (multipolygon relation): outer cols 2..18 rows 70..95,
    # inner cols 8..12 rows 80..85
    outer = w.way(box_px(2, 70, 18, 95))
    inner = w.way(box_px(8, 80, 12, 85))
    w.multipolygon(outer, inner, natural="water")
    # OSM building: cols 40..50, rows 5..15
    w.way(box_px(40, 5, 50, 15), building="yes")
    return w.text()


def footprint_frame(crs: int | str = 4326) -> gpd.GeoDataFrame:
    """Footprint polygon covering cols 10..30, rows 20..40, in the given CRS."""
    poly = shapely.Polygon([px(c, r) for c, r in box_px(10, 20, 30, 40)])
    return gpd.GeoDataFrame({"id": [1]}, geometry=[poly], crs=EPSG).to_crs(crs)


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, Path]:
    osm = tmp_path / "scene.osm"
    osm.write_text(scene_osm())
    buildings = tmp_path / "footprints.geojson"
    footprint_frame(4326).to_file(buildings, driver="GeoJSON")
    clear_cache()
    return osm, buildings


def test_read_osm_splits_features(scene: tuple[Path, Path]) -> None:
    feats = read_osm(scene[0])
    assert sorted(feats.roads["highway"]) == ["footway", "residential"]  # tunnel dropped
    assert list(feats.waterways["waterway"]) == ["river"]  # culvert dropped
    assert len(feats.waterbodies) == 2
    assert len(feats.buildings) == 1
    for frame in (feats.roads, feats.waterways, feats.waterbodies, feats.buildings):
        assert frame.crs.to_epsg() == 4326
    holes = sorted(len(g.interiors) for g in feats.waterbodies.geometry)
    assert holes == [0, 1]  # the multipolygon relation came through as a polygon with a hole


def test_rasterize_lands_on_expected_pixels(scene: tuple[Path, Path]) -> None:
    osm, buildings = scene
    out = rasterize_vectors(GRID, osm, buildings)
    assert out.shape == (4, 100, 100)
    assert out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 1}
    b, r, ww, wb = out

    expected_b = np.zeros((100, 100), np.uint8)
    expected_b[20:40, 10:30] = 1  # footprint file
    expected_b[5:15, 40:50] = 1  # OSM building
    np.testing.assert_array_equal(b, expected_b)

    assert r[58:63, 20:80].all()
    assert not r[:56].any() and not r[65:].any()
    assert not r[:, :16].any() and not r[:, 84:].any()

    assert ww[:, 86:95].all()
    assert not ww[:, :85].any() and not ww[:, 96:].any()

    expected_wb = np.zeros((100, 100), np.uint8)
    expected_wb[80:95, 60:80] = 1
    expected_wb[70:95, 2:18] = 1
    expected_wb[80:85, 8:12] = 0  # the island
    np.testing.assert_array_equal(wb, expected_wb)


def test_widths_and_kept_types_configurable(scene: tuple[Path, Path]) -> None:
    osm, _ = scene
    narrow = rasterize_vectors(GRID, osm, None, road_widths={"residential": 3.0})[1]
    assert narrow[59:62, 20:80].all()
    assert not narrow[58].any() and not narrow[62].any()
    with_foot = rasterize_vectors(GRID, osm, None, road_widths={**ROAD_WIDTHS, "footway": 2.0})[1]
    assert with_foot[10, 5:35].all()
    default = rasterize_vectors(GRID, osm, None)
    assert not default[1, :20].any()
    rivers_off = rasterize_vectors(GRID, osm, None, waterway_widths={"stream": 3.0})[2]
    assert not rivers_off.any()
    no_osm_buildings = rasterize_vectors(GRID, osm, None, osm_buildings=False)[0]
    assert not no_osm_buildings.any()
    touched = rasterize_vectors(GRID, osm, None, all_touched=True)
    assert (touched >= default).all() and touched.sum() > default.sum()
    with pytest.raises(ValueError, match="road_widths"):
        rasterize_vectors(GRID, osm, None, road_widths={"residential": -1.0})


def test_footprints_any_crs_and_format(tmp_path: Path) -> None:
    expected = np.zeros((100, 100), np.uint8)
    expected[20:40, 10:30] = 1
    gpkg = tmp_path / "fp_3857.gpkg"
    footprint_frame(3857).to_file(gpkg, driver="GPKG")
    utm = tmp_path / "fp_utm.gpkg"
    footprint_frame(EPSG).to_file(utm, driver="GPKG")
    for path in (gpkg, utm):
        assert read_buildings(path).crs is not None
        np.testing.assert_array_equal(rasterize_vectors(GRID, None, path)[0], expected)
    if not _has_pyarrow():
        return
    parquet = tmp_path / "fp.parquet"
    footprint_frame(4326).to_parquet(parquet)
    np.testing.assert_array_equal(rasterize_vectors(GRID, None, parquet)[0], expected)


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def test_osm_features_from_vector_file(tmp_path: Path) -> None:
    line = shapely.LineString([px(20, 60.5), px(80, 60.5)])
    gdf = gpd.GeoDataFrame({"highway": ["residential"]}, geometry=[line], crs=EPSG)
    path = tmp_path / "osm_roads.gpkg"
    gdf.to_file(path, driver="GPKG")
    out = rasterize_vectors(GRID, path, None)
    assert out[1, 58:63, 20:80].all() and out[[0, 2, 3]].sum() == 0
    sources = VectorSources.from_frames(gdf.to_crs(4326), footprint_frame(3857))
    np.testing.assert_array_equal(sources.rasterize(GRID)[1], out[1])
    assert sources.rasterize(GRID)[0, 20:40, 10:30].all()


def test_tiles_are_seamless(scene: tuple[Path, Path]) -> None:
    osm, buildings = scene
    sources = VectorSources(osm, buildings)
    full = sources.rasterize(GRID)
    for row_off, col_off, h, w in [(0, 0, 50, 47), (50, 47, 50, 53), (13, 61, 40, 39)]:
        sub = Grid(GRID.crs, GRID.transform * Affine.translation(col_off, row_off), h, w)
        np.testing.assert_array_equal(
            sources.rasterize(sub), full[:, row_off : row_off + h, col_off : col_off + w]
        )
    # a grid far from every feature is empty
    far = Grid(GRID.crs, Affine(1.0, 0.0, X0 + 5000, 0.0, -1.0, Y0), 10, 10)
    assert not sources.rasterize(far).any()


def test_write_four_band_raster(scene: tuple[Path, Path], tmp_path: Path) -> None:
    osm, buildings = scene
    sources = VectorSources(osm, buildings)
    grid = GRID.expand(4)
    path = sources.write(tmp_path / "out" / "vectors.tif", grid)
    with rasterio.open(path) as src:
        assert src.count == 4
        assert src.dtypes == ("uint8",) * 4
        assert src.crs == grid.crs
        assert src.transform.almost_equals(grid.transform)
        assert (src.height, src.width) == grid.shape
        assert src.descriptions == LAYER_NAMES
        tags = src.tags()
        data = src.read()
    assert tags["osm_source"] == str(osm)
    assert tags["buildings_source"] == str(buildings)
    assert tags["layers"] == ",".join(LAYER_NAMES)
    assert Grid.of(path).same_as(grid)
    assert set(np.unique(data)) == {0, 1}
    np.testing.assert_array_equal(data, sources.rasterize(grid))
    assert not list(path.parent.glob(".*.tmp"))
    with pytest.raises(ValueError, match="shape"):
        write_vector_layers(tmp_path / "bad.tif", data[:3], grid)


def test_sources_loaded_once(scene: tuple[Path, Path]) -> None:
    osm, buildings = scene
    first = load_sources(osm, buildings)
    assert load_sources(osm, buildings) is first
    assert load_sources(str(osm), [buildings]) is first
    rasterize_vectors(GRID, osm, buildings)
    assert load_sources(osm, buildings) is first
    # a changed file is read again
    st = osm.stat()
    os.utime(osm, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert load_sources(osm, buildings) is not first


def test_empty_osm_gives_empty_layers(tmp_path: Path) -> None:
    path = tmp_path / "empty.osm"
    w = OsmWriter()
    w.way([(1, 1), (5, 5)], barrier="fence")
    path.write_text(w.text())
    feats = read_osm(path)
    assert len(feats.roads) == len(feats.waterways) == len(feats.buildings) == 0
    assert not rasterize_vectors(GRID, path, None).any()
    assert not rasterize_vectors(GRID, None, None).any()


def _assert_one_line(err: pytest.ExceptionInfo[DataError], path: Path) -> None:
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    for path, call in [
        (tmp_path / "nope.osm", lambda p: read_osm(p)),
        (tmp_path / "nope.geojson", lambda p: read_buildings(p)),
        (tmp_path / "nope.osm.bz2", lambda p: rasterize_vectors(GRID, p, None)),
        (tmp_path / "nope.gpkg", lambda p: VectorSources(None, p)),
    ]:
        with pytest.raises(DataError, match="does not exist") as err:
            call(path)
        _assert_one_line(err, path)

    bad_xml = tmp_path / "bad.osm"
    bad_xml.write_text("<osm><node id='1' lat='1' lon= </osm")
    truncated = tmp_path / "truncated.osm.bz2"
    truncated.write_bytes(bz2.compress(scene_osm().encode())[:200])
    garbage_bz2 = tmp_path / "garbage.osm.bz2"
    garbage_bz2.write_bytes(b"this is not bzip2 data at all")
    for path in (bad_xml, truncated, garbage_bz2):
        with pytest.raises(DataError, match="cannot be read as OSM XML") as err:
            read_osm(path)
        _assert_one_line(err, path)

    bad_json = tmp_path / "bad.geojson"
    bad_json.write_text('{"type": "FeatureCollection", "features": [ {"type": ')
    bad_gpkg = tmp_path / "bad.gpkg"
    bad_gpkg.write_bytes(b"SQLite format 3\x00" + b"\x00" * 50)
    for path in (bad_json, bad_gpkg):
        with pytest.raises(DataError, match="cannot be read as building footprints") as err:
            read_buildings(path)
        _assert_one_line(err, path)

    no_crs = tmp_path / "no_crs.gpkg"
    with pytest.warns(UserWarning, match="crs"):
        footprint_frame(EPSG).set_crs(None, allow_override=True).to_file(no_crs, driver="GPKG")
    with pytest.raises(DataError, match="no CRS") as err:
        read_buildings(no_crs)
    _assert_one_line(err, no_crs)

    pbf = tmp_path / "region.osm.pbf"
    pbf.write_bytes(b"\x00")
    with pytest.raises(DataError, match="PBF"):
        read_osm(pbf)


# --- real OpenStreetMap extracts ---------------------------------------------------------------


def _bounds_grid(lonlat_bounds: tuple[float, float, float, float], epsg: int) -> Grid:
    """A 1 m grid in ``epsg`` covering lon/lat bounds (minlon, minlat, maxlon, maxlat)."""
    b = gpd.GeoSeries([shapely.box(*lonlat_bounds)], crs=4326).to_crs(epsg).total_bounds
    left, bottom = math.floor(b[0]), math.floor(b[1])
    right, top = math.ceil(b[2]), math.ceil(b[3])
    return Grid(
        CRS.from_epsg(epsg), Affine(1.0, 0.0, left, 0.0, -1.0, top), top - bottom, right - left
    )


def _real(name: str) -> Path:
    path = OSM_DIR / name
    if not path.exists():
        pytest.skip(f"real sample data not available: {path} (see shared/realdata/README.md)")
    return path


def test_real_west_oakland() -> None:
    path = _real("West-Oakland.osm.bz2")
    # <bounds minlon="-122.30258" minlat="37.80615" maxlon="-122.29825" maxlat="37.80914"/>
    grid = _bounds_grid((-122.30258, 37.80615, -122.29825, 37.80914), 32610)
    assert 350 < grid.width < 450 and 300 < grid.height < 380
    out = rasterize_vectors(grid, path, None)
    assert out.shape == (4, *grid.shape) and out.dtype == np.uint8
    fractions = dict(zip(LAYER_NAMES, out.reshape(4, -1).mean(axis=1), strict=True))
    assert 0.05 < fractions["roads"] < 0.5, fractions
    assert 0.0 < fractions["buildings"] < 0.8, fractions  # OSM building=* polygons
    assert fractions["waterways"] == 0 and fractions["waterbodies"] == 0

    # Road pixels agree with the drawn roads' area (length x width, minus overlaps).
    roads = load_sources(path, None).features.roads.to_crs(32610)
    roads = roads[roads["highway"].isin(list(ROAD_WIDTHS))]
    clipped = roads.geometry.clip_by_rect(*grid.bounds)
    area = float((clipped.length * roads["highway"].map(ROAD_WIDTHS)).sum())
    assert 0.6 * area < out[1].sum() < 1.2 * area


def test_real_munich() -> None:
    path = _real("planet_munich_small.osm")
    # <bounds minlat="48.135" minlon="10.068" maxlat="48.137" maxlon="10.071"/>
    grid = _bounds_grid((10.068, 48.135, 10.071, 48.137), 32632)
    out = rasterize_vectors(grid, path, None)
    fractions = out.reshape(4, -1).mean(axis=1)
    assert 0.01 < fractions[1] < 0.5  # roads
    assert 0.01 < fractions[0] < 0.8  # buildings
    assert fractions[2] == 0 and fractions[3] == 0
