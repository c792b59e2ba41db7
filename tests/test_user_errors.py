"""Errors a new user meets name the setting to change (issue 17, item 9).

Tried as a user would: TorchGeo's own test archive served on loopback as a mirror whose MD5
differs, a region whose splits the stages do not find, predictions made for more splits than
are evaluated. Each message is one line and names the setting.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from lcip.acquire.archives import WHOLE_ARCHIVES
from lcip.config import compose_config
from lcip.errors import ConfigError, DownloadError
from lcip.io.manifest import Manifest, Tile
from lcip.io.raster import write_raster
from lcip.stages.acquire import acquire
from lcip.stages.cooccurrence import cooccurrence
from lcip.stages.evaluate import evaluate
from lcip.stages.paths import scheme_of
from lcip.stages.predict import predict
from tests.conftest import make_grid
from tests.fake_archives import make_chesapeake_archives
from tests.httpserver import LoopbackServer
from tests.paths import FIXTURES
from tests.stages.test_train_stage import tiny_overrides, write_prior_region

TORCHGEO_FIXTURES = FIXTURES / "real" / "torchgeo"


def one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# --- MD5 of a whole archive from a mirror ----------------------------------------------------


def test_md5_mismatch_of_torchgeos_own_archive_names_the_setting_that_skips_it(
    tmp_path: Path,
) -> None:
    """TorchGeo's test ``enviroatlas_lotp.zip`` is not the real archive: its MD5 differs."""
    over = [
        "region=enviroatlas_pittsburgh_pa",
        f"paths.root={tmp_path}",
        "region.source.splits=[train]",
        "acquire.progress=false",
    ]
    with LoopbackServer(TORCHGEO_FIXTURES, ranges=False) as server:
        over.append(f"+acquire.archives.lotp.url={server.url('enviroatlas_lotp.zip')}")
        with pytest.raises(DownloadError) as err:
            acquire(compose_config(over))
        message = one_line(err)
        assert "md5 mismatch" in message and "+acquire.archives.lotp.md5=null" in message
        data = tmp_path / "data" / "enviroatlas"
        assert not list(data.rglob("*.zip*"))  # the bad download is removed
        # Doing what the message says works.
        path = acquire(compose_config([*over, "+acquire.archives.lotp.md5=null"]))
    assert path is not None and [t.tile_id for t in Manifest.read(path)] == ["4007925_se"]
    assert (data / WHOLE_ARCHIVES / "enviroatlas_lotp.zip").is_file()


def test_md5_hint_names_the_archive_that_failed(tmp_path: Path) -> None:
    served = tmp_path / "served"
    make_chesapeake_archives(served, {"ny": {"train": ["m_4207301_ne_18_1"]}}, size=32)
    with LoopbackServer(served, ranges=False) as server:
        over = [
            "region=chesapeake_ny",
            f"paths.root={tmp_path / 'out'}",
            "region.source.splits=[train]",
            f"+acquire.archives.base.url={server.url('cvpr_chesapeake_landcover.zip')}",
            "+acquire.archives.prior_extension.url="
            f"{server.url('cvpr_chesapeake_landcover_prior_extension.zip')}",
            "acquire.progress=false",
        ]
        with pytest.raises(DownloadError) as err:
            acquire(compose_config(over))
        assert "+acquire.archives.base.md5=null" in one_line(err)
        with pytest.raises(DownloadError) as err:
            acquire(compose_config([*over, "+acquire.archives.base.md5=null"]))
        assert "+acquire.archives.prior_extension.md5=null" in one_line(err)


# --- cooccurrence on test tiles ----------------------------------------------------------------


def write_labelled_region(root: Path, splits: tuple[str, ...]) -> Path:
    """Tiles of region=tiny with 1 m labels and NLCD codes, at the region's manifest path."""
    region_dir = root / "regions" / "tiny"
    rng = np.random.default_rng(0)
    tiles = []
    for i, split in enumerate(splits):
        grid = make_grid(60, origin=(400000.0 + 60 * i, 4300000.0))
        lc = rng.integers(1, 7, size=grid.shape).astype(np.uint8)
        nlcd = np.full(grid.shape, (11, 41, 81, 22)[i % 4], dtype=np.uint8)
        layers = {
            "lc": write_raster(region_dir / f"t{i}_lc.tif", lc, grid, nodata=0),
            "nlcd": write_raster(region_dir / f"t{i}_nlcd.tif", nlcd, grid, nodata=0),
        }
        tiles.append(Tile(f"t{i}", split, grid.crs.to_string(), grid.bounds, layers))
    return Manifest(tuple(tiles)).write(region_dir / "manifest.csv")


