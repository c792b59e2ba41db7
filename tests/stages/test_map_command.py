"""lcip-map end to end on loopback: place name -> geocode -> NAIP -> NLCD -> OSM -> footprints
-> cooccurrence table -> QR -> products, a rerun that makes no request and rewrites nothing,
an area of one NAIP scene, and the dry run.

The stand-ins are those of ``tests/acquire/test_place_acquire.py`` (NAIP scenes made from the real
0.6 m crop near Milwaukee, the real West Oakland OSM extract moved onto the queried area,
generated NLCD and footprints), with the STAC items served as the real recorded Planetary
Computer NAIP item (``tests/fixtures/real/naip``) moved onto each scene.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from omegaconf import OmegaConf
from rasterio.windows import from_bounds

from lcip.acquire.place import assign_splits
from lcip.classes import CHESAPEAKE4
from lcip.config import compose_config
from lcip.errors import ConfigError
from lcip.io.manifest import Manifest
from lcip.io.provenance import read_provenance
from lcip.io.raster import Grid
from lcip.priors.cooccurrence import Cooccurrence
from lcip.stages.cooccurrence import cooccurrence_source
from lcip.stages.map import (
    STEPS_FILE,
    make_plan,
    map_area,
    map_name,
    sizing_overrides,
    unless_given,
)
from tests.acquire.test_acquire_labels import _naip_item
from tests.acquire.test_place_acquire import (
    NE,
    NW,
    PLACE,
    _all_requests,
    overrides,
    pytestmark,  # noqa: F401 (skips this module too without the real sample data)
    running_services,
    served,  # noqa: F401 (the stand-ins' files: a fixture)
)
from tests.paths import ROOT
from tests.stand_ins import StandIn

#: Training sized for a test: the command line wins over map.sizing.
TINY = [
    "map.sizing.device=cpu",
    "model.num_filters=4",
    "model.num_layers=2",
    "data.batch_size=2",
    "data.steps_per_epoch=2",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
]


def _recorded(item: dict[str, Any], root: Path) -> dict[str, Any]:
    """The real recorded NAIP item, moved onto the served scene ``item`` describes."""
    href = item["assets"]["image"]["href"]
    real = _naip_item(Grid.of(root / href), href)
    props = real["properties"]
    real["id"] = item["id"]
    real["geometry"], real["bbox"] = item["geometry"], item["bbox"]
    props["datetime"] = item["properties"]["datetime"]
    props["naip:year"] = props["datetime"][:4]
    props["naip:state"] = "wi"
    props["gsd"] = 0.6
    props["proj:epsg"] = 26916
    return real


@pytest.fixture
def stands(served: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, StandIn]]:  # noqa: F811
    """The stand-ins of every service, the NAIP items being the real recorded JSON."""
    items = [
        _recorded(i, served["root"]) if i["collection"] == "naip" else i for i in served["items"]
    ]
    with running_services(served, tmp_path, items) as services:
        yield services


def table(tmp_path: Path) -> list[str]:
    """The cooccurrence table: region=place's own default, else the built-in Chesapeake
    table, else (before built-in tables exist) a CSV matrix."""
    if cooccurrence_source(compose_config(["region=place"])) is not None:
        return []
    try:
        import lcip.priors.builtin  # noqa: F401
    except ImportError:
        matrix = np.full((4, 17), 0.1)
        matrix[3, 3:7] = 0.7  # developed NLCD classes: impervious
        matrix[1, 8:11] = 0.7  # forests: tree canopy
        coocc = Cooccurrence(
            matrix / matrix.sum(0), np.ones((4, 17), np.int64), "chesapeake4", CHESAPEAKE4.classes
        )
        path = tmp_path / "table.csv"
        path.write_text(coocc.to_csv())
        return [f"cooccurrence.source={path}"]
    return ["cooccurrence.source=builtin:chesapeake4"]


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _zones(path: Path, tiles: Manifest) -> Path:
    """Two zones splitting the tiles' union in a west and an east half (in the tiles' CRS)."""
    union = shapely.union_all([shapely.box(*t.bounds) for t in tiles])
    minx, miny, maxx, maxy = union.bounds
    mid = (minx + maxx) / 2
    frame = gpd.GeoDataFrame(
        {"zone": ["west", "east"]},
        geometry=[
            shapely.box(minx - 10, miny - 10, mid, maxy + 10),
            shapely.box(mid, miny - 10, maxx + 10, maxy + 10),
        ],
        crs=tiles.tiles[0].crs,
    )
    frame.to_file(path, driver="GeoJSON")
    return path


def _check_aligned(vrt: Path, tiles: Manifest, layer: str) -> None:
    """The mosaic is on the tiles' grid and holds each tile's values where it covers alone."""
    with rasterio.open(vrt) as mosaic:
        for tile in tiles:
            with rasterio.open(tile.layer(layer)) as src:
                assert mosaic.crs == src.crs and mosaic.res == src.res
                t, m = src.transform, mosaic.transform
                assert ((t.c - m.c) / t.a) % 1 == pytest.approx(0, abs=1e-6)
                assert ((t.f - m.f) / t.e) % 1 == pytest.approx(0, abs=1e-6)
                window = from_bounds(*src.bounds, transform=m).round_offsets().round_lengths()
                got = mosaic.read(1, window=window)
                own = src.read(1)
            alone = np.ones(own.shape, bool)
            rows, cols = np.mgrid[0 : own.shape[0], 0 : own.shape[1]]
            xs, ys = t * (cols + 0.5, rows + 0.5)
            for other in tiles:
                if other.tile_id != tile.tile_id:
                    left, bottom, right, top = other.bounds
                    alone &= ~((xs > left) & (xs < right) & (ys > bottom) & (ys < top))
            assert alone.any()
            np.testing.assert_array_equal(got[alone], own[alone])


def test_map_place_end_to_end_rerun_free_and_resumed(
    stands: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    zones = tmp_path / "zones.geojson"
    args = [*overrides(stands, out), *table(tmp_path), *TINY]
    cfg = compose_config(args)
    assert map_name(cfg) == "milwaukee-test-wi-2020"
    # The built-in table comes with the package: no labelled region is on disk.
    assert not (out / "regions").exists()
    maps = out / "maps" / "milwaukee-test-wi-2020"
    # 1. The first run: every step, in order.
    with pytest.raises(ConfigError, match=r"^map\.zones=.*: no such file$"):
        map_area(compose_config([*args, f"map.zones={zones}", "map.zones_id=zone"]), overrides=[])
    first = map_area(cfg, overrides=args)
    assert first == maps
    printed = capsys.readouterr().out
    for i, step in enumerate(("acquire", "cooccurrence", "prior", "train", "predict", "products")):
        assert f"[{i + 1}/6] {step}" in printed
    region = out / "regions" / "milwaukee-test-wi-2020"
    manifest = Manifest.read(region / "manifest.csv")
    assert [(t.tile_id, t.split) for t in manifest] == [(NE, "train"), (NW, "val")]
    assert all({"naip", "nlcd", "osm", "buildings"} <= set(t.layers) for t in manifest)
    # Prior: fused (OSM and footprints exist); training transductive, on the test's sizing
    # (the command line) over the CPU sizing (map.sizing.cpu: data.crop_size=64 capped to
    # the smallest tile).
    run = out / "runs" / "milwaukee-test-wi-2020" / "qr_fused"
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.prior.name == "fused" and saved.loss.name == "qr"
    assert list(saved.data.train_splits) == ["train", "val"] == list(saved.data.val_splits)
    assert saved.model.num_filters == 4 and saved.trainer.accelerator == "cpu"
    side = min(min(Grid.of(t.layer("naip")).shape) for t in manifest)
    assert saved.data.crop_size == min(64, side // 8 * 8)
    metrics = pd.read_csv(run / "logs" / "metrics.csv")
    assert "val/loss" in metrics.columns and metrics["val/loss"].notna().any()
    predictions = Manifest.read(run / "predictions" / "manifest.csv")
    assert [t.tile_id for t in predictions] == [NE, NW]  # every tile mapped
    # The table the prior used is recorded with it (the built-in one chosen by location).
    used = read_provenance(predictions.tile(NE).layer("prior_fused"))["params"]
    if not table(tmp_path):
        assert used["cooccurrence_source"].startswith("builtin:")
        assert f"[2/6] cooccurrence auto: {used['cooccurrence_source'].split()[0]} (" in printed
    # Products: present and on the tiles' grid.
    for name in ("class.vrt", "prob_q.vrt", "prob_r.vrt", "confidence.vrt", "index.html"):
        assert (maps / name).is_file(), name
    _check_aligned(maps / "class.vrt", predictions, "r_class")
    with rasterio.open(maps / "class.vrt") as vrt:
        classes = vrt.read(1)
        pixel_ha = abs(vrt.transform.a * vrt.transform.e) / 1e4
        nodata = vrt.nodata
        assert vrt.colormap(1)[0][:3] == tuple(CHESAPEAKE4.colors[0])
    with rasterio.open(maps / "confidence.vrt") as conf, rasterio.open(maps / "prob_r.vrt") as pr:
        assert (conf.crs, conf.transform, conf.shape) == (vrt.crs, vrt.transform, vrt.shape)
        assert (pr.crs, pr.transform, pr.count) == (vrt.crs, vrt.transform, 4)
        c = conf.read(1)
        valid = classes != nodata
        assert np.all((c[valid] >= 0.25 - 1e-6) & (c[valid] <= 1 + 1e-6))
    # Areas sum to the mapped area, and per class equal an independent count of the mosaic.
    total = pd.read_csv(maps / "areas_total.csv").set_index("class")
    mapped_ha = valid.sum() * pixel_ha
    assert total.loc["all", "ha"] == pytest.approx(mapped_ha, rel=1e-3)
    assert total.drop("all")["ha"].sum() == pytest.approx(mapped_ha, rel=1e-3)
    for k, name in enumerate(CHESAPEAKE4.classes):
        assert total.loc[name, "ha"] == pytest.approx((classes == k).sum() * pixel_ha, abs=1e-3)
    per_tile = pd.read_csv(maps / "areas_tiles.csv")
    assert per_tile["mapped_ha"].sum() == pytest.approx(mapped_ha, rel=1e-3)
    assert (maps / STEPS_FILE).is_file()

    # 2. A rerun: no request to any stand-in, nothing written anywhere.
    for server in stands.values():
        server.reset_counters()
    before = _snapshot(out)
    assert map_area(compose_config(args), overrides=args) == maps
    assert _all_requests(stands) == []
    assert _snapshot(out) == before
    printed = capsys.readouterr().out
    for step in ("cooccurrence", "prior", "train", "predict", "products"):
        assert f"{step}" in printed
    assert printed.count(": up to date") == 4  # prior, train, predict, products

    # 3. Other product settings: only the products are made again (zones, mosaic).
    _zones(zones, manifest)
    extra = [*args, f"map.zones={zones}", "map.zones_id=zone", "map.mosaic=true"]
    map_area(compose_config(extra), overrides=extra)
    assert _all_requests(stands) == []
    after = _snapshot(out)
    changed = {p for p in after if before.get(p) != after[p]}
    assert changed and all(p.startswith(str(maps)) for p in changed)
    with rasterio.open(maps / "class.tif") as cog:
        assert (cog.crs, cog.transform) == (vrt.crs, vrt.transform)
        assert cog.overviews(1) or max(cog.shape) < 512
        np.testing.assert_array_equal(cog.read(1), classes)
    by_zone = pd.read_csv(maps / "areas_zones.csv")
    assert sorted(by_zone["zone"]) == ["east", "west"]
    assert by_zone["mapped_ha"].sum() == pytest.approx(mapped_ha, rel=1e-3)

    # 4. A lost prediction is made again, and the products after it; nothing before it.
    lost = predictions.tile(NW).layer("r_class")
    lost.unlink()
    before = _snapshot(out)
    map_area(compose_config(extra), overrides=extra)
    assert _all_requests(stands) == [] and lost.is_file()
    after = _snapshot(out)
    changed = {p for p in after if before.get(p) != after[p]}
    assert str(lost) in changed
    assert all(p.startswith((str(run / "predictions"), str(maps))) for p in changed)
    assert str(predictions.tile(NE).layer("r_class")) not in changed  # the other tile kept


def test_one_scene_area_is_mapped(
    served: dict[str, Any],  # noqa: F811
    stands: dict[str, Any],
    tmp_path: Path,
) -> None:
    ne = next(i for i in served["items"] if i["id"] == NE)
    minx, miny, maxx, maxy = shapely.geometry.shape(ne["geometry"]).bounds
    w, h = maxx - minx, maxy - miny
    bbox = [minx + 0.55 * w, miny + 0.25 * h, maxx - 0.1 * w, maxy - 0.25 * h]
    out = tmp_path / "out"
    args = [
        *overrides(stands, out, place=False),
        f"region.source.bbox=[{','.join(f'{v:.6f}' for v in bbox)}]",
        "map.name=one-scene",
        *table(tmp_path),
        *TINY,
    ]
    maps = map_area(compose_config(args), overrides=args)
    assert maps == out / "maps" / "one-scene"
    manifest = Manifest.read(out / "regions" / "one-scene" / "manifest.csv")
    assert [(t.tile_id, t.split) for t in manifest] == [(NE, "train")]  # one tile, no val tile
    metrics = pd.read_csv(out / "runs" / "one-scene" / "qr_fused" / "logs" / "metrics.csv")
    assert metrics["val/loss"].notna().any()  # validated on the training tile
    predictions = out / "runs" / "one-scene" / "qr_fused" / "predictions" / "manifest.csv"
    _check_aligned(maps / "class.vrt", Manifest.read(predictions), "r_class")
    assert (maps / "index.html").is_file()


def test_make_map_dry_run_prints_steps_bytes_disk_and_time(
    stands: dict[str, Any], tmp_path: Path
) -> None:
    args = [*overrides(stands, tmp_path, place=False)[1:-1], *table(tmp_path)]
    run = subprocess.run(
        [
            "make",
            "-s",
            "-o",
            ".venv/.lcip-setup",
            "map",
            "PLACE=" + PLACE,
            "YEAR=2020",
            "DRY_RUN=1",
            "ARGS=" + shlex.join([*args, "map.sizing.device=cpu"]),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    text = run.stdout
    size = (stands["stac"].root / "naip" / f"{NE}.tif").stat().st_size
    assert f"naip/{NE}.tif" in text and str(size) in text  # the acquisition dry run
    assert "2 tiles" in text
    for step in ("acquire", "cooccurrence", "prior", "train", "predict", "products"):
        assert f". {step}" in text
    assert "estimates" in text and "to transfer" in text and "on disk" in text
    assert "8 epochs x 100 steps of 16 crops of 64 px" in text  # map.sizing.cpu
    assert not (tmp_path / "regions").exists() and not (tmp_path / "maps").exists()
    assert not any(
        r[0] == "GET" and r[1].startswith("naip/") for r in stands["stac"].requests
    )  # no scene fetched
    assert not stands["osm"].requests
    assert [r[0] for r in stands["files"].requests] == ["HEAD"]  # the footprint index's size
    print(text)


def test_plan_names_sizing_and_user_overrides() -> None:
    given = ["region=place", "region.source.place='Ithaca, NY'", "region.source.year=2022"]
    cfg = compose_config([*given, "cooccurrence.source=x.csv"])
    assert map_name(cfg) == "ithaca-ny-2022"
    bbox = compose_config(["region=place", "region.source.bbox=[-76.55,42.4,-76.45,42.48]"])
    bbox.region.source.year = 2021
    assert map_name(bbox) == "bbox-76.55-42.4-76.45-42.48-2021"
    # The command line wins over the sizing, a group over its keys.
    sized = sizing_overrides(cfg, ["trainer.max_epochs=2", "model=unet"], "cpu")
    assert "trainer=cpu" in sized and "data.crop_size=64" in sized
    assert not any(o.startswith(("trainer.max_epochs", "model.")) for o in sized)
    assert unless_given(["+data.train_splits=[a]"], ["++data.train_splits=[b]", "x=1"]) == ["x=1"]
    gpu = compose_config([*given, "cooccurrence.source=x.csv", "map.sizing.device=gpu"])
    plan = make_plan(gpu, [*given, "cooccurrence.source=x.csv", "map.sizing.device=gpu"])
    assert plan.device == "gpu" and "trainer=gpu" in plan.sizing
    assert plan.base[-1] == "region.name=ithaca-ny-2022"
    assert plan.out_dir.parts[-2:] == ("maps", "ithaca-ny-2022")


def test_one_scene_gets_one_training_tile_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="lcip.acquire.place"):
        assert assign_splits(["m_1"], {"val": 1, "test": 0}) == {"m_1": "train"}
    assert "lcip-map trains and validates on it" in caplog.text
    assert assign_splits(["b", "a"], {"val": 1}) == {"a": "train", "b": "val"}


def test_area_without_labels_or_table_is_one_line() -> None:
    given = ["region=place", "region.source.place='Ithaca, NY'", "region.source.year=2022"]
    if "cooccurrence_source" in compose_config(given).region:
        given.append("region.cooccurrence_source=null")  # no built-in default
    cfg = compose_config(given)
    with pytest.raises(ConfigError, match=r"^cooccurrence.source: region place has no 1 m") as e:
        make_plan(cfg, [])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("loss.name=foo", r"^loss\.name=foo: unknown loss 'foo'"),
        ("predict.window=300", r"^predict\.window=300: must be a positive multiple of 256"),
    ],
)
def test_bad_training_or_prediction_setting_fails_before_any_step(
    tmp_path: Path, bad: str, message: str
) -> None:
    """A typo meant for a later step is refused before the map touches the network or disk."""
    given = [
        "region=place",
        "region.source.bbox=[-76.55,42.4,-76.45,42.48]",
        "region.source.year=2022",
        "acquire.place.stac.url=http://127.0.0.1:9/unreachable",
        f"paths.root={tmp_path}",
        bad,
    ]
    with pytest.raises(ConfigError, match=message):
        map_area(compose_config(given), overrides=given)
    assert not any(tmp_path.iterdir())
