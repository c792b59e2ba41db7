"""The last bad inputs a new user meets (issue 20, item 6): each is one line naming the file or key.

Tried as a user would: a label raster on a grid shifted by a few metres (counted into the
cooccurrence matrix, trained on, scored), a training tile whose imagery is nodata everywhere,
``loss.name=foo``, and ``paths.root`` under a regular file.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from lcip.classes import CHESAPEAKE4
from lcip.config import compose_config
from lcip.data.datamodules import TileDataModule
from lcip.data.datasets import LayerSpec, TileWindowDataset
from lcip.errors import ConfigError, GridMismatchError
from lcip.evaluation.evaluate import MapSpec, evaluate_manifest
from lcip.io.align import align_raster
from lcip.io.manifest import Manifest, Tile
from lcip.io.nodata import empty_imagery_tiles, has_valid_imagery, warn_empty_imagery
from lcip.io.raster import Grid, check_same_grid, write_raster
from lcip.stages.cooccurrence import cooccurrence
from lcip.stages.evaluate import evaluate
from lcip.stages.predict import predict
from lcip.stages.prior import prior
from lcip.stages.train import train
from tests.conftest import make_grid
from tests.test_user_errors import predict_overrides


def one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def shifted(grid: Grid, dx: float, dy: float) -> Grid:
    """``grid`` with its origin moved by (dx, dy) CRS units."""
    t = grid.transform
    return Grid(grid.crs, Affine(t.a, t.b, t.c + dx, t.d, t.e, t.f + dy), grid.height, grid.width)


def shift_raster(path: Path, dx: float, dy: float) -> None:
    """Rewrite a raster, same pixels, on its grid shifted by (dx, dy)."""
    with rasterio.open(path) as src:
        data, nodata = src.read(), src.nodata
    write_raster(path, data, shifted(Grid.of(path), dx, dy), nodata=nodata)


# --- 1. layers of a tile on different grids ----------------------------------------------------


def test_check_same_grid_says_how_the_grids_differ(tmp_path: Path) -> None:
    grid = make_grid(32)
    zeros = np.zeros((32, 32), np.uint8)
    naip = write_raster(tmp_path / "naip.tif", zeros, grid)
    lc = write_raster(tmp_path / "lc.tif", zeros, shifted(grid, 3.0, -2.0))
    with pytest.raises(GridMismatchError) as err:
        check_same_grid({"naip": naip, "lc": lc}, "tile t0")
    message = one_line(err)
    assert message.startswith(f"{lc}: layer 'lc' of tile t0 is on grid ")
    assert f"'naip' ({naip})" in message
    assert "origin shifted by (3, -2) m" in message
    assert "lcip.io.align.align_raster" in message
    # Float noise far below a pixel is the same grid.
    noisy = write_raster(tmp_path / "noisy.tif", zeros, shifted(grid, 1e-9, -1e-9))
    assert check_same_grid({"naip": naip, "noisy": noisy}).same_as(grid)
    # Other differences are named too.
    other_crs = Grid(CRS.from_epsg(32617), grid.transform, 32, 32)
    assert shifted(grid, 3, -2).difference(grid) == "origin shifted by (3, -2) m"
    assert other_crs.difference(grid) == "CRS EPSG:32617, not EPSG:32618"
    coarse = Grid(grid.crs, Affine(2, 0, grid.transform.c, 0, -2, grid.transform.f), 16, 16)
    assert coarse.difference(grid) == "pixel size (2, -2) m, not (1, -1), 16x16 px, not 32x32"
    assert make_grid(32, width=30).difference(grid) == "30x32 px, not 32x32"
    assert grid.difference(grid) == "same grid"


def write_region(root: Path, shifted_tile: int | None = None) -> Manifest:
    """Tiles of region=tiny (naip, lc, nlcd); one tile's labels optionally shifted by (3, -2) m."""
    region_dir = root / "regions" / "tiny"
    rng = np.random.default_rng(0)
    tiles = []
    for i, split in enumerate(("train", "train", "test")):
        grid = make_grid(60, origin=(400000.0 + 60 * i, 4300000.0))
        naip = rng.integers(1, 255, size=(4, *grid.shape)).astype(np.uint8)
        lc = rng.integers(1, 7, size=grid.shape).astype(np.uint8)
        nlcd = np.full(grid.shape, (11, 41, 81)[i], dtype=np.uint8)
        lc_grid = shifted(grid, 3.0, -2.0) if i == shifted_tile else grid
        layers = {
            "naip": write_raster(region_dir / f"t{i}_naip.tif", naip, grid),
            "lc": write_raster(region_dir / f"t{i}_lc.tif", lc, lc_grid, nodata=0),
            "nlcd": write_raster(region_dir / f"t{i}_nlcd.tif", nlcd, grid, nodata=0),
        }
        tiles.append(Tile(f"t{i}", split, grid.crs.to_string(), grid.bounds, layers))
    return Manifest.read(Manifest(tuple(tiles)).write(region_dir / "manifest.csv"))


