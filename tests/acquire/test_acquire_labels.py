"""1 m labels for a tile from every intersecting label item (:mod:`lcip.acquire.labels`).

On loopback, with real recorded item JSON (``tests/fixtures/real``): the real Planetary Computer
NAIP item ``pa_m_4108053_se_17_1_20150725_20151201`` (its footprint moved onto a small
synthetic NAIP COG in its own UTM zone) and the real Chesapeake ``chesapeake-lc-7`` item
``Baywide_7Class_20132014_E1300000_N1770000`` with a crop of its real label raster (Albers,
nodata 15, ``datetime: null``), plus a second label item derived from it (shifted east and
south, new id). The two cover different, overlapping parts of the tile.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
import shapely.affinity
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rasterio.windows import Window

from lcip.acquire.area import to_lonlat
from lcip.acquire.http import download
from lcip.acquire.labels import (
    FRACTION_TAG,
    LabelItem,
    applied_order,
    asset_nodata,
    fetch_labels,
    imagery_year,
    item_years,
    read_labels,
    year_warning,
)
from lcip.acquire.stac import scene_of, search
from lcip.errors import DataError
from lcip.io.align import snapped_grid
from lcip.io.provenance import read_provenance
from lcip.io.raster import Grid, write_raster
from tests.paths import FIXTURES
from tests.stand_ins import StandIn, stac_api

REAL = FIXTURES / "real"
LC7_ITEM = REAL / "chesapeake_lulc" / "Baywide_7Class_20132014_E1300000_N1770000.json"
LC7_TIF = REAL / "chesapeake_lulc" / "Baywide_7class_20132014_E1300000_N1770000.tif"
NAIP_ITEM = REAL / "naip" / "pa_m_4108053_se_17_1_20150725_20151201.json"
#: The crop of the real label raster (pixels): the corner of the labelled area, 45 % labelled.
CROP = Window(7400, 1200, 300, 300)
#: The derived second label item: the crop moved east and south (metres, Albers).
SHIFT = (120.0, -100.0)
SHIFTED_ID = "Baywide_7Class_20132014_E1300120_N1769900"
UTM17 = CRS.from_epsg(26917)
COLLECTION = "chesapeake-lc-7"
PC_API = "https://planetarycomputer.microsoft.com/api/stac/v1/"


class _NullDatetimeView(dict[str, Any]):
    """Item properties whose ``datetime`` reads as ``start_datetime`` when it is null.

    ``stand_ins.stac_api`` filters on ``properties["datetime"][:10]``, which fails for STAC items
    with ``datetime: null``; the JSON served stays the real one (``null``), since serialisation
    reads the stored values.
    """

    def __getitem__(self, key: Any) -> Any:
        value = super().__getitem__(key)
        if key == "datetime" and value is None:
            return super().__getitem__("start_datetime")
        return value


def _served(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "properties": _NullDatetimeView(item["properties"])}


def _api_links(item: dict[str, Any]) -> list[dict[str, Any]]:
    """The item's links as the Planetary Computer's API serves them (the stactools example
    is a static catalog, whose ``../collection.json`` links a search cannot resolve)."""
    collection = f"{PC_API}collections/{item['collection']}"
    hrefs = {"root": PC_API, "collection": collection, "parent": collection}
    links = [{**link, "href": hrefs[link["rel"]]} for link in item["links"]]
    return [*links, {"rel": "self", "href": f"{collection}/items/{item['id']}"}]


def _write_label(path: Path, data: np.ndarray, transform: Affine, crs: CRS, nodata: Any) -> None:
    write_raster(path, data, Grid(crs, transform, *data.shape), nodata=nodata, cog=True)


def _shift_geometry(geometry: dict[str, Any], crs: CRS) -> dict[str, Any]:
    to_albers = Transformer.from_crs(4326, crs, always_xy=True)
    shape = shapely.geometry.shape(geometry)
    moved = shapely.affinity.translate(
        shapely.transform(shape, lambda xy: np.column_stack(to_albers.transform(*xy.T))), *SHIFT
    )
    return shapely.geometry.mapping(to_lonlat(moved, crs))


def _naip_item(grid: Grid, href: str, year: int | None = None) -> dict[str, Any]:
    """The real NAIP item, its footprint and grid moved onto ``grid`` (and its year changed)."""
    item = json.loads(NAIP_ITEM.read_text())
    footprint = to_lonlat(shapely.box(*grid.bounds), grid.crs)
    item["geometry"] = shapely.geometry.mapping(footprint)
    item["bbox"] = list(footprint.bounds)
    item["assets"]["image"]["href"] = href
    props = item["properties"]
    props["proj:bbox"] = list(grid.bounds)
    props["proj:shape"] = [grid.height, grid.width]
    props["proj:transform"] = list(grid.transform)
    if year is not None:
        props["datetime"] = f"{year}-07-25T00:00:00Z"
        props["naip:year"] = str(year)
    return item


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Served files and items: the two label rasters, the NAIP tile, their STAC items."""
    root = tmp_path_factory.mktemp("served")
    (root / "labels").mkdir()
    (root / "naip").mkdir()
    with rasterio.open(LC7_TIF) as src:
        albers, nodata = src.crs, src.nodata
        crop = src.read(1, window=CROP)
        t_a = src.window_transform(CROP)
    t_b = Affine.translation(*SHIFT) * t_a
    real = json.loads(LC7_ITEM.read_text())
    item_a = copy.deepcopy(real)
    item_a["links"] = _api_links(real)
    item_a["assets"]["data"]["href"] = f"labels/{real['id']}.tif"
    item_a["properties"]["proj:shape"] = list(crop.shape)
    item_a["properties"]["proj:transform"] = list(t_a)[:6]
    item_b = copy.deepcopy(item_a)
    item_b["id"] = SHIFTED_ID
    item_b["geometry"] = _shift_geometry(real["geometry"], albers)
    item_b["bbox"] = list(shapely.geometry.shape(item_b["geometry"]).bounds)
    item_b["assets"]["data"]["href"] = f"labels/{SHIFTED_ID}.tif"
    item_b["properties"]["proj:transform"] = list(t_b)[:6]
    _write_label(root / "labels" / f"{real['id']}.tif", crop, t_a, albers, nodata)
    _write_label(root / "labels" / f"{SHIFTED_ID}.tif", crop, t_b, albers, nodata)
    # The NAIP tile: 1 m UTM 17N around the two crops, larger than their union, so that both
    # items cover parts of it and part of it has no label.
    to_utm = Transformer.from_crs(albers, UTM17, always_xy=True)
    x, y = to_utm.transform(t_a.c + 250.0, t_a.f - 220.0)
    grid = snapped_grid(UTM17, (x - 230.0, y - 200.0, x + 230.0, y + 200.0), 1.0)
    rng = np.random.default_rng(0)
    naip = rng.integers(20, 230, size=(4, *grid.shape), dtype=np.uint8)
    write_raster(root / "naip" / "tile.tif", naip, grid, cog=True)
    return {
        "root": root,
        "grid": grid,
        "crop": crop,
        "albers": albers,
        "transforms": (t_a, t_b),
        "items": [item_a, item_b],
        "nodata": nodata,
    }


