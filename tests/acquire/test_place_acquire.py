"""lcip-acquire region=place against loopback stand-ins of STAC, Overpass, Nominatim and files.

The NAIP scenes are COGs made from the real 0.6 m NAIP crop near Milwaukee, the OSM answers
come from the real West Oakland OSM extract (moved onto the queried area), the NLCD and the
1 m labels are generated.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from lcip.acquire.footprints import gz_lines, quadkeys_for
from lcip.classes import CHESAPEAKE4
from lcip.config import compose_config
from lcip.errors import DataError, DownloadError
from lcip.io.manifest import Manifest
from lcip.io.raster import Grid, write_raster
from lcip.stages.acquire import acquire
from tests.httpserver import LoopbackServer
from tests.markers import needs_realdata
from tests.paths import REALDATA, ROOT
from tests.stand_ins import StandIn, nominatim, overpass, stac_api, stac_item

CROP = REALDATA / "naip_crops" / "m_4208701_ne_16_060_20200902.tif"
OSM = REALDATA / "osm" / "West-Oakland.osm.bz2"
pytestmark = needs_realdata(CROP, OSM)
NE = "wi_m_4208701_ne_16_060_20200902"
NE_OLD = "wi_m_4208701_ne_16_060_20200601"
NW = "wi_m_4208701_nw_16_060_20200902"
PLACE = "Milwaukee Test, WI"
ALBERS = CRS.from_epsg(5070)


def _scene(dst: Path, shift_x: float = 0.0, invert: bool = False) -> Any:
    """A COG of the real crop (moved west by ``shift_x`` m); its footprint in lon/lat."""
    with rasterio.open(CROP) as src:
        data, t, crs = src.read(), src.transform, src.crs
    grid = Grid(crs, Affine(t.a, t.b, t.c - shift_x, t.d, t.e, t.f), data.shape[1], data.shape[2])
    write_raster(dst, 255 - data if invert else data, grid, cog=True)
    return shapely.box(*transform_bounds(crs, "EPSG:4326", *grid.bounds))


def _albers_raster(dst: Path, area: Any, res: float, codes: list[int], block: int) -> None:
    left, bottom, right, top = transform_bounds("EPSG:4326", ALBERS, *area.bounds)
    width, height = int((right - left) / res) + 1, int((top - bottom) / res) + 1
    rng = np.random.default_rng(len(codes))
    coarse = rng.choice(np.array(codes, np.uint8), size=(height // block + 1, width // block + 1))
    data = np.kron(coarse, np.ones((block, block), np.uint8))[:height, :width]
    grid = Grid(ALBERS, Affine(res, 0, left, 0, -res, top), height, width)
    write_raster(dst, data, grid, nodata=0, cog=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Files of the stand-ins: NAIP scenes, NLCD, labels, footprints; and the place polygon."""
    root = tmp_path_factory.mktemp("served")
    (root / "naip").mkdir()
    ne = _scene(root / "naip" / f"{NE}.tif")
    nw = _scene(root / "naip" / f"{NW}.tif", shift_x=105.0)
    _scene(root / "naip" / f"{NE_OLD}.tif", invert=True)
    both = shapely.union_all([ne, nw])
    items = [
        stac_item(NE, "naip", ne, "2020-09-02T00:00:00Z", {"image": f"naip/{NE}.tif"}),
        stac_item(NE_OLD, "naip", ne, "2020-06-01T00:00:00Z", {"image": f"naip/{NE_OLD}.tif"}),
        stac_item(NW, "naip", nw, "2020-09-02T00:00:00Z", {"image": f"naip/{NW}.tif"}),
        stac_item(
            "wi_m_4208701_ne_16_060_20180701",
            "naip",
            ne,
            "2018-07-01T00:00:00Z",
            {"image": f"naip/{NE_OLD}.tif"},
        ),
        stac_item(
            "lc_mke",
            "chesapeake-lc-7",
            both.buffer(0.01),
            "2020-01-01T00:00:00Z",
            {"data": "labels/lc_mke.tif"},
        ),
    ]
    _albers_raster(
        root / "nlcd" / "nlcd_2019.tif", both.buffer(0.02), 30.0, [11, 21, 22, 41, 82], 2
    )
    _albers_raster(root / "labels" / "lc_mke.tif", both.buffer(0.005), 1.0, [1, 2, 3, 5, 6], 16)
    # Building footprints: the dataset's index of quadkey files, one covering the area.
    fp = root / "footprints"
    fp.mkdir()
    rng = np.random.default_rng(0)
    minx, miny, maxx, maxy = both.bounds
    feats = []
    for _ in range(40):
        x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        box = shapely.box(x, y, x + 0.0001, y + 0.0001)
        feats.append(
            {
                "type": "Feature",
                "geometry": shapely.geometry.mapping(box),
                "properties": {"height": -1, "confidence": -1},
            }
        )
    keys = quadkeys_for(both.buffer(0.01), 9)
    rows = ["Location,QuadKey,Url,Size,UploadDate"]
    for key in keys:
        (fp / f"{key}.csv.gz").write_bytes(gz_lines(feats))
        rows.append(f"UnitedStates,{key},FILE/{key}.csv.gz,1KB,2023-01-01")
    rows.append("UnitedStates,021230030,FILE/021230030.csv.gz,9MB,2023-01-01")  # elsewhere
    (fp / "dataset-links.template").write_text("\n".join(rows) + "\n")
    return {"root": root, "items": items, "place": both.buffer(-0.0002), "area": both}


