"""NAIP search and download as the real services answer (issue 17, item 6).

- real recorded Planetary Computer search pages (``tests/fixtures/real/stac_naip``: 0.3 m 2023
  and 0.6 m 2021 items, no ``file:size``, a POST ``next`` token) replayed on loopback through
  the search, :func:`newest_scenes` and the stage's dry run;
- a complex place polygon (thousands of vertices) against a stand-in that answers 500 to an
  ``intersects`` over 8 KB, as pgstac does;
- a scene without a known size: size-checked by a ``HEAD`` request, a truncated file on disk
  fetched again;
- a 0.3 m COG made from a real NAIP crop, read onto the 1 m grid from its overview: the same
  pixels as a local resampling, a fraction of the bytes.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds

from lcip.acquire import naip as naip_mod
from lcip.acquire.place import Options, fetch_naip, find_scenes
from lcip.acquire.stac import Scene, newest_scenes, search, search_geometry
from lcip.config import compose_config
from lcip.io.align import align_raster, grid_for
from lcip.io.raster import Grid, raster_writer
from lcip.stages.acquire_place import acquire_place
from tests.httpserver import LoopbackServer
from tests.markers import needs_realdata
from tests.paths import FIXTURES, REALDATA
from tests.stand_ins import nominatim, recorded_stac_api, stac_item, strict_stac_api

FIXTURES = FIXTURES / "real" / "stac_naip"
CROP = REALDATA / "naip_crops" / "m_3211605_ne_11_060_20200415.tif"
needs_crop = needs_realdata(CROP)
#: The area of the recorded search (its ``bbox``).
BBOX = [-73.21, 43.99, -73.12, 44.05]
OPTS = Options(dry_run=False, timeout=20, retries=2, progress=False, force=False)


def _pages() -> list[dict[str, Any]]:
    return [json.loads((FIXTURES / f"search_page{n}.json").read_text()) for n in (1, 2)]


# --------------------------------------------------------------- recorded Planetary Computer
def test_recorded_pages_page_parse_and_keep_the_newest_scene_per_quad(tmp_path: Path) -> None:
    pages = _pages()
    recorded = [f for p in pages for f in p["response"]["features"]]
    assert not any("file:size" in json.dumps(f) for f in recorded)  # real NAIP items: no size
    with recorded_stac_api(tmp_path, pages) as api:
        items = search(api.url(""), "naip", shapely.box(*BBOX), "2023-01-01/2023-12-31")
        bodies = api.search_bodies  # type: ignore[attr-defined]
    assert [i["id"] for i in items] == [f["id"] for f in recorded]  # both pages, in order
    assert len(bodies) == 2 and "token" not in bodies[0]
    assert bodies[1]["token"] == "next:naip:vt_m_4307307_nw_18_060_20211029"  # the POST next
    scenes = newest_scenes(items, "image", shapely.box(*BBOX))
    # Six quarter quads, each with its 2023 0.3 m scene (not the 2021, 2018 or 2016 ones).
    assert [s.id for s in scenes] == sorted(
        f["id"] for f in recorded if f["id"].endswith("_20231113")
    )
    for s in scenes:
        assert s.size is None and s.href.startswith(api.url("blob/naip/v002/vt/2023/"))
        assert s.href.endswith(s.id[3:] + ".tif")
        assert naip_mod.pixel_size(s.item) == 0.3
        assert naip_mod.read_mode(s.item, 1.0) == "remote"  # 0.3 m: read from the overview
        assert naip_mod.read_mode(s.item, None) == "download"  # native: the whole scene
        rows, cols = s.item["properties"]["proj:shape"]
        expected = math.ceil(rows * 0.3) * math.ceil(cols * 0.3) * 4
        assert naip_mod.output_bytes(s.item, 1.0) == expected  # about 177 MB a scene at 1 m
        assert 150e6 < expected < 200e6
    old = next(f for f in recorded if f["id"] == "vt_m_4407364_sw_18_060_20211029")
    assert naip_mod.read_mode(old, 1.0) == "download"  # 0.6 m: every full-resolution pixel
    assert naip_mod.transfer_bytes(scenes[0].item, 2_000_000_000, "remote", 1.0) == 500_000_000


def test_dry_run_on_recorded_pages_prints_probed_sizes_and_fetches_no_scene(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pages = _pages()
    root = tmp_path / "served"
    sizes = {}
    for n, feature in enumerate(pages[0]["response"]["features"][:6]):
        href = feature["assets"]["image"]["href"]
        path = root / "blob" / href.split("blob.core.windows.net/")[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:  # sparse: the size of a real 0.3 m scene, no bytes written
            f.truncate(1_900_000_000 + n)
        sizes[feature["id"]] = 1_900_000_000 + n
    with recorded_stac_api(root, pages) as api:
        cfg = compose_config(
            [
                "region=place",
                f"paths.root={tmp_path / 'out'}",
                "acquire.dry_run=true",
                "acquire.progress=false",
                "acquire.timeout=20",
                f"region.source.bbox={json.dumps(BBOX)}",
                "region.source.year=2023",
                f"acquire.place.stac.url={api.url('')}",
                "acquire.place.stac.sign=false",
                f"acquire.place.footprints.index_url={api.url('none/dataset-links.csv')}",
            ]
        )
        assert acquire_place(cfg) is None
        out = capsys.readouterr().out
        requests = list(api.requests)
    for scene_id, size in sizes.items():
        line = next(x for x in out.splitlines() if scene_id[3:] + ".tif" in x)
        assert str(size) in line and "remote" in line and "to fetch" in line
        assert "177." in line or "176." in line or "178." in line  # MB on disk at 1 m
    assert "6 tiles: 6 NAIP scenes to fetch at 1 m (6 read remotely" in out
    assert "~2850.0 MB to transfer" in out  # a quarter of 6 x 1.9 GB: the 0.6 m overviews
    blob = [r for r in requests if r[1].startswith("blob/")]
    assert blob and all(r[0] == "HEAD" for r in blob)  # sizes asked, no byte fetched
    assert not (tmp_path / "out" / "regions").exists()


# ------------------------------------------------------------------ pgstac's geometry limit
def _spiky(centre: tuple[float, float], n: int = 4000, spikes: int = 50) -> Any:
    """A star-shaped polygon of ``n`` vertices: radius 0.03-0.07 degrees, ``spikes`` spikes."""
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = 0.05 + 0.02 * np.cos(spikes * theta)
    return shapely.Polygon(np.c_[centre[0] + r * np.cos(theta), centre[1] + r * np.sin(theta)])


def test_complex_place_polygon_is_searched_by_its_hull_and_filtered_exactly(
    tmp_path: Path,
) -> None:
    cx, cy = -87.9, 43.0
    area = _spiky((cx, cy))
    assert len(json.dumps(shapely.geometry.mapping(area))) > 8192
    # A valley between two spikes: inside the hull, outside the place.
    valley = np.pi / 50
    vx, vy = cx + 0.066 * np.cos(valley), cy + 0.066 * np.sin(valley)
    inside = "wi_m_4208701_ne_16_060_20200902"
    outside = "wi_m_4208702_nw_16_060_20200902"
    items = [
        stac_item(inside, "naip", shapely.box(cx - 0.01, cy - 0.01, cx + 0.01, cy + 0.01),
                  "2020-09-02T00:00:00Z", {"image": "a.tif"}),
        stac_item(outside, "naip", shapely.box(vx - 0.001, vy - 0.001, vx + 0.001, vy + 0.001),
                  "2020-09-02T00:00:00Z", {"image": "b.tif"}),
    ]  # fmt: skip
    assert area.convex_hull.intersects(shapely.geometry.shape(items[1]["geometry"]))
    assert not area.intersects(shapely.geometry.shape(items[1]["geometry"]))
    with (
        strict_stac_api(tmp_path, items) as api,
        nominatim(tmp_path, {"Spiky Town, WI": area}) as geo,
    ):
        raw = json.dumps({"collections": ["naip"], "intersects": shapely.geometry.mapping(area)})
        request = urllib.request.Request(
            api.url("search"), raw.encode(), {"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:  # what lcip used to send
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 500
        place = {
            "geocoder_url": geo.url(""),
            "stac": {"url": api.url(""), "collection": "naip", "asset": "image", "sign": False},
        }
        source = {"dataset": "place", "place": "Spiky Town, WI", "year": 2020}
        got_area, scenes = find_scenes(source, place, OPTS, tmp_path / "cache")
        sent = [b for b in api.search_bodies[1:]]  # type: ignore[attr-defined]
    assert [s.id for s in scenes] == [inside]  # found by the hull, filtered by the place
    assert len(sent) == 1 and len(json.dumps(sent[0]["intersects"])) <= 4000
    assert shapely.geometry.shape(sent[0]["intersects"]).covers(got_area.geometry)


def test_search_geometry_is_small_and_covers_the_area() -> None:
    area = _spiky((-100.0, 40.0), n=6000)
    small = shapely.box(0, 0, 1, 1)
    assert search_geometry(small) is small  # a simple area is sent as it is
    hull = search_geometry(area)
    assert hull.covers(area) and len(json.dumps(shapely.geometry.mapping(hull))) <= 4000
    assert hull.area < area.envelope.area  # tighter than the envelope
    envelope = search_geometry(area, max_bytes=200)  # nothing but a box fits
    assert envelope.covers(area) and len(envelope.exterior.coords) == 5


# -------------------------------------------------------------- sizes, truncation, overviews
def _cog_of_crop(dst: Path, factor: int) -> tuple[Path, Any]:
    """The real 0.6 m crop (mirrored 3 x 3) at 0.6 / ``factor`` m as a COG with overviews."""
    with rasterio.open(CROP) as src:
        data, t, crs = src.read(), src.transform, src.crs
    row = np.concatenate([data, data[:, :, ::-1], data], 2)
    tiled = np.concatenate([row, row[:, ::-1], row], 1)
    up = tiled.repeat(factor, 1).repeat(factor, 2)
    res = 0.6 / factor
    grid = Grid(crs, Affine(res, 0, round(t.c), 0, -res, round(t.f)), up.shape[1], up.shape[2])
    dst.parent.mkdir(parents=True, exist_ok=True)
    with raster_writer(
        dst, grid, 4, "uint8", cog=True, overview_resampling=Resampling.average
    ) as w:
        w.write(up)
    return dst, shapely.box(*transform_bounds(crs, "EPSG:4326", *grid.bounds))


def _scene(server: LoopbackServer, name: str, footprint: Any, gsd: float | None) -> Scene:
    props: dict[str, Any] = {"datetime": "2020-04-15T00:00:00Z"}
    if gsd is not None:
        props["gsd"] = gsd
    item = {"id": name, "properties": props, "assets": {"image": {"href": server.url(name)}}}
    return Scene(name, props["datetime"], server.url(name), None, footprint, item)


PLACE = {"resolution": 1.0, "stac": {"sign": False, "read": "auto"}}


@needs_crop
def test_unknown_size_is_probed_and_a_truncated_scene_is_fetched_again(tmp_path: Path) -> None:
    served, footprint = _cog_of_crop(tmp_path / "served" / "scene.tif", 1)
    tile = tmp_path / "tile"
    with LoopbackServer(served.parent) as server:
        scene = _scene(server, "scene.tif", footprint, None)  # no gsd: downloaded whole
        naip = fetch_naip(scene, tile, PLACE, OPTS)
        assert ("HEAD", "scene.tif", None) in server.requests  # the size, asked before
        native = tile / "naip_native.tif"
        assert native.read_bytes() == served.read_bytes()
        assert Grid.of(naip).res == (1.0, 1.0)
        # A scene cut short on disk (an old run, a full disk) is checked and fetched again.
        with open(native, "r+b") as f:
            f.truncate(served.stat().st_size // 2)
        server.reset_counters()
        fetch_naip(scene, tile, PLACE, OPTS)
        assert native.read_bytes() == served.read_bytes()
        assert server.bytes_served >= served.stat().st_size // 2
        assert not list(tile.glob("*.part"))
        # Whole and resampled from it: nothing asked at all.
        server.reset_counters()
        before = naip.stat().st_mtime_ns
        fetch_naip(scene, tile, PLACE, OPTS)
        assert server.requests == [] and naip.stat().st_mtime_ns == before


@needs_crop
def test_fine_scene_is_read_from_its_overview_onto_the_1m_grid(tmp_path: Path) -> None:
    served, footprint = _cog_of_crop(tmp_path / "served" / "scene.tif", 2)  # 0.3 m
    with rasterio.open(served) as src:
        assert src.res == pytest.approx((0.3, 0.3)) and src.overviews(1)[0] == 2
    local = align_raster(served, tmp_path / "local.tif", grid_for(served), "imagery")
    tile = tmp_path / "tile"
    with LoopbackServer(served.parent) as server:
        scene = _scene(server, "scene.tif", footprint, 0.3)
        naip = fetch_naip(scene, tile, PLACE, OPTS)
        size = served.stat().st_size
        assert 0 < server.bytes_served < 0.5 * size  # the 0.6 m overview, not the 0.3 m data
        assert not (tile / "naip_native.tif").exists()
        with rasterio.open(naip) as got, rasterio.open(local) as ref:
            assert (got.crs, got.transform, got.shape) == (ref.crs, ref.transform, ref.shape)
            a, b = got.read().astype(float), ref.read().astype(float)
        assert np.abs(a - b).mean() < 2.0 and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
        server.reset_counters()  # a rerun: the provenance names the same scene, no request
        fetch_naip(scene, tile, PLACE, OPTS)
        assert server.requests == []
        # ``download`` forces the whole file, kept as naip_native.tif.
        forced = {"resolution": 1.0, "stac": {"sign": False, "read": "download"}}
        fetch_naip(scene, tmp_path / "tile2", forced, OPTS)
        assert (tmp_path / "tile2" / "naip_native.tif").read_bytes() == served.read_bytes()