def coocc_overrides(root: Path, *extra: str) -> list[str]:
    return ["region=tiny", f"paths.root={root}", "region.nlcd_layer=nlcd", *extra]


def test_cooccurrence_refusal_names_allow_test_and_allow_test_alone_counts_test_tiles(
    tmp_path: Path,
) -> None:
    write_labelled_region(tmp_path, ("train", "train", "test"))
    with pytest.raises(ConfigError) as err:
        cooccurrence(compose_config(coocc_overrides(tmp_path, "region.train_splits=[train,test]")))
    message = one_line(err)
    assert "cooccurrence.allow_test=true" in message and "allow_test=True" not in message
    assert "region.train_splits" in message
    # The default counts the training tiles only ...
    with pytest.warns(UserWarning, match="uniform columns"):  # NLCD classes never seen
        assert cooccurrence(compose_config(coocc_overrides(tmp_path))).tiles == ["t0", "t1"]
    # ... and cooccurrence.allow_test=true alone adds the evaluation tiles.
    with pytest.warns(UserWarning):
        coocc = cooccurrence(
            compose_config(coocc_overrides(tmp_path, "cooccurrence.allow_test=true"))
        )
    assert coocc.tiles == ["t0", "t1", "t2"]


def test_cooccurrence_on_a_region_of_test_tiles_only(tmp_path: Path) -> None:
    """A region acquired with its test split only: no training tiles to count on."""
    write_labelled_region(tmp_path, ("test", "test"))
    with pytest.raises(ConfigError) as err:
        cooccurrence(compose_config(coocc_overrides(tmp_path)))
    message = one_line(err)
    assert "no tiles of splits ['train']" in message and "has splits ['test']" in message
    for setting in ("region.train_splits", "cooccurrence.source=", "cooccurrence.allow_test=true"):
        assert setting in message
    with pytest.warns(UserWarning):
        coocc = cooccurrence(
            compose_config(coocc_overrides(tmp_path, "cooccurrence.allow_test=true"))
        )
    assert coocc.tiles == ["t0", "t1"]


def test_library_refusal_of_a_test_split_outside_eval_splits(tmp_path: Path) -> None:
    """``test`` tiles are refused even where ``region.eval_splits`` names another split."""
    write_labelled_region(tmp_path, ("train", "test"))
    over = coocc_overrides(tmp_path, "region.train_splits=[train,test]", "region.eval_splits=[val]")
    with pytest.raises(ConfigError, match=r"refusing .* 1 test tile\(s\) \(t1\)") as err:
        cooccurrence(compose_config(over))
    assert "cooccurrence.allow_test=true" in one_line(err)


# --- lcip-predict with no tile of predict.splits -----------------------------------------------


def predict_overrides(root: Path) -> list[str]:
    write_prior_region(root)
    over = tiny_overrides(root)
    model = instantiate(
        compose_config(over).model, classes=scheme_of(compose_config(over)).num_classes
    )
    ckpt = root / "weights.pt"
    torch.save(model.state_dict(), ckpt)
    return [*over, f"predict.checkpoint={ckpt}"]


def test_predict_no_tiles_names_splits_and_setting(tmp_path: Path) -> None:
    over = predict_overrides(tmp_path)
    with pytest.raises(ConfigError) as err:
        predict(compose_config([*over, "region.eval_splits=[val5]"]))
    message = one_line(err)
    assert "no tiles selected" in message and "predict.splits=['val5']" in message
    assert "has splits ['test', 'train', 'val']" in message
    assert "set predict.splits=[test,train,val]" in message
    # The console script prints the same line and exits with status 2.
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from lcip.cli import predict; predict()",
            *over,
            "predict.splits=[val5]",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert "error:" in run.stderr and "set predict.splits=[test,train,val]" in run.stderr


# --- lcip-evaluate scores region.eval_splits only ----------------------------------------------


def test_evaluate_scores_only_eval_splits_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    over = predict_overrides(tmp_path)
    wide = [*over, "predict.splits=[train,val,test]"]
    assert len(Manifest.read(predict(compose_config(wide)))) == 4
    with caplog.at_level(logging.WARNING, logger="lcip.stages.evaluate"):
        ev = evaluate(compose_config(wide))
    assert {r["tile"] for r in ev.rows()} == {"t3", "all"}  # t3: the only test tile
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "not scored" in r.getMessage()
    ]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "3 predicted tiles of splits ['train', 'val']" in warnings[0]
    assert "region.eval_splits=['test']" in warnings[0]
    # Predictions of no evaluation tile: one line naming both settings.
    with pytest.raises(ConfigError) as err:
        evaluate(compose_config([*wide, "region.eval_splits=[val5]"]))
    message = one_line(err)
    assert "region.eval_splits=['val5']" in message and "predict.splits" in message