@contextmanager
def running_services(
    served: dict[str, Any], tmp_path: Path, items: list[dict[str, Any]] | None = None
) -> Iterator[dict[str, StandIn]]:
    """The stand-ins of every service (STAC over ``items``, default the served ones)."""
    root = served["root"]
    with (
        stac_api(root, served["items"] if items is None else items) as stac,
        overpass(tmp_path, OSM) as osm,
        nominatim(tmp_path, {PLACE: served["place"]}) as geo,
        LoopbackServer(root / "footprints") as files,
    ):
        index = (root / "footprints" / "dataset-links.template").read_text()
        (root / "footprints" / "dataset-links.csv").write_text(
            index.replace("FILE/", files.url(""))
        )
        yield {"stac": stac, "osm": osm, "geo": geo, "files": files}  # type: ignore[dict-item]


@pytest.fixture
def services(served: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, StandIn]]:
    with running_services(served, tmp_path) as stands:
        yield stands


def overrides(s: dict[str, Any], out: Path, *extra: str, place: bool = True) -> list[str]:
    return [
        "region=place",
        f"paths.root={out}",
        "acquire.progress=false",
        "acquire.timeout=20",
        "acquire.retries=2",
        f"acquire.place.geocoder_url={s['geo'].url('')}",
        f"acquire.place.stac.url={s['stac'].url('')}",
        "acquire.place.stac.sign=false",
        "acquire.place.nlcd.source=cog",
        f"acquire.place.nlcd.cog.url='{s['stac'].url('nlcd/nlcd_{year}.tif')}'",
        "acquire.place.nlcd.years=[2016,2019,2023]",
        f"acquire.place.osm.overpass_url={s['osm'].url('').rstrip('/')}",
        f"acquire.place.footprints.index_url={s['files'].url('dataset-links.csv')}",
        *([f"region.source.place='{PLACE}'"] if place else []),
        "region.source.year=2020",
        *extra,
    ]


LABELS = "acquire.place.labels={collection: chesapeake-lc-7, asset: data}"


def _all_requests(s: dict[str, Any]) -> list[Any]:
    return [r for server in s.values() for r in server.requests]