@pytest.fixture
def stac(world: dict[str, Any]) -> Iterator[StandIn]:
    naip = _naip_item(world["grid"], "naip/tile.tif")
    server = stac_api(world["root"], [naip, *(_served(i) for i in world["items"])])
    with server:
        yield server


def _union_on_tile(world: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Each label item's crop reprojected separately onto the tile grid (15 outside)."""
    grid = world["grid"]
    out = []
    for transform in world["transforms"]:
        dst = np.full(grid.shape, 15, np.uint8)
        reproject(
            world["crop"],
            dst,
            src_transform=transform,
            src_crs=world["albers"],
            src_nodata=15,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            dst_nodata=15,
            resampling=Resampling.nearest,
        )
        out.append(dst)
    return out[0], out[1]


def _acquire_tile(stac: StandIn, tmp_path: Path) -> tuple[dict[str, Any], Grid]:
    """The NAIP scene found by a search of the stand-in, downloaded: its item and grid."""
    footprint = shapely.box(-80.99, 38.0, -80.85, 38.13)
    items = search(stac.url(""), "naip", footprint, "2015-01-01/2015-12-31")
    assert [i["id"] for i in items] == ["pa_m_4108053_se_17_1_20150725_20151201"]
    scene = scene_of(items[0], "image")
    naip = download(scene.href, tmp_path / "tile" / "naip.tif", progress=False)
    return dict(scene.item), Grid.of(naip)


def test_two_label_items_cover_the_union_on_the_tile_grid(
    world: dict[str, Any], stac: StandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    naip_item, grid = _acquire_tile(stac, tmp_path)
    assert grid == world["grid"]
    dst = tmp_path / "tile" / "lc.tif"
    cache = tmp_path / "cache" / "labels"
    with caplog.at_level(logging.INFO, logger="lcip.acquire.labels"):
        got = fetch_labels(
            "pa_tile",
            grid,
            dst,
            cache,
            {"collection": COLLECTION, "asset": "data"},
            catalog_url=stac.url(""),
            imagery=naip_item,
            progress=False,
        )
    assert got is not None and got.path == dst
    ids = [i["id"] for i in world["items"]]
    assert got.items == tuple(ids)  # every intersecting item, the real one first (by id)
    for i in ids:  # every item downloaded into the cache
        assert (cache / f"{i}.tif").read_bytes() == (
            world["root"] / "labels" / f"{i}.tif"
        ).read_bytes()
    assert got.url == " ".join(stac.url(f"labels/{i}.tif") for i in ids)
    a, b = _union_on_tile(world)
    valid_a, valid_b = a != 15, b != 15
    union = valid_a | valid_b
    # Both items cover part of the tile, neither all of it, and they overlap.
    assert 0.1 < valid_a.mean() < 0.9 and 0.1 < valid_b.mean() < 0.9 and (valid_a & valid_b).any()
    assert (valid_b & ~valid_a).sum() > 0.05 * grid.height * grid.width
    assert not union.all()
    with rasterio.open(dst) as lc:
        assert (lc.crs, lc.transform, lc.shape) == (grid.crs, grid.transform, grid.shape)
        assert lc.nodata == 0 and lc.count == 1 and lc.profile["tiled"]
        with rasterio.open(tmp_path / "tile" / "naip.tif") as naip:
            assert lc.dtypes[0] == naip.dtypes[0] == "uint8"
        data = lc.read(1)
        tags = lc.tags()
    labelled = data != 0
    assert labelled[union].mean() >= 0.99  # the bar: lc covers >= 99 % of the items' union
    assert labelled[~union].sum() <= 0.001 * union.sum()  # nodata (0) outside the union
    assert not (data == 15).any()
    expected = np.where(valid_a, a, b)  # nearest: codes kept; where both cover, the first item
    assert (data[labelled] == expected[labelled]).mean() >= 0.99
    assert set(np.unique(data)) <= {0, *np.unique(world["crop"][world["crop"] != 15])}
    assert {1, 2, 3, 5} <= set(np.unique(data))
    # The fraction reported (returned, logged, tagged) is the labelled share of the tile.
    assert got.fraction == pytest.approx(labelled.mean(), abs=1e-6)
    assert float(tags[FRACTION_TAG]) == pytest.approx(got.fraction, abs=1e-6)
    lines = [r.getMessage() for r in caplog.records if "labelled" in r.getMessage()]
    assert lines == [
        f"tile pa_tile: {100 * got.fraction:.1f}% labelled by 2 {COLLECTION} items "
        f"({', '.join(ids)})"
    ]
    prov = read_provenance(dst)
    assert prov is not None and prov["params"]["items"] == ids
    assert set(prov["inputs"]) == set(ids)
    # Labels 2013-2014, imagery 2015: one warning line naming tile and years.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "tile pa_tile: labels from 2013-2014 but imagery from 2015: "
        "land cover may have changed in between"
    ]
    # A rerun keeps the layer (same provenance): nothing rewritten, nothing downloaded again.
    before = dst.stat().st_mtime_ns
    stac.reset_counters()
    again = fetch_labels(
        "pa_tile",
        grid,
        dst,
        cache,
        {"collection": COLLECTION},
        catalog_url=stac.url(""),
        imagery=naip_item,
        progress=False,
    )
    assert again is not None and again.fraction == pytest.approx(got.fraction, abs=1e-6)
    assert dst.stat().st_mtime_ns == before
    assert not [r for r in stac.requests if r[1].startswith("labels/")]


def test_no_year_warning_when_the_labels_include_the_imagery_year(
    world: dict[str, Any], stac: StandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    naip_2014 = _naip_item(world["grid"], "naip/tile.tif", year=2014)
    with caplog.at_level(logging.INFO, logger="lcip.acquire.labels"):
        got = fetch_labels(
            "pa_tile",
            world["grid"],
            tmp_path / "lc.tif",
            tmp_path / "cache",
            {"collection": COLLECTION, "url": stac.url("")},
            catalog_url="http://127.0.0.1:9/unused",
            imagery=naip_2014,
            progress=False,
        )
    assert got is not None and got.years == ((2013, 2014), (2013, 2014))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_no_item_on_the_tile_is_a_warning_and_no_layer(
    world: dict[str, Any], stac: StandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    far = Grid(UTM17, Affine(1.0, 0, 300000.0, 0, -1.0, 4000000.0), 50, 50)
    with caplog.at_level(logging.WARNING, logger="lcip.acquire.labels"):
        got = fetch_labels(
            "far",
            far,
            tmp_path / "lc.tif",
            tmp_path / "cache",
            {"collection": COLLECTION},
            catalog_url=stac.url(""),
            progress=False,
        )
    assert got is None and not (tmp_path / "lc.tif").exists()
    assert [r.getMessage() for r in caplog.records] == [f"tile far: no labels in {COLLECTION}"]


@pytest.mark.parametrize("variant", ["real", "untagged", "zero"])
def test_label_nodata_from_the_file_or_the_item_becomes_0(
    world: dict[str, Any], tmp_path: Path, variant: str
) -> None:
    """The real file (nodata 15 tagged), one without a nodata tag (the item's ``raster:bands``
    says 15) and an older file whose nodata is 0: the same labels, 0 elsewhere."""
    crop, t_a = world["crop"], world["transforms"][0]
    path = tmp_path / "labels.tif"
    if variant == "real":
        _write_label(path, crop, t_a, world["albers"], 15)
    elif variant == "untagged":
        _write_label(path, crop, t_a, world["albers"], None)
    else:
        _write_label(path, np.where(crop == 15, 0, crop), t_a, world["albers"], 0)
    item_nodata = asset_nodata(world["items"][0], "data")
    assert item_nodata == 15.0
    grid = world["grid"]
    got = read_labels(path, grid, item_nodata if variant == "untagged" else None)
    a, _ = _union_on_tile(world)
    assert got.dtype == np.uint8 and got.shape == grid.shape
    assert set(np.unique(got)) <= {0, 1, 2, 3, 5}
    assert ((got != 0) == (a != 15)).mean() >= 0.999
    assert (got[a != 15] == a[a != 15]).mean() >= 0.999


def test_years_and_order_from_real_items() -> None:
    label = json.loads(LC7_ITEM.read_text())
    naip = json.loads(NAIP_ITEM.read_text())
    assert label["properties"]["datetime"] is None
    assert item_years(label) == (2013, 2014)
    assert imagery_year(naip) == 2015
    old = LabelItem("b_old", "u", None, 15, (2013, 2014))
    new = LabelItem("a_new", "u", None, 15, (2017, 2018))
    undated = LabelItem("0", "u", None, None, None)
    assert [i.id for i in applied_order([undated, old, new], 2014)] == ["b_old", "a_new", "0"]
    assert [i.id for i in applied_order([undated, old, new], 2022)] == ["a_new", "b_old", "0"]
    assert [i.id for i in applied_order([old, new], None)] == ["a_new", "b_old"]
    assert year_warning("t", [(2013, 2014)], 2014) is None
    assert year_warning("t", [(2013, 2014), (2017, 2018)], 2018) == (
        "tile t: labels from 2013-2014, 2017-2018 but imagery from 2018: "
        "land cover may have changed in between"
    )


def test_a_broken_label_file_is_a_one_line_error_and_removed(
    world: dict[str, Any], tmp_path: Path
) -> None:
    root = tmp_path / "served"
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "broken.tif").write_bytes(b"<html>not a raster</html>")
    broken = copy.deepcopy(world["items"][0])
    broken["assets"]["data"]["href"] = "labels/broken.tif"
    cache = tmp_path / "cache"
    with stac_api(root, [_served(broken)]) as server, pytest.raises(DataError) as err:
        fetch_labels(
            "pa_tile",
            world["grid"],
            tmp_path / "lc.tif",
            cache,
            {"collection": COLLECTION},
            catalog_url=server.url(""),
            progress=False,
        )
    message = str(err.value)
    assert "\n" not in message and message.startswith(server.url("labels/broken.tif"))
    assert "not a whole raster" in message
    assert not list(cache.glob("*")) and not (tmp_path / "lc.tif").exists()
