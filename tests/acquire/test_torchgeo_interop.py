"""An lcip acquisition of one state or one city opens in TorchGeo's own dataset classes.

TorchGeo's ``ChesapeakeCVPR`` / ``EnviroAtlas`` ``_verify`` wants every entry of ``_files``
(split folders of every state or city, and one tile of one of them) and, failing that,
extracts a whole zip of its ``filename`` found in the folder. ``lcip-acquire`` fetches that one
tile and makes the split folders, and never leaves a whole archive where TorchGeo looks for it.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio

from lcip.acquire.archives import WHOLE_ARCHIVES
from lcip.config import compose_config
from lcip.io.manifest import Manifest
from lcip.stages.acquire import acquire
from tests.fake_archives import make_chesapeake_archives
from tests.httpserver import LoopbackServer
from tests.paths import FIXTURES

FIXTURES = FIXTURES / "real" / "torchgeo"
NY = {"train": ["m_4207301_ne_18_1", "m_4207302_nw_18_1"], "test": ["m_4207304_sw_18_1"]}
#: The tile ``ChesapeakeCVPR._files`` checks for.
WV_CHECKED = "m_3708035_ne_17_1"
WV_FOLDER = "wv_1m_2014_extended-debuffered-val_tiles"
#: Pennsylvania: in the archive, never fetched for New York.
PA = {"train": ["m_3907501_ne_18_1"]}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fake Chesapeake archives holding NY, PA and the West Virginia tile TorchGeo checks for."""
    root = tmp_path_factory.mktemp("served")
    make_chesapeake_archives(root, {"ny": NY, "pa": PA, "wv": {"val": [WV_CHECKED]}}, size=64)
    return root


def chesapeake(server: LoopbackServer, root: Path, *extra: str) -> list[str]:
    return [
        "region=chesapeake_ny",
        f"paths.root={root}",
        "region.source.splits=[train,test]",
        f"region.source.test_tiles=[{NY['test'][0]}]",
        f"+acquire.archives.base.url={server.url('cvpr_chesapeake_landcover.zip')}",
        "+acquire.archives.prior_extension.url="
        f"{server.url('cvpr_chesapeake_landcover_prior_extension.zip')}",
        "acquire.progress=false",
        *extra,
    ]


