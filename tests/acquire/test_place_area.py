"""Area selection, NAIP scene choice, NLCD release and footprint quadkeys of a place region."""

from __future__ import annotations

from typing import Any

import pytest
import shapely

from lcip.acquire.area import bbox_polygon, quarter_quad, select_area, selector, time_range
from lcip.acquire.footprints import FootprintFile, files_for, quadkey, quadkeys_for
from lcip.acquire.nlcd import nearest_release, nlcd_grid
from lcip.acquire.place import assign_splits, public_url, resolution_of
from lcip.acquire.stac import newest_scenes, quad_box
from lcip.errors import ConfigError
from tests.conftest import make_grid


def test_exactly_one_selector_and_one_time() -> None:
    assert selector({"place": "Ithaca, NY", "bbox": None}) == "place"
    for bad in ({}, {"place": "Ithaca, NY", "bbox": [0, 0, 1, 1]}):
        with pytest.raises(ConfigError, match="exactly one of"):
            selector(bad)
    assert time_range({"year": 2022}) == "2022-01-01/2022-12-31"
    assert time_range({"date_range": "2021-06-01/2022"}) == "2021-06-01/2022-12-31"
    for bad in ({}, {"year": 2022, "date_range": "2021/2022"}, {"date_range": "last year"}):
        with pytest.raises(ConfigError, match=r"region\.source"):
            time_range(bad)


def test_bbox_in_another_crs_and_tile_ids() -> None:
    utm = bbox_polygon([426500, 4755200, 426700, 4755400], "EPSG:26916")
    lon, lat = utm.centroid.x, utm.centroid.y
    assert lon == pytest.approx(-87.9, abs=0.01) and lat == pytest.approx(42.947, abs=0.01)
    with pytest.raises(ConfigError, match="empty box"):
        bbox_polygon([1, 1, 0, 2])
    with pytest.raises(ConfigError, match="unknown CRS"):
        bbox_polygon([0, 0, 1, 1], "EPSG:999999")
    area = select_area({"naip_tiles": ["wi_m_4208701_ne_16_060_20200902"]}, "unused")
    assert area.tiles == ("m_4208701_ne_16",) and area.geometry is None
    assert quarter_quad("M_4207601_SW_18_1") == "m_4207601_sw_18"
    with pytest.raises(ConfigError, match="quarter-quad"):
        quarter_quad("tile_7")


def test_quarter_quad_footprints_match_the_real_crops() -> None:
    # The real NAIP crops lie in their quarter quads (centres computed from their UTM bounds).
    assert quad_box("m_4208701_ne_16").contains(shapely.Point(-87.8995, 42.9470))
    assert quad_box("m_3211605_ne_11").contains(shapely.Point(-116.3817, 32.9717))
    assert quad_box("m_4207601_sw_18").bounds == pytest.approx((-77.0, 42.875, -76.9375, 42.9375))


def _item(item_id: str, when: str, box: Any) -> dict[str, Any]:
    return {
        "id": item_id,
        "geometry": shapely.geometry.mapping(box),
        "properties": {"datetime": when},
        "assets": {"image": {"href": f"https://x/{item_id}.tif", "file:size": 7}},
    }


def test_newest_scene_per_quarter_quad_touching_the_area() -> None:
    a, b = shapely.box(0, 0, 1, 1), shapely.box(5, 5, 6, 6)
    items = [
        _item("ny_m_4207601_ne_18_060_20220601", "2022-06-01T00:00:00Z", a),
        _item("ny_m_4207601_ne_18_060_20220901", "2022-09-01T00:00:00Z", a),
        _item("ny_m_4207601_nw_18_060_20220901", "2022-09-01T00:00:00Z", b),
    ]
    scenes = newest_scenes(items, "image", shapely.box(0.5, 0.5, 2, 2))
    assert [(s.id, s.size) for s in scenes] == [("ny_m_4207601_ne_18_060_20220901", 7)]
    by_ids = newest_scenes(items, "image", None, ["m_4207601_nw_18"])
    assert [s.id for s in by_ids] == ["ny_m_4207601_nw_18_060_20220901"]


def test_splits_release_resolution_and_signed_urls() -> None:
    assert assign_splits(["c", "a", "b"], {"val": 1}) == {"a": "train", "b": "train", "c": "val"}
    assert assign_splits(["a", "b", "c"], {"val": 1, "test": 1})["b"] == "test"
    assert assign_splits(["a"], {"val": 1}) == {"a": "train"}
    assert nearest_release(2022, [2019, 2021, 2023]) == 2023  # a tie goes to the later one
    assert nearest_release(2014, [2011, 2016, 2019]) == 2016
    assert resolution_of({"resolution": "native"}) is None
    assert resolution_of({"resolution": 0.6}) == 0.6
    with pytest.raises(ConfigError, match=r"acquire\.place\.resolution"):
        resolution_of({"resolution": 0})
    url = "https://naipeuwest.blob.core.windows.net/naip/x.tif?st=2026&sig=abc"
    assert public_url(url, True) == "https://naipeuwest.blob.core.windows.net/naip/x.tif"
    assert public_url(url, False) == url


def test_nlcd_grid_is_30m_snapped_around_the_tile() -> None:
    tile = make_grid(100, origin=(400007.0, 4300013.0))
    grid = nlcd_grid(tile, 124.0)
    assert grid.res == (30.0, 30.0) and grid.crs == tile.crs
    assert grid.transform.c % 30 == 0 and grid.transform.f % 30 == 0
    left, bottom, right, top = grid.bounds
    assert left <= 400007 - 124 and right >= 400107 + 124
    assert bottom <= 4300013 - 100 - 124 and top >= 4300013 + 124


def test_quadkeys_of_the_footprint_index() -> None:
    assert quadkey(3, 5, 3) == "213"  # the Bing Maps documentation's example
    area = shapely.box(-87.90, 42.94, -87.89, 42.95)
    keys = quadkeys_for(area, 9)
    assert keys == ["030222210", "030222211"]  # the box straddles lon -87.890625 (x = 131)
    index = [
        FootprintFile(keys[0], "UnitedStates", "u1"),
        FootprintFile(keys[0], "Canada", "u2"),
        FootprintFile("021230030", "UnitedStates", "u3"),
    ]
    assert [f.url for f in files_for(index, area, ["UnitedStates"])] == ["u1"]
    assert [f.url for f in files_for(index, area)] == ["u1", "u2"]