def test_place_run_aligned_rerun_free_prior_and_training(
    services: dict[str, Any], tmp_path: Path
) -> None:
    from lcip.priors.cooccurrence import Cooccurrence
    from lcip.stages.prior import prior
    from lcip.stages.train import train

    cfg = compose_config(overrides(services, tmp_path, LABELS))
    path = acquire(cfg)
    assert path is not None
    manifest = Manifest.read(path)
    # The newest scene of each quarter quad touching the place: not the June 2020 one of the
    # same quad, not the 2018 one; the last id is the validation tile.
    assert [(t.tile_id, t.split) for t in manifest] == [(NE, "train"), (NW, "val")]
    for tile in manifest:
        assert set(tile.layers) == {"naip", "nlcd", "osm", "buildings", "lc"}
        with rasterio.open(tile.layer("naip")) as naip:
            assert naip.crs == CRS.from_epsg(26916) and naip.res == (1.0, 1.0)
            assert naip.transform.c % 1 == 0 and naip.transform.f % 1 == 0
            assert (tile.crs, tile.bounds) == (naip.crs.to_string(), tuple(naip.bounds))
            grid = Grid(naip.crs, naip.transform, naip.height, naip.width)
            assert naip.count == 4 and naip.read().mean() > 20
        with rasterio.open(tile.layer("lc")) as lc:  # Albers labels on the tile grid
            assert (lc.crs, lc.transform, lc.shape) == (naip.crs, naip.transform, naip.shape)
            codes = lc.read(1)
            assert set(np.unique(codes)) <= {0, 1, 2, 3, 5, 6}
            assert float(tile.meta["lc_fraction"]) == pytest.approx((codes > 0).mean(), abs=1e-4)
        with rasterio.open(tile.layer("nlcd")) as nlcd:  # 30 m in the tile's CRS, with a halo
            assert nlcd.crs == naip.crs and nlcd.res == (30.0, 30.0)
            assert nlcd.transform.c % 30 == 0 and nlcd.transform.f % 30 == 0
            left, bottom, right, top = nlcd.bounds
            assert left <= grid.bounds[0] - 124 and right >= grid.bounds[2] + 124
            assert bottom <= grid.bounds[1] - 124 and top >= grid.bounds[3] + 124
            assert set(np.unique(nlcd.read(1))) <= {11, 21, 22, 41, 82}
        for layer in ("naip", "nlcd", "osm", "buildings", "lc"):
            assert len(tile.meta[f"{layer}_sha256"]) == 64
            assert tile.meta[f"{layer}_url"].startswith("http://127.0.0.1:")
        assert tile.meta["naip_url"].endswith(f"naip/{tile.tile_id}.tif")
    served = services["stac"].root / "naip" / f"{NE}.tif"
    assert (tmp_path / "regions/place/tiles" / NE / "naip_native.tif").read_bytes() == (
        served.read_bytes()
    )
    assert not any("20200601" in r[1] or "20180701" in r[1] for r in services["stac"].requests)
    assert not any("021230030" in r[1] for r in services["files"].requests)
    # A rerun makes no request at all.
    for server in services.values():
        server.reset_counters()
    assert acquire(cfg) == path
    assert _all_requests(services) == []
    # The manifest runs through the fused prior (borrowed cooccurrence) and a 2-step training.
    coocc = Cooccurrence(
        np.full((4, 17), 0.25), np.ones((4, 17), np.int64), "chesapeake4", CHESAPEAKE4.classes
    )
    borrowed = tmp_path / "borrowed.csv"
    borrowed.write_text(coocc.to_csv())
    stage = [
        *overrides(services, tmp_path, LABELS),
        "prior=fused",
        f"cooccurrence.source={borrowed}",
        "region.label_layer=lc",
        "model.num_filters=4",
        "model.num_layers=1",
        "data.crop_size=32",
        "data.batch_size=2",
        "data.steps_per_epoch=2",
        "data.val_crop_size=64",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
    ]
    prior_manifest = Manifest.read(prior(compose_config(stage)))
    buildings_seen = False
    for tile in prior_manifest:
        with rasterio.open(tile.layer("prior_fused")) as p, rasterio.open(tile.layer("naip")) as n:
            assert (p.crs, p.transform, p.shape) == (n.crs, n.transform, n.shape)
            data = p.read()
            assert np.isfinite(data).all() and np.allclose(data.sum(0), 1, atol=1e-3)
        vectors = tmp_path / "regions/place/vectors" / f"{tile.tile_id}.tif"
        with rasterio.open(vectors) as v:
            assert (v.transform, v.shape) == (n.transform, n.shape)
            layers = v.read()
            assert layers[1].any()  # roads from the (moved) real OSM extract
            buildings_seen |= bool(layers[0].any())
    assert buildings_seen
    last = train(compose_config(stage))
    assert last.is_file()


