"""lcip-acquire against a loopback HTTP server serving archives laid out like the real ones."""

from __future__ import annotations

import hashlib
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio

from lcip.config import compose_config
from lcip.errors import DataError, DownloadError
from lcip.io.manifest import Manifest
from lcip.stages.acquire import acquire
from tests.fake_archives import make_chesapeake_archives, make_enviroatlas_archive
from tests.httpserver import LoopbackServer
from tests.paths import ROOT

NY = {"train": ["m_4207301_ne_18_1", "m_4207302_nw_18_1"], "val": ["m_4207303_se_18_1"]}
NY |= {"test": ["m_4207304_sw_18_1"]}
OTHER = {s: {k: [f"m_3907{i}{s}_ne_18_1"] for i, k in enumerate(NY)} for s in ("pa", "de")}
EA_TEST = ["4007925_nw", "4007926_sw"]


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake Chesapeake and EnviroAtlas archives, in one served folder."""
    root = tmp_path_factory.mktemp("served")
    make_chesapeake_archives(root, {"ny": NY, **OTHER}, size=96)
    make_enviroatlas_archive(
        root,
        {"pittsburgh_pa": {"train": ["4007925_se", "4007932_ne"], "test": EA_TEST}},
        size=96,
    )
    return root


@pytest.fixture
def server(archives: Path) -> Iterator[LoopbackServer]:
    with LoopbackServer(archives) as s:
        yield s


def chesapeake(server: LoopbackServer, root: Path, *extra: str) -> list[str]:
    return [
        "region=chesapeake_ny",
        f"paths.root={root}",
        f"+acquire.archives.base.url={server.url('cvpr_chesapeake_landcover.zip')}",
        # Zenodo's real URL ends in ?download=1 (quoted for Hydra's override grammar).
        f"+acquire.archives.prior_extension.url="
        f"'{server.url('cvpr_chesapeake_landcover_prior_extension.zip')}?download=1'",
        "acquire.progress=false",
        *extra,
    ]


def members_of(path: Path, state: str, layers: tuple[str, ...]) -> dict[str, zipfile.ZipInfo]:
    with zipfile.ZipFile(path) as z:
        return {
            i.filename: i
            for i in z.infolist()
            if i.filename.startswith(f"{state}_") and i.filename.endswith(layers)
        }


CHESAPEAKE_LAYERS = ("_naip-new.tif", "_nlcd.tif", "_lc.tif", "_buildings.tif")
PRIOR_LAYER = ("_prior_from_cooccurrences_101_31_no_osm_no_buildings.tif",)


def test_dry_run_lists_one_state_and_transfers_only_the_directories(
    server: LoopbackServer, archives: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert acquire(compose_config(chesapeake(server, tmp_path, "acquire.dry_run=true"))) is None
    out = capsys.readouterr().out
    base = members_of(archives / "cvpr_chesapeake_landcover.zip", "ny", CHESAPEAKE_LAYERS)
    prior = members_of(
        archives / "cvpr_chesapeake_landcover_prior_extension.zip", "ny", PRIOR_LAYER
    )
    for name in [*base, *prior]:
        assert name in out
    assert "pa_1m" not in out and "naip-old" not in out and "landsat" not in out
    total = sum(i.compress_size for i in [*base.values(), *prior.values()])
    with zipfile.ZipFile(archives / "cvpr_chesapeake_landcover.zip") as z:
        total += z.getinfo("spatial_index.geojson").compress_size
    assert f"{len(base) + len(prior) + 1} files: {total / 1e6:.2f} MB to fetch" in out
    # Only the two zips' tails and central directories were read: a few KB, no member.
    sizes = [p.stat().st_size for p in archives.glob("*.zip")]
    assert 0 < server.bytes_served < 2 * 70_000 < max(sizes)
    assert server.bytes_served < total
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.tif"))


def test_make_data_dry_run(server: LoopbackServer, tmp_path: Path) -> None:
    args = " ".join(chesapeake(server, tmp_path)[1:]).replace("?download=1", "")
    run = subprocess.run(
        [
            "make",
            "-s",
            "-o",
            ".venv/.lcip-setup",
            "data",
            "REGION=chesapeake_ny",
            "DRY_RUN=1",
            f"ARGS={args}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "ny_1m_2013_extended-debuffered-test_tiles/m_4207304_sw_18_1_naip-new.tif" in run.stdout
    assert "MB to fetch" in run.stdout
    assert server.bytes_served < 2 * 70_000


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_state_fetch_manifest_and_rerun(
    server: LoopbackServer, archives: Path, tmp_path: Path
) -> None:
    cfg = compose_config(chesapeake(server, tmp_path))
    path = acquire(cfg)
    assert path == Path(cfg.region.manifest)
    base = members_of(archives / "cvpr_chesapeake_landcover.zip", "ny", CHESAPEAKE_LAYERS)
    prior = members_of(
        archives / "cvpr_chesapeake_landcover_prior_extension.zip", "ny", PRIOR_LAYER
    )
    fetched = sum(i.compress_size for i in [*base.values(), *prior.values()])
    # Only New York's members (and the spatial index) were served: their compressed bytes,
    # local headers and the two directories; Pennsylvania's and Delaware's never.
    overhead = 2 * 70_000 + 200 * (len(base) + len(prior) + 1)
    assert fetched < server.bytes_served < fetched + 30_000 + overhead
    data = tmp_path / "data" / "chesapeake_cvpr"
    assert not list(data.rglob("pa_1m*")) and not list(data.rglob("*landsat*"))
    manifest = Manifest.read(path)
    assert sorted(t.tile_id for t in manifest) == sorted(i for ids in NY.values() for i in ids)
    assert {t.tile_id: t.split for t in manifest} == {i: s for s, ids in NY.items() for i in ids}
    for tile in manifest:
        assert set(tile.layers) == {"naip", "nlcd", "lc", "buildings", "paper_prior"}
        with rasterio.open(tile.layer("naip")) as src:
            assert tile.crs == "EPSG:26918" == src.crs.to_string()
            assert tile.bounds == pytest.approx(tuple(src.bounds))
            assert src.count == 4 and src.dtypes[0] == "uint8"
        for layer, file in tile.layers.items():
            assert tile.meta[f"{layer}_sha256"] == _sha256(file)
            member = file.relative_to(data).as_posix()
            assert tile.meta[f"{layer}_url"].endswith(f"#{member}")
            name = "_prior_extension" if layer == "paper_prior" else ""
            with zipfile.ZipFile(archives / f"cvpr_chesapeake_landcover{name}.zip") as z:
                assert z.read(member) == file.read_bytes()
    # A rerun with everything present makes no request at all.
    server.reset_counters()
    assert acquire(cfg) == path
    assert server.bytes_served == 0 and server.requests == []


def test_connection_dropped_mid_member_is_resumed(archives: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(archives / "cvpr_chesapeake_landcover.zip") as z:
        info = z.getinfo("ny_1m_2013_extended-debuffered-test_tiles/m_4207304_sw_18_1_naip-new.tif")
    cut = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    with LoopbackServer(archives, drop_at={"cvpr_chesapeake_landcover.zip": cut}) as server:
        path = acquire(compose_config(chesapeake(server, tmp_path)))
        assert server.dropped == 1
    data = tmp_path / "data" / "chesapeake_cvpr"
    with zipfile.ZipFile(archives / "cvpr_chesapeake_landcover.zip") as z:
        assert (data / info.filename).read_bytes() == z.read(info.filename)
    assert not [p for p in data.rglob("*") if p.name.endswith((".zpart", ".part", ".tmp"))]
    assert path is not None and len(Manifest.read(path)) == 4


def test_corrupt_member_is_one_error_and_leaves_no_file(archives: Path, tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    for p in archives.glob("*.zip"):
        (served / p.name).write_bytes(p.read_bytes())
    name = "ny_1m_2013_extended-debuffered-train_tiles/m_4207301_ne_18_1_lc.tif"
    with zipfile.ZipFile(served / "cvpr_chesapeake_landcover.zip") as z:
        info = z.getinfo(name)
    raw = bytearray((served / "cvpr_chesapeake_landcover.zip").read_bytes())
    raw[info.header_offset + 30 + len(name) + info.compress_size // 2] ^= 0xFF
    (served / "cvpr_chesapeake_landcover.zip").write_bytes(bytes(raw))
    with LoopbackServer(served) as server, pytest.raises(DownloadError) as err:
        acquire(compose_config(chesapeake(server, tmp_path / "out")))
    message = str(err.value)
    assert "\n" not in message and "CRC" in message and "m_4207301_ne_18_1_lc.tif" in message
    data = tmp_path / "out" / "data" / "chesapeake_cvpr"
    assert not (data / name).exists()
    assert not [p for p in data.rglob("*") if p.name.endswith((".zpart", ".part", ".tmp"))]
    assert not (tmp_path / "out" / "regions" / "chesapeake_ny" / "manifest.csv").exists()


def test_missing_archive_names_the_url(server: LoopbackServer, tmp_path: Path) -> None:
    overrides = chesapeake(server, tmp_path)
    overrides[2] = f"+acquire.archives.base.url={server.url('nowhere.zip')}"
    with pytest.raises(DownloadError, match=r"nowhere\.zip.*404|404.*nowhere\.zip") as err:
        acquire(compose_config(overrides))
    assert "\n" not in str(err.value)


def test_server_without_ranges_falls_back_to_whole_archives(archives: Path, tmp_path: Path) -> None:
    md5 = {
        key: hashlib.md5((archives / f"cvpr_chesapeake_landcover{name}.zip").read_bytes())
        for key, name in (("base", ""), ("prior_extension", "_prior_extension"))
    }
    extra = [f"+acquire.archives.{key}.md5={h.hexdigest()}" for key, h in md5.items()]
    with LoopbackServer(archives, ranges=False) as server:
        path = acquire(compose_config(chesapeake(server, tmp_path, *extra)))
    assert path is not None and len(Manifest.read(path)) == 4
    data = tmp_path / "data" / "chesapeake_cvpr"
    assert (data / "archives" / "cvpr_chesapeake_landcover.zip").stat().st_size == (
        archives / "cvpr_chesapeake_landcover.zip"
    ).stat().st_size
    # A wrong MD5 of the whole archive: one line, and the bad download is removed.
    with LoopbackServer(archives, ranges=False) as server, pytest.raises(DownloadError) as err:
        acquire(
            compose_config(chesapeake(server, tmp_path / "bad", "+acquire.archives.base.md5=0"))
        )
    assert "md5" in str(err.value).lower() and "\n" not in str(err.value)
    bad = (
        tmp_path / "bad" / "data" / "chesapeake_cvpr" / "archives" / "cvpr_chesapeake_landcover.zip"
    )
    assert not bad.exists()


def test_changed_file_is_caught_when_a_stage_reads_the_manifest(
    server: LoopbackServer, tmp_path: Path
) -> None:
    path = acquire(compose_config(chesapeake(server, tmp_path)))
    assert path is not None
    assert Manifest.read(path).verify() == 0  # remembered: nothing is hashed again
    tile = Manifest.read(path).tiles[0]
    lc = tile.layer("lc")
    with rasterio.open(lc, "r+") as dst:
        data = dst.read()
        data[0, 50, 50] = 3 if data[0, 50, 50] != 3 else 2
        dst.write(data)
    with pytest.raises(DataError, match=f"tile {tile.tile_id} layer 'lc'.*sha256") as err:
        Manifest.read(path)
    assert "\n" not in str(err.value)
    # Acquiring again restores the file from the archive.
    assert acquire(compose_config(chesapeake(server, tmp_path))) == path
    assert Manifest.read(path).tile(tile.tile_id).meta["lc_sha256"] == _sha256(lc)


def test_test_tiles_must_match_the_archive(server: LoopbackServer, tmp_path: Path) -> None:
    overrides = [
        "region=enviroatlas_pittsburgh_pa",
        f"paths.root={tmp_path}",
        f"+acquire.archives.lotp.url={server.url('enviroatlas_lotp.zip')}",
        "acquire.progress=false",
        "region.source.splits=[train,test]",
    ]
    with pytest.raises(DataError, match=r"missing \['4007933_nw'.*extra \[\]"):
        acquire(compose_config([*overrides, "acquire.dry_run=true"]))
    ok = f"region.source.test_tiles=[{','.join(EA_TEST)}]"
    path = acquire(compose_config([*overrides, ok]))
    assert path is not None
    manifest = Manifest.read(path)
    assert [t.split for t in manifest] == ["test", "test", "train", "train"]
    tile = manifest.tiles[0]
    assert set(tile.layers) == {
        "naip",
        "nlcd",
        "lc",
        "roads",
        "waterways",
        "waterbodies",
        "water",
        "buildings",
        "paper_prior",
        "paper_prior_no_osm_no_buildings",
    }
    with rasterio.open(tile.layer("nlcd")) as src:
        assert int(src.read().max()) < 17  # NLCD as indices into the 17 codes
    with rasterio.open(tile.layer("paper_prior")) as src:
        assert src.count == 5 and np.all(src.read().sum(axis=0) > 0)
    # The stages take the EnviroAtlas layout as it is: NLCD indices, rasterized vector layers.
    from lcip.stages.cooccurrence import cooccurrence
    from lcip.stages.prior import prior

    cooccurrence(compose_config([*overrides, ok]))
    for name in ("fused", "published_no_osm_no_buildings"):
        out = Manifest.read(prior(compose_config([*overrides, ok, f"prior={name}"])))
        with rasterio.open(out.tiles[0].layer(f"prior_{name}")) as src:
            p = src.read()
            assert src.count == 5 and src.descriptions[1] == "impervious"
        valid = ~np.isnan(p).any(axis=0)
        assert valid.mean() > 0.9 and np.allclose(p[:, valid].sum(axis=0), 1.0, atol=1e-4)
        if name == "fused":  # roads (raster) put mass on impervious where they are
            with rasterio.open(out.tiles[0].layer("roads")) as src:
                roads = src.read(1).astype(bool)
            assert p[1][roads & valid].mean() > p[1][~roads & valid].mean() + 0.1


def test_acquired_region_runs_the_stages(server: LoopbackServer, tmp_path: Path) -> None:
    """Acquired manifest -> cooccurrence -> prior nlcd and published -> 2 training steps."""
    from lcip.io.raster import Grid
    from lcip.stages.cooccurrence import cooccurrence
    from lcip.stages.prior import prior
    from lcip.stages.train import train

    small = [
        "model.num_filters=4",
        "model.num_layers=1",
        "data.crop_size=32",
        "data.batch_size=4",
        "data.steps_per_epoch=2",
        "data.val_crop_size=96",
        "task.warmup_steps=1",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
    ]
    base = chesapeake(server, tmp_path, *small)
    acquire(compose_config(base))
    cooccurrence(compose_config(base))
    for name in ("nlcd", "published"):
        manifest = Manifest.read(prior(compose_config([*base, f"prior={name}"])))
        assert len(manifest) == 4
        for tile in manifest:
            grid = Grid.of(tile.layer("naip"))
            with rasterio.open(tile.layer(f"prior_{name}")) as src:
                assert Grid.of(tile.layer(f"prior_{name}")).same_as(grid)
                assert src.count == 4 and src.dtypes[0] == "float32"
                p = src.read()
            valid = ~np.isnan(p).any(axis=0)
            assert valid.mean() > 0.9
            assert np.allclose(p[:, valid].sum(axis=0), 1.0, atol=1e-4)
            assert p[:, valid].min() >= 0.0
    # Both priors scored side by side on the same labelled tiles.
    from lcip.stages.compare_priors import compare_priors

    report = compare_priors(compose_config([*base, "compare.splits=[train,val,test]"]))
    table = report.with_suffix(".csv").read_text()
    assert "nlcd" in table and "published" in table and "mad_published" in table
    cfg = compose_config([*base, "prior=published"])
    train(cfg)
    import torch

    last = torch.load(Path(cfg.run_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 2


def test_member_names_parse_like_torchgeo_lists_them() -> None:
    """TorchGeo's own integrity file lists parse into the tiles, splits and layers lcip uses."""
    from torchgeo.datasets import ChesapeakeCVPR as TGChesapeake
    from torchgeo.datasets import EnviroAtlas as TGEnviroAtlas

    from lcip.acquire.datasets import get_dataset

    cvpr = get_dataset("chesapeake_cvpr")
    picked = cvpr.select("base", TGChesapeake._files, "wv", ["val"], ["naip", "lc", "nlcd"])
    assert [(p.tile_id, p.split, p.layer) for p in picked] == [
        ("m_3708035_ne_17_1", "val", "lc"),
        ("m_3708035_ne_17_1", "val", "naip"),
        ("m_3708035_ne_17_1", "val", "nlcd"),
    ]
    assert cvpr.select("base", TGChesapeake._files, "ny", ["val"], ["naip"]) == []
    assert cvpr.archive_of("paper_prior") == "prior_extension"
    assert set(cvpr.archives()) == {"base", "prior_extension"}
    assert cvpr.archives()["base"].md5 == TGChesapeake.md5s["base"]
    ea = get_dataset("enviroatlas")
    names = [f"enviroatlas_lotp/{f}" for f in TGEnviroAtlas._files]
    picked = ea.select("lotp", names, "austin_tx", ["test"], list(ea.layers.values()))
    assert {p.layer for p in picked} == set(ea.layers.values())
    assert {(p.tile_id, p.split) for p in picked} == {("3009726_sw", "test")}
    assert ea.splits("pittsburgh_pa") == ("train", "val", "test", "val5")
    assert ea.splits("phoenix_az") == ("test", "val5")
    with pytest.raises(Exception, match=r"region.source.splits: \['train'\] not in enviroatlas"):
        ea.check("durham_nc", ["train"], ["naip"])


