"""Map products (lcip.products): mosaics, confidence, class areas, provenance and reruns.

The predictions are made by a small seeded generator written with lcip's own prediction
writers (:func:`lcip.inference.predict.map_writers`): COGs with colour tables, tags and NaN / 255
nodata, in three tiles, two in UTM zone 18 side by side and one in zone 17 just across the
zone boundary (so the mosaic warps it).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import torch
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.windows import Window
from scipy.ndimage import zoom
from shapely.geometry import Polygon, box

from lcip.classes import CHESAPEAKE4, IGNORE_INDEX
from lcip.errors import ConfigError, DataError
from lcip.inference.predict import map_tags, map_writers, output_paths, write_maps
from lcip.io.manifest import Manifest, Tile
from lcip.io.provenance import PROVENANCE_TAG, provenance, read_provenance
from lcip.io.raster import BLOCK_SIZE, Grid, write_raster
from lcip.products import make_products
from lcip.products.areas import own_footprints, slug
from lcip.products.confidence import confidence
from lcip.products.mosaic import CHUNK, chunk_windows, mosaic_grid, placement

SCHEME = CHESAPEAKE4
C = SCHEME.num_classes
UTM18, UTM17 = CRS.from_epsg(32618), CRS.from_epsg(32617)
PARAMS = {"checkpoint": "fake.ckpt", "checkpoint_sha256": "ab" * 32, "loss": "qr"}


def utm_origin(lon: float, lat: float, crs: CRS) -> tuple[float, float]:
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    return float(round(x)), float(round(y))


def tile_grids() -> dict[str, Grid]:
    """Three 1 m tiles: a and b side by side in zone 18, c in zone 17 just west of 78 W."""
    ax, ay = utm_origin(-77.9985, 40.0, UTM18)
    cx, cy = utm_origin(-78.0035, 40.0005, UTM17)
    return {
        "a": Grid(UTM18, Affine(1, 0, ax, 0, -1, ay), 150, 140),
        "b": Grid(UTM18, Affine(1, 0, ax + 140, 0, -1, ay - 20), 130, 120),
        "c": Grid(UTM17, Affine(1, 0, cx, 0, -1, cy), 120, 110),
    }


def smooth_logits(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Class logits that vary smoothly: class patches tens of pixels wide."""
    coarse = rng.normal(size=(C, shape[0] // 16 + 2, shape[1] // 16 + 2)) * scale
    fine = zoom(coarse, (1, 16, 16), order=1)
    return fine[:, : shape[0], : shape[1]].astype(np.float32)


def write_tile_outputs(
    root: Path, tile_id: str, grid: Grid, seed: int, params: dict[str, object] = PARAMS
) -> dict[str, Path]:
    """One tile's imagery, prior and q/r maps, written as lcip-predict writes them."""
    rng = np.random.default_rng(seed)
    image = rng.integers(1, 255, size=(4, *grid.shape), dtype=np.uint8)
    image[:, :6] = 0  # NAIP's black fill outside the flight line
    naip = write_raster(root / "naip" / f"{tile_id}.tif", image, grid)
    prior = torch.softmax(torch.from_numpy(smooth_logits(rng, grid.shape, 2.0)), 0).numpy()
    prior[:, :6] = np.nan
    prior_path = write_raster(
        root / "prior" / f"{tile_id}.tif", prior.astype(np.float32), grid, nodata=float("nan")
    )
    valid = torch.ones(grid.shape, dtype=torch.bool)
    valid[:6] = False
    valid[-10:, -25:] = False  # a nodata corner
    paths = output_paths(root / "predictions", tile_id)
    record = provenance(params, {"image": naip, "prior": prior_path})
    tags = map_tags(params, record, tile_id)
    window = Window(0, 0, grid.width, grid.height)
    for output, scale in (("q", 1.5), ("r", 3.0)):
        log_p = torch.log_softmax(torch.from_numpy(smooth_logits(rng, grid.shape, scale)), 0)
        with map_writers(paths, output, grid, SCHEME, {**tags, "output": output}) as (p, c):
            write_maps(p, c, log_p, valid, window)
    return {"naip": naip, "prior_nlcd": prior_path, **paths}


def make_predictions(root: Path, seeds: tuple[int, int, int] = (1, 2, 3)) -> Manifest:
    """The predictions manifest of the three fake tiles, written and read back."""
    tiles = []
    for (tile_id, grid), seed in zip(tile_grids().items(), seeds, strict=True):
        layers = write_tile_outputs(root, tile_id, grid, seed)
        tiles.append(Tile(tile_id, "test", grid.crs.to_string(), grid.bounds, layers))
    return Manifest.read(Manifest(tuple(tiles)).write(root / "predictions" / "manifest.csv"))


def lonlat(crs: CRS, x: float, y: float) -> tuple[float, float]:
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    return float(lon), float(lat)


def make_zones(path: Path) -> Path:
    """Zones in EPSG:4326: one across a and b, one across the UTM zone boundary (a and c),
    one partly outside every tile, one outside all of them; ids in a field named GEOID."""
    g = tile_grids()
    ga, gb, gc = g["a"].bounds, g["b"].bounds, g["c"].bounds

    def poly18(*pts: tuple[float, float]) -> Polygon:
        return Polygon([lonlat(UTM18, x, y) for x, y in pts])

    def poly17(*pts: tuple[float, float]) -> Polygon:
        return Polygon([lonlat(UTM17, x, y) for x, y in pts])

    across_ab = poly18(
        (ga[0] + 60.3, ga[1] + 30.7),
        (gb[0] + 70.2, gb[1] + 20.1),
        (gb[0] + 50.5, ga[3] - 10.4),
        (ga[0] + 80.9, ga[3] - 5.2),
    )
    cx, cy = gc[2] - 40, (gc[1] + gc[3]) / 2
    _, ay18 = Transformer.from_crs(UTM17, UTM18, always_xy=True).transform(cx, cy)
    across_ac = Polygon(
        [
            lonlat(UTM17, cx, cy - 30.3),
            lonlat(UTM18, ga[0] + 45.7, ay18 - 35.1),
            lonlat(UTM18, ga[0] + 30.2, ay18 + 28.8),
            lonlat(UTM17, cx + 5.5, cy + 33.3),
        ]
    )
    partly_out = poly18(
        (gb[2] - 30.5, gb[1] + 40.2),
        (gb[2] + 60, gb[1] + 40.2),
        (gb[2] + 60, gb[3] + 50),
        (gb[2] - 30.5, gb[3] + 50),
    )
    outside = poly17((gc[0] - 500, gc[1]), (gc[0] - 400, gc[1]), (gc[0] - 400, gc[3]))
    zones = gpd.GeoDataFrame(
        {"GEOID": ["z_ab", "z_ac", "z_out", "z_none"], "name": ["ab", "ac", "out", "none"]},
        geometry=[across_ab, across_ac, partly_out, outside],
        crs="EPSG:4326",
    )
    zones.to_file(path, driver="GeoJSON")
    return path


def files_state(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("products")
    predictions = make_predictions(root / "run")
    zones = make_zones(root / "tracts.geojson")
    out = root / "outputs" / "maps" / "fake"
    products = make_products(predictions, SCHEME, out, zones=zones, zones_id="GEOID", mosaic=True)
    return predictions, zones, products


def read_tile(path: Path) -> tuple[np.ndarray, Grid]:
    with rasterio.open(path) as src:
        return src.read(), Grid(src.crs, src.transform, src.height, src.width)


def test_grid_takes_the_majority_crs_and_aligns_its_tiles() -> None:
    grids = tile_grids()
    grid = mosaic_grid(list(grids.values()))
    assert grid.crs == UTM18 and grid.res == (1.0, 1.0)
    assert placement(grid, grids["a"]) is not None and placement(grid, grids["b"]) is not None
    assert placement(grid, grids["c"]) is None  # another zone: warped
    forced = mosaic_grid(list(grids.values()), UTM17)
    assert forced.crs == UTM17 and placement(forced, grids["c"]) is not None


def test_class_vrt_and_cog_show_the_tiles_with_colours(made: tuple) -> None:
    predictions, _, products = made
    assert {"class_vrt", "class_cog", "prob_r_vrt", "prob_q_cog", "confidence_cog"} <= set(products)
    rng = np.random.default_rng(0)
    with rasterio.open(products["class_vrt"]) as vrt, rasterio.open(products["class_cog"]) as cog:
        assert vrt.crs == UTM18 and vrt.res == (1.0, 1.0) and vrt.nodata == IGNORE_INDEX
        for src in (vrt, cog):
            cmap = src.colormap(1)
            for k, color in enumerate(SCHEME.colors):
                assert cmap[k][:3] == color
        whole = vrt.read(1)
        assert np.array_equal(whole, cog.read(1))  # the COG is the VRT, written out
        assert (cog.crs, cog.transform) == (vrt.crs, vrt.transform)
        assert cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and cog.overviews(1)
        assert whole.max() < C or (whole == IGNORE_INDEX).any()
        for tile in predictions:
            data, grid = read_tile(tile.layer("r_class"))
            rows = rng.integers(0, grid.height, 300)
            cols = rng.integers(0, grid.width, 300)
            xs, ys = rasterio.transform.xy(grid.transform, rows, cols)
            if grid.crs != vrt.crs:
                xs, ys = Transformer.from_crs(grid.crs, vrt.crs, always_xy=True).transform(xs, ys)
            vr, vc = rasterio.transform.rowcol(vrt.transform, xs, ys)
            found = whole[np.asarray(vr), np.asarray(vc)]
            expected = data[0, rows, cols]
            agree = (found == expected).mean()
            # same CRS: exact; the warped tile: nearest neighbour, a few pixels may round apart
            assert agree == 1.0 if grid.crs == vrt.crs else agree > 0.9, (tile.tile_id, agree)


def test_probability_vrt_has_class_bands_equal_to_the_tiles(made: tuple) -> None:
    predictions, _, products = made
    tile = predictions.tile("b")
    data, grid = read_tile(tile.layer("q_prob"))
    with rasterio.open(products["prob_q_vrt"]) as vrt:
        assert vrt.count == C and list(vrt.descriptions) == list(SCHEME.classes)
        window = placement(Grid(vrt.crs, vrt.transform, vrt.height, vrt.width), grid)
        assert window is not None
        np.testing.assert_array_equal(vrt.read(window=window), data)  # NaN where NaN
    with rasterio.open(products["prob_r_cog"]) as cog:
        assert cog.count == C and math.isnan(cog.nodata)


def test_confidence_is_the_max_probability_of_r(made: tuple, tmp_path: Path) -> None:
    predictions, _, products = made
    out = products["class_vrt"].parent
    for tile in predictions:
        prob, grid = read_tile(tile.layer("r_prob"))
        conf, cgrid = read_tile(out / "confidence" / f"{tile.tile_id}.tif")
        assert cgrid.same_as(grid)
        expected = np.where(np.isnan(prob).any(0), np.nan, np.nan_to_num(prob).max(axis=0))
        np.testing.assert_array_equal(conf[0], expected.astype(np.float32))
        assert np.isnan(conf[0, :6]).all() and (conf[0, 6:-10] >= 1 / C - 1e-6).all()
    # entropy, the other measure, against its definition
    p = np.random.default_rng(1).dirichlet(np.ones(C), size=(7, 9)).transpose(2, 0, 1)
    p[:, 0, 0] = np.nan
    ent = confidence(p, "entropy")
    ref = -(p * np.log(p)).sum(0) / np.log(C)
    np.testing.assert_allclose(ent[1:], ref[1:], rtol=1e-6)
    assert np.isnan(ent[0, 0])
    with pytest.raises(ConfigError, match=r"map.confidence='margin'"):
        confidence(p, "margin")


def supersampled_areas(
    class_path: Path, own: Polygon, zone: Polygon | None, factor: int = 10
) -> np.ndarray:
    """Square metres per class of a tile within a polygon, by rasterizing the polygon on a
    grid ``factor`` times finer than the tile's and counting with numpy (independent of
    exactextract)."""
    data, grid = read_tile(class_path)
    fine = grid.transform * Affine.scale(1 / factor)
    shape = (grid.height * factor, grid.width * factor)
    geom = own if zone is None else zone.intersection(own)
    if geom.is_empty:
        return np.zeros(C)
    mask = rasterize([(geom, 1)], out_shape=shape, transform=fine, fill=0, dtype="uint8") == 1
    classes = np.repeat(np.repeat(data[0], factor, axis=0), factor, axis=1)
    counts = np.bincount(classes[mask], minlength=256)[:C]
    return counts * abs(fine.a * fine.e)


def test_zonal_areas_equal_an_independent_count(made: tuple) -> None:
    predictions, zones_path, products = made
    zones = gpd.read_file(zones_path)
    table = pd.read_csv(products["areas_zones_csv"])
    assert list(table["GEOID"]) == list(zones["GEOID"])
    grids = {t.tile_id: Grid.of(t.layer("r_class")) for t in predictions}
    own = own_footprints(grids)
    for i, zone_id in enumerate(zones["GEOID"]):
        expected = np.zeros(C)
        for tile in predictions:
            zone = zones.geometry.to_crs(grids[tile.tile_id].crs).iloc[i]
            expected += supersampled_areas(tile.layer("r_class"), own[tile.tile_id], zone)
        found = np.array([table.loc[i, f"{slug(c)}_ha"] for c in SCHEME.classes]) * 1e4
        if zone_id == "z_none":
            assert found.sum() == 0 and np.isnan(table.loc[i, "water_pct"])
            continue
        assert expected.sum() > 2000  # m2: each zone covers a good part of a tile
        np.testing.assert_allclose(found, expected, rtol=1e-3, atol=0.5)
        assert table.loc[i, "mapped_ha"] * 1e4 == pytest.approx(expected.sum(), rel=1e-3)
        pct = table.loc[i, [f"{slug(c)}_pct" for c in SCHEME.classes]]
        assert pct.sum() == pytest.approx(100, abs=1e-3)
    # the zone across the UTM boundary has parts in tiles a and c
    for t in ("a", "c"):
        part = zones.iloc[[1]].to_crs(grids[t].crs).geometry.iloc[0].intersection(own[t])
        assert part.area > 500, t


def test_tile_and_total_areas_sum_to_the_mapped_area(made: tuple) -> None:
    predictions, _, products = made
    tiles = pd.read_csv(products["areas_tiles_csv"])
    total = pd.read_csv(products["areas_total_csv"])
    valid_m2 = {}
    for tile in predictions:
        data, grid = read_tile(tile.layer("r_class"))
        valid_m2[tile.tile_id] = float((data[0] != IGNORE_INDEX).sum()) * grid.res[0] * grid.res[1]
        counts = np.bincount(data[0].ravel(), minlength=256)[:C]
        row = tiles.set_index("tile_id").loc[tile.tile_id]
        np.testing.assert_allclose(
            [row[f"{slug(c)}_ha"] * 1e4 for c in SCHEME.classes], counts, rtol=1e-9, atol=1e-3
        )
    assert list(tiles["tile_id"]) == ["a", "b", "c"]
    assert tiles["mapped_ha"].to_numpy() * 1e4 == pytest.approx(list(valid_m2.values()))
    by_class = total.set_index("class")["ha"]
    assert by_class["all"] == pytest.approx(by_class[list(SCHEME.classes)].sum(), rel=1e-9)
    assert by_class["all"] * 1e4 == pytest.approx(sum(valid_m2.values()), rel=1e-9)
    assert total.set_index("class")["pct"][list(SCHEME.classes)].sum() == pytest.approx(100)
    # the GeoPackage holds the same tables, with geometries
    layers = {name for name, _ in pyogrio.list_layers(products["areas_gpkg"])}
    assert layers == {"tiles", "zones", "total"}
    gz = gpd.read_file(products["areas_gpkg"], layer="zones")
    zt = pd.read_csv(products["areas_zones_csv"])
    assert gz.crs.to_epsg() == 4326 and list(gz["GEOID"]) == list(zt["GEOID"])
    np.testing.assert_allclose(gz["mapped_ha"], zt["mapped_ha"])
    gt = gpd.read_file(products["areas_gpkg"], layer="tiles")
    assert gt.crs == UTM18 and gt.geometry.area.sum() == pytest.approx(
        sum(g.height * g.width for g in tile_grids().values()), rel=1e-3
    )


def test_overlapping_tiles_count_once() -> None:
    g = tile_grids()["a"]
    shifted = Grid(g.crs, g.transform * Affine.translation(100, 50), g.height, g.width)
    own = own_footprints({"a": g, "b": shifted})
    assert own["a"].area == g.height * g.width
    overlap = (g.width - 100) * (g.height - 50)
    assert own["b"].area == pytest.approx(g.height * g.width - overlap)
    assert own["a"].intersection(own["b"]).area == pytest.approx(0)
    assert own["b"].union(own["a"]).area == pytest.approx(
        box(*g.bounds).union(box(*shifted.bounds)).area
    )


def test_products_record_what_made_them(made: tuple) -> None:
    predictions, _, products = made
    out = products["class_vrt"].parent
    with rasterio.open(products["class_vrt"]) as src:
        tags = src.tags()
    assert tags["checkpoint_sha256"] == PARAMS["checkpoint_sha256"]
    assert tags["source_predictions"] == str(predictions.path)
    record = json.loads(tags[PROVENANCE_TAG])
    assert record["params"]["scheme"] == "chesapeake4" and record["lcip_version"]
    assert set(record["inputs"]) == {"a", "b", "c"}
    cog = read_provenance(products["class_cog"])
    assert cog is not None and set(cog["inputs"]) == {"vrt"}
    side = json.loads((out / "areas_zones.csv.provenance.json").read_text())
    assert side["params"]["zones_id"] == "GEOID" and "zones" in side["inputs"]
    assert json.loads((out / "index.html.provenance.json").read_text())["params"]["product"]


def test_rerun_rewrites_nothing_and_changed_inputs_rebuild(tmp_path: Path) -> None:
    predictions = make_predictions(tmp_path / "run")
    out = tmp_path / "maps" / "x"
    products = make_products(predictions, SCHEME, out, mosaic=True)
    before = files_state(out)
    assert make_products(predictions, SCHEME, out, mosaic=True) == products
    assert files_state(out) == before  # nothing rewritten
    # tile a's r maps change (a new checkpoint): what shows r rebuilds, q's products do not
    params = {**PARAMS, "checkpoint_sha256": "cd" * 32}
    write_tile_outputs(tmp_path / "run", "a", tile_grids()["a"], 9, params)
    make_products(predictions, SCHEME, out, mosaic=True)
    after = files_state(out)
    changed = {name for name in before if after[name] != before[name]}
    for name in (
        "class.vrt",
        "class.tif",
        "prob_r.vrt",
        "confidence/a.tif",
        "confidence.vrt",
        "areas_tiles.csv",
        "areas_total.csv",
        "areas.gpkg",
        "index.html",
    ):
        assert name in changed, name
    for name in ("confidence/b.tif", "confidence/c.tif", "warped/class/c.tif"):
        assert name not in changed, name
    with rasterio.open(out / "class.vrt") as src:
        assert src.tags()["checkpoint_sha256"] == ",".join(sorted(["ab" * 32, "cd" * 32]))


def test_bad_settings_give_one_line_errors(tmp_path: Path) -> None:
    predictions = make_predictions(tmp_path / "run")
    zones = make_zones(tmp_path / "z.geojson")
    out = tmp_path / "maps"
    with pytest.raises(ConfigError, match=r"map.output='p': must be q or r"):
        make_products(predictions, SCHEME, out, output="p")
    with pytest.raises(ConfigError, match=r"set map.zones_id"):
        make_products(predictions, SCHEME, out, zones=zones)
    with pytest.raises(ConfigError, match=r"map.zones_id='TRACT': no such field .*'GEOID'"):
        make_products(predictions, SCHEME, out, zones=zones, zones_id="TRACT")
    with pytest.raises(DataError, match="zones file does not exist"):
        make_products(predictions, SCHEME, out, zones=tmp_path / "no.gpkg", zones_id="GEOID")
    (tmp_path / "bad.geojson").write_text("{not json")
    with pytest.raises(DataError, match="cannot be read as a vector layer"):
        make_products(predictions, SCHEME, out, zones=tmp_path / "bad.geojson", zones_id="id")
    with pytest.raises(ConfigError, match=r"map.crs='EPSG:999999': not a CRS"):
        make_products(predictions, SCHEME, out, crs="EPSG:999999")
    shutil.rmtree(tmp_path / "run" / "predictions" / "r_class")
    with pytest.raises(DataError, match=r"tile a layer 'r_class' names a missing file"):
        make_products(predictions, SCHEME, out)
    assert not out.exists() or not any(out.iterdir())


def test_chunk_windows_cover_a_grid_once_in_whole_blocks() -> None:
    grid = Grid(UTM18, Affine(1, 0, 0, 0, -1, 0), 1300, 9000)
    seen = np.zeros(grid.shape, np.int64)
    for w in chunk_windows(grid):
        assert w.row_off % BLOCK_SIZE == 0 and w.col_off % BLOCK_SIZE == 0
        assert w.height <= CHUNK[0] and w.width <= CHUNK[1]
        rows, cols = w.toslices()
        seen[rows, cols] += 1
    assert (seen == 1).all()


def test_overlapping_and_misaligned_tiles(tmp_path: Path) -> None:
    a = tile_grids()["a"]
    grids = {
        "a": a,
        "s": Grid(a.crs, a.transform * Affine.translation(60, 40), a.height, a.width),  # overlaps a
        "h": Grid(a.crs, a.transform * Affine.translation(a.width + 0.5, 0), 50, 60),  # half px off
    }
    tiles = []
    for seed, (tile_id, grid) in enumerate(grids.items()):
        layers = write_tile_outputs(tmp_path / "run", tile_id, grid, seed)
        tiles.append(Tile(tile_id, "test", grid.crs.to_string(), grid.bounds, layers))
    predictions = Manifest(tuple(tiles))
    out = tmp_path / "maps"
    products = make_products(predictions, SCHEME, out)
    assert (out / "warped" / "class" / "h.tif").is_file()  # not on the pixel grid: warped
    assert not (out / "warped" / "class" / "s.tif").exists()
    with rasterio.open(products["class_vrt"]) as vrt:
        mosaic = vrt.read(1)
        grid = Grid(vrt.crs, vrt.transform, vrt.height, vrt.width)
    da, _ = read_tile(predictions.tile("a").layer("r_class"))
    ds, _ = read_tile(predictions.tile("s").layer("r_class"))
    wa, ws = placement(grid, grids["a"]), placement(grid, grids["s"])
    assert wa is not None and ws is not None
    on_a = mosaic[wa.toslices()]
    # the first tile wins where it has data; the next one shows through its nodata
    overlap_s = ds[0, : a.height - 40, : a.width - 60]
    overlap_a = da[0, 40:, 60:]
    np.testing.assert_array_equal(
        on_a[40:, 60:], np.where(overlap_a != IGNORE_INDEX, overlap_a, overlap_s)
    )
    # areas count the overlap once, in the first tile
    tiles_table = pd.read_csv(products["areas_tiles_csv"]).set_index("tile_id")
    valid_s_own = (ds[0] != IGNORE_INDEX).sum() - (overlap_s != IGNORE_INDEX).sum()
    assert tiles_table.loc["a", "mapped_ha"] * 1e4 == pytest.approx((da != IGNORE_INDEX).sum())
    assert tiles_table.loc["s", "mapped_ha"] * 1e4 == pytest.approx(valid_s_own)