def test_dropped_connection_is_resumed_without_a_corrupt_file(
    served: dict[str, Any], services: dict[str, Any], tmp_path: Path
) -> None:
    stac = services["stac"]
    stac.drop_after = {f"naip/{NE}.tif": 20_000}
    path = acquire(compose_config(overrides(services, tmp_path)))
    assert stac.dropped == 1 and path is not None
    tiles = tmp_path / "regions/place/tiles"
    assert (tiles / NE / "naip_native.tif").read_bytes() == (
        served["root"] / "naip" / f"{NE}.tif"
    ).read_bytes()
    assert not [p for p in tiles.rglob("*") if p.name.endswith((".part", ".tmp"))]
    ranges = [r[2] for r in stac.requests if r[1] == f"naip/{NE}.tif" and r[0] == "GET"]
    assert ranges[-1] == "bytes=20000-"  # resumed where the connection dropped
    assert len(Manifest.read(path)) == 2
    # Other settings: only what they change is made again (no scene fetched or resampled).
    naip, nlcd = tiles / NE / "naip.tif", tiles / NE / "nlcd.tif"
    before = naip.stat().st_mtime_ns, Grid.of(nlcd).bounds
    stac.reset_counters()
    acquire(compose_config(overrides(services, tmp_path, "acquire.place.nlcd.halo_m=300")))
    assert not [r for r in stac.requests if r[1].startswith("naip/")]
    assert naip.stat().st_mtime_ns == before[0]
    assert Grid.of(nlcd).bounds[0] <= before[1][0] - 120


def test_missing_file_is_one_line_naming_the_url(services: dict[str, Any], tmp_path: Path) -> None:
    cfg = compose_config(overrides(services, tmp_path, "acquire.place.nlcd.years=[2016]"))
    with pytest.raises(DownloadError) as err:
        acquire(cfg)
    message = str(err.value)
    assert "\n" not in message and services["stac"].url("nlcd/nlcd_2016.tif") in message
    assert not (tmp_path / "regions/place/manifest.csv").exists()


def test_area_without_naip_is_a_clear_error(services: dict[str, Any], tmp_path: Path) -> None:
    ithaca = "region.source.bbox=[-76.55,42.40,-76.45,42.48]"
    cfg = compose_config(overrides(services, tmp_path, ithaca, place=False))
    with pytest.raises(
        DataError,
        match=r"^bbox \[-76.55, 42.4, -76.45, 42.48\] \(EPSG:4326\): "
        r"no NAIP scene in collection 'naip'",
    ) as err:
        acquire(cfg)
    assert "\n" not in str(err.value)
    assert not services["osm"].requests and not services["files"].requests


def test_make_data_place_dry_run_lists_sizes_and_fetches_nothing(
    services: dict[str, Any], tmp_path: Path
) -> None:
    args = overrides(services, tmp_path, place=False)[1:-1]
    run = subprocess.run(
        [
            "make",
            "-s",
            "-o",
            ".venv/.lcip-setup",
            "data",
            "REGION=place",
            "PLACE=" + PLACE,
            "YEAR=2020",
            "DRY_RUN=1",
            "ARGS=" + shlex.join(args),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    size = (services["stac"].root / "naip" / f"{NE}.tif").stat().st_size
    assert f"naip/{NE}.tif" in run.stdout and str(size) in run.stdout
    assert f"naip/{NE_OLD}.tif" not in run.stdout
    assert "2 tiles" in run.stdout
    assert not (tmp_path / "regions/place/tiles").exists()
    assert not any(
        r[0] == "GET" and r[2] is None and r[1].startswith("naip/")
        for r in services["stac"].requests
    )  # no scene downloaded
    assert not services["osm"].requests