def test_fake_archives_open_in_torchgeo(tmp_path: Path) -> None:
    """The stand-in archives have the real layout: TorchGeo's datasets open them."""
    from torchgeo.datasets import ChesapeakeCVPR as TGChesapeake
    from torchgeo.datasets import EnviroAtlas as TGEnviroAtlas

    tiles = {
        s: {k: [f"m_39070{i}{j}_ne_18_1"] for j, k in enumerate(("train", "val", "test"))}
        for i, s in enumerate(("de", "md", "ny", "pa", "va", "wv"))
    }
    tiles["wv"]["val"] = ["m_3708035_ne_17_1"]
    zips = make_chesapeake_archives(tmp_path / "c", tiles, size=32)
    cities = {
        c: {"test": [f"30097{i}0_sw"], "val5": [f"30097{i}1_ne"]}
        for i, c in enumerate(("pittsburgh_pa", "durham_nc", "austin_tx", "phoenix_az"))
    }
    cities["austin_tx"]["test"] = ["3009726_sw"]
    cities["pittsburgh_pa"] |= {"train": ["4007925_se"], "val": ["4007925_sw"]}
    ea_zip = make_enviroatlas_archive(tmp_path / "e", cities, size=32)
    for z in [*zips.values(), ea_zip]:
        zipfile.ZipFile(z).extractall(tmp_path / "x")
    cvpr = TGChesapeake(
        tmp_path / "x",
        splits=["wv-val"],
        layers=["naip-new", "lc", "prior_from_cooccurrences_101_31_no_osm_no_buildings"],
    )
    assert len(cvpr.index) == 1
    ea = TGEnviroAtlas(tmp_path / "x", splits=["austin_tx-2012_1m-test"], layers=["naip", "lc"])
    assert len(ea.index) == 1
