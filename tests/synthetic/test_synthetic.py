"""Tests of the synthetic region generator (lcip.synthetic)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import osmnx as ox
import pytest
import rasterio
from affine import Affine
from rasterio.features import rasterize

from lcip import __version__
from lcip.classes import NLCD_CODES
from lcip.errors import ConfigError
from lcip.io.manifest import Manifest
from lcip.io.raster import Grid, read_on_grid
from lcip.synthetic import (
    NLCD_CONFUSIONS,
    RegionConfig,
    SyntheticRegion,
    block_fractions,
    default_splits,
    generate_region,
    region_layout,
    synthesize,
)

TINY = RegionConfig(name="tiny", seed=7, tiles_x=2, tiles_y=2, tile_size=128)
LAYERS = {"naip", "lc", "nlcd", "nlcd_30m", "osm", "buildings"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_region(TINY, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def default_region() -> SyntheticRegion:
    return synthesize(RegionConfig())


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def _region_lc(manifest: Manifest, cfg: RegionConfig) -> np.ndarray:
    """Mosaic of the lc tiles (region grid)."""
    ts = cfg.tile_size
    out = np.zeros((cfg.tiles_y * ts, cfg.tiles_x * ts), np.uint8)
    for tile in manifest:
        r, c = (int(v) for v in tile.tile_id[1:].split("c"))
        out[r * ts : (r + 1) * ts, c * ts : (c + 1) * ts] = _read(tile.layer("lc"))[0]
    return out


# ---- configuration --------------------------------------------------------------------


def test_default_splits() -> None:
    assert default_splits(1) == ["train"]
    assert default_splits(2) == ["train", "test"]
    assert default_splits(3) == ["train", "val", "test"]
    assert default_splits(4) == ["train", "val", "test", "test"]
    assert default_splits(6) == ["train"] * 3 + ["val"] + ["test"] * 2
    s9 = default_splits(9)
    assert (s9.count("train"), s9.count("val"), s9.count("test")) == (4, 2, 3)
    assert RegionConfig().tile_splits() == default_splits(6)


def test_custom_splits() -> None:
    cfg = RegionConfig(tiles_x=2, tiles_y=1, splits={"r0c0": "test", 1: "train"})
    assert cfg.tile_splits() == ["test", "train"]
    assert RegionConfig(tiles_x=2, tiles_y=1, splits=["val", "test"]).tile_splits() == [
        "val",
        "test",
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tile_size": 8},
        {"tiles_x": 0},
        {"nlcd_offset_m": (30, 0)},
        {"nlcd_error_rate": 1.5},
        {"splits": ["train"]},
        {"splits": {0: "train"}},
        {"crs": "EPSG:4326"},
        {"crs": "not a crs"},
    ],
)
def test_bad_config(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        RegionConfig(**kwargs)


def test_layout_cuts_nlcd_blocks_at_tile_edges() -> None:
    layout = region_layout(TINY)
    left, bottom, right, top = layout.region.bounds
    n_left, n_bottom, n_right, n_top = layout.nlcd.bounds
    assert min(left - n_left, n_top - top, n_right - right, bottom - n_bottom) >= 150
    for grid in layout.tiles.values():
        x0, y0 = grid.transform.c, grid.transform.f
        assert (x0 - n_left) % 30 != 0 and (n_top - y0) % 30 != 0
    assert layout.canvas.bounds == layout.nlcd.bounds


# ---- written rasters ------------------------------------------------------------------


def test_manifest(tiny: Path) -> None:
    m = Manifest.read(tiny)
    assert [t.tile_id for t in m] == ["r0c0", "r0c1", "r1c0", "r1c1"]
    assert [t.split for t in m] == default_splits(4)
    assert set(m.layer_names) == LAYERS
    m.check_files(LAYERS)
    for t in m:
        assert t.crs == "EPSG:32618"
        assert t.layer("nlcd_30m") == tiny.parent / "nlcd_30m.tif"
        assert t.layer("osm") == tiny.parent / "osm.xml"
        assert t.layer("buildings") == tiny.parent / "buildings.geojson"
        assert t.bounds == pytest.approx(Grid.of(t.layer("naip")).bounds)
    assert not [p for p in tiny.parent.rglob(".*")], "temporary files left behind"


def test_tile_rasters(tiny: Path) -> None:
    x0, y0 = TINY.origin
    ts = TINY.tile_size
    for t in Manifest.read(tiny):
        r, c = (int(v) for v in t.tile_id[1:].split("c"))
        expected = Affine(1.0, 0.0, x0 + c * ts, 0.0, -1.0, y0 - r * ts)
        for layer, count in (("naip", 4), ("lc", 1), ("nlcd", 1)):
            with rasterio.open(t.layer(layer)) as src:
                assert src.crs.to_epsg() == 32618
                assert src.transform.almost_equals(expected)
                assert (src.count, src.height, src.width) == (count, ts, ts)
                assert src.dtypes == ("uint8",) * count
                assert src.tags()["generator"] == "lcip.synthetic"
                assert src.tags()["seed"] == str(TINY.seed)
                assert src.tags()["lcip_version"] == __version__
                data = src.read()
                if layer == "naip":
                    assert src.nodata is None
                    assert src.descriptions == ("red", "green", "blue", "nir")
                    assert data.std() > 10
                else:
                    assert src.nodata == 0
                    assert src.colormap(1)[1][3] == 255
            if layer == "lc":
                assert set(np.unique(data)) <= {1, 2, 3, 4, 5, 6}
            if layer == "nlcd":
                assert set(np.unique(data)) <= set(NLCD_CODES) - {0}


def test_nlcd_30m_raster(tiny: Path) -> None:
    layout = region_layout(TINY)
    for name in ("nlcd_30m.tif", "nlcd_30m_clean.tif"):
        with rasterio.open(tiny.parent / name) as src:
            assert Grid(src.crs, src.transform, src.height, src.width).same_as(layout.nlcd)
            assert src.res == (30.0, 30.0)
            assert src.nodata == 0
            assert src.colormap(1)[11][:3] == (70, 107, 159)
            assert set(np.unique(src.read(1))) <= set(NLCD_CODES) - {0}


def test_tile_nlcd_is_30m_nlcd_on_tile_grid(tiny: Path) -> None:
    for t in Manifest.read(tiny):
        grid = Grid.of(t.layer("nlcd"))
        on_grid = read_on_grid(t.layer("nlcd_30m"), grid, bands=1)
        np.testing.assert_array_equal(on_grid, _read(t.layer("nlcd"))[0])


def _check_nlcd_rules(frac: np.ndarray, clean: np.ndarray) -> dict[int, int]:
    """Independent check of the NLCD definitions on blocks; returns how many were checked."""
    water = frac[..., 1]
    imp = frac[..., 5] + frac[..., 6]
    checked: dict[int, int] = {}
    for code, sel in (
        (11, water >= 0.75),
        (24, imp >= 0.8),
        (23, (imp >= 0.5) & (imp < 0.8)),
        (22, (imp >= 0.2) & (imp < 0.5) & (water < 0.75)),
    ):
        np.testing.assert_array_equal(clean[sel], code, err_msg=f"blocks that must be {code}")
        checked[code] = int(sel.sum())
    low = (imp < 0.05) & (water < 0.75) & (frac[..., 4] < 0.5)
    forest = low & (frac[..., 2] > 0.6)
    assert set(np.unique(clean[forest])) <= {41, 42, 43, 90, 21}
    herb = low & (frac[..., 3] > 0.6)
    assert set(np.unique(clean[herb])) <= {81, 82, 71, 52, 95, 21}
    return checked


def test_nlcd_follows_definitions(tiny: Path) -> None:
    m = Manifest.read(tiny)
    layout = region_layout(TINY)
    lc = _region_lc(m, TINY)
    final = _read(tiny.parent / "nlcd_30m.tif")[0]
    clean = _read(tiny.parent / "nlcd_30m_clean.tif")[0]
    # the 30 m blocks lying wholly inside the region
    b0r, b0c = -(-layout.row_off // 30), -(-layout.col_off // 30)
    b1r, b1c = (layout.row_off + lc.shape[0]) // 30, (layout.col_off + lc.shape[1]) // 30
    r0, c0 = b0r * 30 - layout.row_off, b0c * 30 - layout.col_off
    sub = lc[r0 : r0 + (b1r - b0r) * 30, c0 : c0 + (b1c - b0c) * 30]
    frac = block_fractions(sub)
    fin, cln = final[b0r:b1r, b0c:b1c], clean[b0r:b1r, b0c:b1c]
    # unperturbed blocks: the published code is the definition's code
    same = fin == cln
    checked = _check_nlcd_rules(frac[same], fin[same])
    assert sum(checked.values()) > 0
    # perturbed blocks got a plausible neighbouring code
    for a, b in zip(cln[~same], fin[~same], strict=True):
        assert b in NLCD_CONFUSIONS[int(a)]
    rate = float((final != clean).mean())
    assert 0.02 < rate < 0.15


def test_default_region(default_region: SyntheticRegion) -> None:
    reg = default_region
    lay = reg.layout
    h, w = lay.region.shape
    assert set(np.unique(reg.region_lc)) == {1, 2, 3, 4, 5, 6}
    # NLCD of the whole canvas follows the definitions and has an urban-to-rural gradient
    checked = _check_nlcd_rules(block_fractions(reg.lc), reg.nlcd_clean)
    assert all(n > 0 for n in checked.values()), checked
    b = (
        slice(lay.row_off // 30, (lay.row_off + h) // 30),
        slice(lay.col_off // 30, (lay.col_off + w) // 30),
    )
    # every NLCD class but perennial ice/snow occurs in the region
    assert set(np.unique(reg.nlcd_clean[b])) == set(NLCD_CODES) - {0, 12}
    assert reg.naip.shape == (4, h, w) and reg.naip.dtype == np.uint8


def test_colour_alone_is_not_enough(default_region: SyntheticRegion) -> None:
    reg = default_region
    # every 5th pixel (in both directions) is plenty for class means and accuracy
    y = reg.region_lc[::5, ::5].ravel()
    x = reg.naip[:, ::5, ::5].reshape(4, -1).T.astype(np.float32)
    means = np.stack([x[y == c].mean(0) for c in range(1, 7)])
    # class means are distinct and physically plausible ...
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert dist[~np.eye(6, dtype=bool)].min() > 10
    water, tree, low = means[0], means[1], means[2]
    assert water[3] < 50 and tree[3] > 2 * tree[0] and low[3] > 1.5 * low[0]
    # ... but single pixels overlap: a nearest-class-mean classifier is well below 90 %
    pred = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1) + 1
    acc = float((pred == y).mean())
    assert 0.3 < acc < 0.9, acc


# ---- determinism ----------------------------------------------------------------------


def test_seed_determinism(tiny: Path, tmp_path: Path) -> None:
    again = generate_region(TINY, tmp_path / "again").parent
    ref_files = sorted(p.relative_to(tiny.parent) for p in tiny.parent.rglob("*.tif"))
    assert len(ref_files) == 2 + 3 * 4
    for rel in ref_files:
        np.testing.assert_array_equal(_read(tiny.parent / rel), _read(again / rel))
    for name in ("osm.xml", "buildings.geojson"):
        assert (tiny.parent / name).read_bytes() == (again / name).read_bytes()
    # another seed, written over the same folder: different data, files replaced
    other = RegionConfig(name="tiny", seed=8, tiles_x=2, tiles_y=2, tile_size=128)
    generate_region(other, again)
    assert not np.array_equal(_read(tiny.parent / "lc/r0c0.tif"), _read(again / "lc/r0c0.tif"))
    assert not np.array_equal(_read(tiny.parent / "naip/r1c1.tif"), _read(again / "naip/r1c1.tif"))
    assert (tiny.parent / "osm.xml").read_bytes() != (again / "osm.xml").read_bytes()
    assert json.loads((again / "region.json").read_text())["config"]["seed"] == 8
    assert not [p for p in again.rglob(".*")], "temporary files left behind"


# ---- vectors --------------------------------------------------------------------------


def _canvas_lonlat_bounds() -> tuple[float, float, float, float]:
    from pyproj import Transformer

    left, bottom, right, top = region_layout(TINY).canvas.bounds
    tr = Transformer.from_crs(TINY.crs, "EPSG:4326", always_xy=True)
    lon, lat = tr.transform([left, right, left, right], [bottom, bottom, top, top])
    return min(lon), min(lat), max(lon), max(lat)


def test_osm_xml_reads_with_osmnx(tiny: Path) -> None:
    path = tiny.parent / "osm.xml"
    graph = ox.graph_from_xml(path, simplify=False, retain_all=True)
    assert graph.number_of_nodes() > 0
    highways = {d.get("highway") for _, _, d in graph.edges(data=True)}
    assert {"primary", "residential"} <= highways
    lon0, lat0, lon1, lat1 = _canvas_lonlat_bounds()
    for _, d in graph.nodes(data=True):
        assert lon0 - 1e-3 < d["x"] < lon1 + 1e-3 and lat0 - 1e-3 < d["y"] < lat1 + 1e-3
    water = ox.features_from_xml(path, tags={"natural": "water"})
    assert len(water) > 0
    assert set(water.geom_type) <= {"Polygon", "MultiPolygon"}
    river = ox.features_from_xml(path, tags={"waterway": "river"})
    assert len(river) == 1


def test_osm_roads_align_with_truth(tiny: Path) -> None:
    graph = ox.graph_from_xml(tiny.parent / "osm.xml", simplify=False, retain_all=True)
    edges = ox.graph_to_gdfs(graph, nodes=False)
    roads = edges[edges["highway"].notna()].to_crs(TINY.crs)
    m = Manifest.read(tiny)
    hits = total = 0
    for t in m:
        grid = Grid.of(t.layer("lc"))
        mask = rasterize(
            [(g, 1) for g in roads.geometry],
            out_shape=grid.shape,
            transform=grid.transform,
            dtype="uint8",
        )
        lc = _read(t.layer("lc"))[0]
        hits += int(((mask == 1) & np.isin(lc, [6, 2])).sum())
        total += int(mask.sum())
    assert total > 100 and hits / total > 0.9


def test_buildings_geojson(tiny: Path) -> None:
    gdf = gpd.read_file(tiny.parent / "buildings.geojson")
    assert gdf.crs.to_epsg() == 4326
    assert len(gdf) > 10 and set(gdf.geom_type) == {"Polygon"}
    stats = json.loads((tiny.parent / "region.json").read_text())["stats"]
    assert 0.75 * stats["buildings"] < len(gdf) < stats["buildings"]
    utm = gdf.to_crs(TINY.crs)
    inside = total = 0
    for t in Manifest.read(tiny):
        grid = Grid.of(t.layer("lc"))
        mask = rasterize(
            [(g, 1) for g in utm.geometry],
            out_shape=grid.shape,
            transform=grid.transform,
            dtype="uint8",
        )
        lc = _read(t.layer("lc"))[0]
        inside += int(((mask == 1) & (lc == 5)).sum())
        total += int(mask.sum())
    assert total > 200 and inside / total > 0.6


def test_region_json(tiny: Path) -> None:
    meta = json.loads((tiny.parent / "region.json").read_text())
    assert meta["config"]["seed"] == TINY.seed
    assert meta["lcip_version"] == __version__
    assert math.isclose(sum(meta["stats"]["lc_fraction"].values()), 1.0, abs_tol=1e-3)