def test_cooccurrence_refuses_labels_off_the_imagery_grid(tmp_path: Path) -> None:
    manifest = write_region(tmp_path, shifted_tile=1)
    cfg = compose_config(["region=tiny", f"paths.root={tmp_path}", "region.nlcd_layer=nlcd"])
    with pytest.raises(GridMismatchError) as err:
        cooccurrence(cfg)
    message = one_line(err)
    tile = manifest.tile("t1")
    assert message.startswith(f"{tile.layer('lc')}: layer 'lc' of tile t1 is on grid")
    assert str(tile.layer("naip")) in message and "origin shifted by (3, -2) m" in message
    assert not (Path(cfg.cooccurrence.dir) / "cooccurrence.csv").exists()
    # The fix the message names: re-align the labels onto the imagery's grid.
    aligned = tile.layer("lc").with_name("t1_lc_aligned.tif")
    align_raster(tile.layer("lc"), aligned, Grid.of(tile.layer("naip")), "categorical")
    tile.layer("lc").unlink()
    aligned.rename(tile.layer("lc"))
    with pytest.warns(UserWarning, match="uniform"):  # NLCD classes never seen
        assert cooccurrence(cfg).tiles == ["t0", "t1"]


def test_published_prior_off_the_imagery_grid_is_not_resampled(tmp_path: Path) -> None:
    manifest = write_region(tmp_path)
    paths = {}
    for tile in manifest:
        grid = Grid.of(tile.layer("naip"))
        on = shifted(grid, 3.0, -2.0) if tile.tile_id == "t0" else grid
        data = np.full((4, *grid.shape), 60, np.uint8)
        paths[tile.tile_id] = write_raster(tmp_path / f"{tile.tile_id}_paper.tif", data, on)
    manifest.with_layer("paper_prior", paths).write(manifest.path or "")
    cfg = compose_config(["region=tiny", f"paths.root={tmp_path}", "prior=published"])
    with pytest.raises(GridMismatchError) as err:
        prior(cfg)
    message = one_line(err)
    assert message.startswith(f"{paths['t0']}: layer 'paper_prior' of tile t0 is on grid")
    assert "origin shifted by (3, -2) m" in message


def test_training_data_refuses_labels_off_the_imagery_grid(tmp_path: Path) -> None:
    manifest = write_region(tmp_path, shifted_tile=0)
    layers = LayerSpec(image="naip", prior=None, label="lc")
    with pytest.raises(GridMismatchError) as err:
        TileWindowDataset(manifest, layers, CHESAPEAKE4)
    assert "layer 'lc' of tile t0" in one_line(err) and "origin shifted by (3, -2) m" in str(
        err.value
    )


def test_evaluation_blames_the_shifted_labels_not_the_map(tmp_path: Path) -> None:
    manifest = write_region(tmp_path, shifted_tile=2)
    maps = [MapSpec("NLCD", "nlcd", kind="nlcd")]
    with pytest.raises(GridMismatchError) as err:
        evaluate_manifest(manifest.select(["test"]), maps, CHESAPEAKE4, image_layer="naip")
    message = one_line(err)
    assert message.startswith(f"{manifest.tile('t2').layer('lc')}: layer 'lc' of tile t2")
    assert f"'naip' ({manifest.tile('t2').layer('naip')})" in message
    assert "origin shifted by (3, -2) m" in message