def tree(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its size."""
    return {
        p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()
    }


def torchgeo_zips(root: Path, names: list[str]) -> list[Path]:
    """Whole archives where TorchGeo's ``_verify`` would extract them."""
    return [root / n for n in names if (root / n).exists()]


def whole_tile_sample(dataset: object) -> dict[str, object]:
    """TorchGeo's sample of the (only) tile of the dataset's index, queried over its bounds."""
    import geopandas as gpd

    index = dataset.index  # type: ignore[attr-defined]
    assert isinstance(index, gpd.GeoDataFrame) and len(index) == 1
    x0, y0, x1, y1 = index.total_bounds
    return dataset[x0 + 1 : x1 - 1, y0 + 1 : y1 - 1]  # type: ignore[index]


@pytest.mark.parametrize("ranges", [True, False], ids=["range-requests", "whole-archive"])
def test_one_state_opens_in_torchgeo_chesapeake_cvpr(
    served: Path, tmp_path: Path, ranges: bool
) -> None:
    from torchgeo.datasets import ChesapeakeCVPR

    extra = [f"+acquire.archives.{k}.md5=null" for k in ("base", "prior_extension")]
    with LoopbackServer(served, ranges=ranges) as server:
        path = acquire(compose_config(chesapeake(server, tmp_path, *([] if ranges else extra))))
    assert path is not None
    data = tmp_path / "data" / "chesapeake_cvpr"
    # The checked tile is fetched whole (every layer) but is not a tile of the region.
    manifest = Manifest.read(path)
    assert sorted(t.tile_id for t in manifest) == sorted(NY["train"] + NY["test"])
    checked = [f for f in ChesapeakeCVPR._files if f.endswith(".tif")]
    assert len(checked) == 8
    for f in checked:
        name = "_prior_extension" if "prior_from" in f else ""
        with zipfile.ZipFile(served / f"cvpr_chesapeake_landcover{name}.zip") as z:
            assert (data / f).read_bytes() == z.read(f)
    assert not list(data.rglob("pa_1m*/*.tif"))  # other states: empty split folders only
    assert all(
        (data / f).is_dir() for f in ChesapeakeCVPR._files if not f.endswith((".tif", "json"))
    )
    # No whole zip where TorchGeo would extract it; without ranges it sits in archives/.
    assert torchgeo_zips(data, list(ChesapeakeCVPR.filenames.values())) == []
    assert (data / WHOLE_ARCHIVES / "cvpr_chesapeake_landcover.zip").is_file() == (not ranges)
    before = tree(data)
    ny = ChesapeakeCVPR(
        data,
        splits=["ny-train", "ny-test"],
        layers=["naip-new", "lc", "prior_from_cooccurrences_101_31_no_osm_no_buildings"],
    )
    assert len(ny.index) == 3
    assert tree(data) == before  # TorchGeo found its files: nothing downloaded or extracted
    test_only = ChesapeakeCVPR(data, splits=["ny-test"], layers=["naip-new", "lc"])
    sample = whole_tile_sample(test_only)
    tile = manifest.tile(NY["test"][0])
    with rasterio.open(tile.layer("naip")) as src:
        naip = src.read()
    with rasterio.open(tile.layer("lc")) as src:
        lc = src.read(1)
    image, mask = sample["image"].numpy(), sample["mask"].numpy()  # type: ignore[attr-defined]
    assert image.shape == naip.shape and np.array_equal(image, naip.astype(np.float32))
    assert np.array_equal(mask, lc.astype(np.int64))


def test_state_holding_the_checked_tile_fetches_it_once(
    served: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """West Virginia's own val tile is the checked tile: planned once, listed in the manifest."""
    from torchgeo.datasets import ChesapeakeCVPR

    with LoopbackServer(served) as server:
        over = chesapeake(server, tmp_path)
        over[0] = "region=chesapeake_wv"
        over[2:4] = ["region.source.splits=[val]"]
        acquire(compose_config([*over, "acquire.dry_run=true"]))
        path = acquire(compose_config(over))
    listed = capsys.readouterr().out
    naip_new, naip_old = (f"{WV_FOLDER}/{WV_CHECKED}_{x}.tif" for x in ("naip-new", "naip-old"))
    assert listed.count(naip_new) == 1 and listed.count(naip_old) == 1
    assert path is not None and [t.tile_id for t in Manifest.read(path)] == [WV_CHECKED]
    data = tmp_path / "data" / "chesapeake_cvpr"
    assert (data / naip_old).is_file()  # a layer lcip does not use, but TorchGeo checks for
    wv = ChesapeakeCVPR(data, splits=["wv-val"], layers=["naip-new", "naip-old", "lc"])
    assert len(wv.index) == 1 and whole_tile_sample(wv)["image"].shape[0] == 8  # type: ignore[attr-defined]


def test_archives_without_the_checked_tile_say_torchgeo_will_not_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    served = tmp_path / "served"
    make_chesapeake_archives(served, {"ny": NY}, size=32)
    with LoopbackServer(served) as server:
        acquire(compose_config(chesapeake(server, tmp_path / "out")))
    data = tmp_path / "out" / "data" / "chesapeake_cvpr"
    assert "TorchGeo's class will not open" in caplog.text and WV_CHECKED in caplog.text
    assert not (data / WV_FOLDER).exists() and not list(data.glob("pa_1m*"))


def test_torchgeo_dry_run_lists_the_checked_tile(
    served: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with LoopbackServer(served) as server:
        assert acquire(compose_config(chesapeake(server, tmp_path, "acquire.dry_run=true"))) is None
    out = capsys.readouterr().out
    assert f"{WV_FOLDER}/{WV_CHECKED}_landsat-leaf-on.tif" in out
    assert not (tmp_path / "data" / "chesapeake_cvpr" / WV_FOLDER).exists()


def test_opt_out_fetches_only_the_region(served: Path, tmp_path: Path) -> None:
    with LoopbackServer(served) as server:
        acquire(compose_config(chesapeake(server, tmp_path, "++acquire.torchgeo_layout=false")))
    data = tmp_path / "data" / "chesapeake_cvpr"
    assert not (data / WV_FOLDER).exists()


@pytest.fixture
def torchgeo_server() -> Iterator[LoopbackServer]:
    """TorchGeo's own ``tests/data/enviroatlas/enviroatlas_lotp.zip`` on loopback."""
    with LoopbackServer(FIXTURES) as server:
        yield server


def test_one_city_from_torchgeos_own_test_archive_opens_in_enviroatlas(
    torchgeo_server: LoopbackServer, tmp_path: Path
) -> None:
    from torchgeo.datasets import EnviroAtlas

    path = acquire(
        compose_config(
            [
                "region=enviroatlas_pittsburgh_pa",
                f"paths.root={tmp_path}",
                "region.source.splits=[train]",
                f"+acquire.archives.lotp.url={torchgeo_server.url('enviroatlas_lotp.zip')}",
                "acquire.progress=false",
            ]
        )
    )
    assert path is not None and [t.tile_id for t in Manifest.read(path)] == ["4007925_se"]
    data = tmp_path / "data" / "enviroatlas"
    assert torchgeo_zips(data, [EnviroAtlas.filename]) == []
    assert (data / "enviroatlas_lotp" / "austin_tx-2012_1m-val5_tiles-debuffered").is_dir()
    before = tree(data)
    city = EnviroAtlas(data, splits=["pittsburgh_pa-2010_1m-train"], layers=["naip", "lc"])
    assert tree(data) == before
    sample = whole_tile_sample(city)
    tile = Manifest.read(path).tiles[0]
    with rasterio.open(tile.layer("naip")) as src:
        naip = src.read()
    with rasterio.open(tile.layer("lc")) as src:
        lc = src.read(1)
    mask = sample["mask"].numpy()  # type: ignore[attr-defined]
    assert np.array_equal(sample["image"].numpy(), naip)  # type: ignore[attr-defined]
    assert np.array_equal(mask, EnviroAtlas.raw_enviroatlas_to_idx_map[lc][None])