def test_evaluate_stage_refuses_labels_off_the_grid(tmp_path: Path) -> None:
    over = predict_overrides(tmp_path)
    predictions = Manifest.read(predict(compose_config(over)))
    label = predictions.tile("t3").layer("lc")
    shift_raster(label, 3.0, -2.0)
    with pytest.raises(GridMismatchError) as err:
        evaluate(compose_config(over))
    message = one_line(err)
    assert message.startswith(f"{label}: layer 'lc' of tile t3 is on grid")
    assert "origin shifted by (3, -2) m" in message


# --- 2. a training tile whose imagery is nodata everywhere --------------------------------------


def test_training_warns_about_a_tile_of_nodata_imagery(
    fake_region: Manifest, caplog: pytest.LogCaptureFixture
) -> None:
    empty = fake_region.tile("t1").layer("naip")
    write_raster(empty, np.zeros((4, 96, 96), np.uint8), Grid.of(empty))  # black: no data
    dm = TileDataModule(fake_region, crop_size=32, batch_size=4)
    with caplog.at_level(logging.WARNING, logger="lcip.io.nodata"):
        dm.setup("fit")
    lines = [r.getMessage() for r in caplog.records if r.name == "lcip.io.nodata"]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith(f"tile t1: imagery {empty} holds no valid pixel")
    # Imagery with zero_is_nodata=false is data, however black.
    caplog.clear()
    assert warn_empty_imagery(fake_region.select(["train"]), "naip", zero_is_nodata=False) == []
    assert not caplog.records


def test_nodata_imagery_is_found_exactly(tmp_path: Path) -> None:
    grid = make_grid(300)
    black = np.zeros((3, 300, 300), np.uint8)
    assert not has_valid_imagery(write_raster(tmp_path / "black.tif", black, grid))
    corner = black.copy()
    corner[1, 299, 0] = 7  # one pixel no probe window covers: found by the whole read
    assert has_valid_imagery(write_raster(tmp_path / "corner.tif", corner, grid))
    # A declared nodata value (255), with overviews: nodata everywhere, whatever 0 means.
    white = np.full((3, 300, 300), 255, np.uint8)
    cog = write_raster(tmp_path / "white.tif", white, grid, nodata=255, cog=True)
    assert not has_valid_imagery(cog)
    white[:, 150:, 150:] = 0  # zeros are data when the raster declares another nodata
    assert has_valid_imagery(write_raster(tmp_path / "half.tif", white, grid, nodata=255))
    nan = np.full((2, 300, 300), np.nan, np.float32)
    assert not has_valid_imagery(write_raster(tmp_path / "nan.tif", nan, grid, nodata=np.nan))
    tiles = [
        Tile(name, "train", grid.crs.to_string(), grid.bounds, {"naip": tmp_path / f"{name}.tif"})
        for name in ("black", "corner", "white", "half")
    ]
    assert empty_imagery_tiles(Manifest(tuple(tiles)), "naip") == ["black", "white"]


# --- 3. an unknown loss name ---------------------------------------------------------------------


def test_unknown_loss_names_the_key(tmp_path: Path) -> None:
    cfg = compose_config(["region=tiny", f"paths.root={tmp_path}", "loss.name=foo"])
    with pytest.raises(ConfigError) as err:
        train(cfg)
    message = one_line(err)
    assert message.startswith("loss.name=foo: unknown loss 'foo'; choose one of ['qr', ")
    assert not Path(cfg.run_dir).exists()  # refused before any work


# --- 4. paths.root under a regular file ----------------------------------------------------------


def run_script(
    script: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", f"from lcip.cli import {script}; {script}()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_paths_root_under_a_file_is_one_line(tmp_path: Path) -> None:
    somefile = tmp_path / "somefile"
    somefile.write_text("not a folder")
    root = somefile / "out"
    proc = run_script("region", "region=tiny", f"paths.root={root}")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: paths.root={root}: {somefile} is a file, not a folder"
    ]
    assert somefile.read_text() == "not a folder"
    # Hydra's own log folder setting, and a multirun's, are checked the same way.
    proc = run_script(
        "cooccurrence", f"paths.root={tmp_path / 'ok'}", f"hydra.run.dir={somefile}/logs"
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        == f"error: hydra.run.dir={somefile}/logs: {somefile} is a file, not a folder"
    )
    proc = run_script("prior", "--multirun", f"paths.root={somefile}")
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == f"error: paths.root={somefile}: {somefile} is a file, not a folder"
    )
    assert not (tmp_path / "ok").exists()
