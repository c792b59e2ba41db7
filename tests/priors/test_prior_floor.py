"""The NLCD prior streamed by strips: same values as the whole-tile prior, ZSTD on disk, errors.

Also the prior benchmark (``scripts/bench_prior.py``) end to end on a small tile.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import rasterio
from affine import Affine

from lcip.classes import CHESAPEAKE4
from lcip.io.manifest import Tile
from lcip.io.raster import Grid, raster_writer, write_raster, write_row_strips
from lcip.priors.blur import CHUNK, StripBlur, blur_onehot
from lcip.priors.build import NLCDPriorJob, write_prior
from lcip.priors.nlcd import STRIP_ROWS, PriorStrips, nlcd_prior, read_nlcd_index
from tests.paths import ROOT
from tests.priors.test_nlcd_prior import UTM, _grid, _matrix, _reference, _region_codes, _write_nlcd


def _tile(tmp_path: Path, height: int, width: int) -> tuple[Tile, np.ndarray]:
    """A tile taller than two strips (and not a multiple of one) over a 30 m NLCD raster."""
    codes = _region_codes(shape=(30, 20))
    nlcd = _write_nlcd(tmp_path / "nlcd.tif", codes)
    grid = _grid(500_050.0, 4_399_950.0, height, width)
    naip = write_raster(tmp_path / "naip.tif", np.full((4, height, width), 9, np.uint8), grid)
    tile = Tile("t0", "train", UTM.to_string(), grid.bounds, {"naip": naip, "nlcd": nlcd})
    return tile, codes


def test_strip_blur_equals_whole_blur() -> None:
    rng = np.random.default_rng(0)
    index = np.repeat(np.repeat(rng.integers(0, 5, (20, 9)), 30, 0), 30, 1)[7:590, 3:260]
    whole = blur_onehot(index, 5, 12.0, crop=20)
    strips = StripBlur(index, 5, 12.0, crop=20)
    assert strips.shape == whole.shape
    out = np.empty((5, 2 * CHUNK, whole.shape[2]), np.float32)
    for row in range(0, whole.shape[1], 2 * CHUNK):
        part = out[:, : min(2 * CHUNK, whole.shape[1] - row)]
        strips.rows(row, part)
        np.testing.assert_array_equal(part, whole[:, row : row + part.shape[1]])  # same chunks
    odd = np.empty((5, 37, whole.shape[2]), np.float32)
    strips.rows(101, odd)  # a strip not aligned on the chunks: equal to rounding
    np.testing.assert_allclose(odd, whole[:, 101:138], atol=1e-6)
    with pytest.raises(ValueError, match="rows"):
        strips.rows(whole.shape[1] - 10, odd)


def test_strip_blur_of_stripes_uses_the_transposed_path() -> None:
    # Horizontal stripes: many row segments, one column segment; blur_onehot goes columns-last.
    index = np.tile((np.arange(150) % 3)[:, None], (1, 200))
    whole = blur_onehot(index, 3, 5.0)
    out = np.empty((3, 50, 200), np.float32)
    strips = StripBlur(index, 3, 5.0)
    assert strips._whole is not None  # blurred whole, columns-last, and served by slices
    strips.rows(60, out)
    np.testing.assert_array_equal(out, whole[:, 60:110])


def test_prior_with_unnormalized_matrix_blurs_its_own_denominator(tmp_path: Path) -> None:
    """Columns not summing to 1: V is blurred on its own, and the formula still holds."""
    codes = _region_codes()
    path = _write_nlcd(tmp_path / "nlcd.tif", codes)
    grid = _grid(500_050.0, 4_399_950.0, 150, 170)
    matrix = _matrix() * np.linspace(0.5, 2.0, 17)  # column sums 0.5 .. 2
    prior, valid = nlcd_prior(grid, path, matrix, sigma=12.0)
    ref, ref_valid = _reference(codes, grid, matrix, sigma=12.0, halo=48)
    np.testing.assert_array_equal(valid, ref_valid)
    assert np.abs(prior - ref).max() < 1e-5
    normalized = _matrix()
    index = read_nlcd_index(path, grid, halo=48)
    strips = PriorStrips(index, normalized, crop=48)
    assert not strips._own_denominator  # the sum of the class layers serves as V
    assert PriorStrips(index, matrix, crop=48)._own_denominator


def test_streamed_job_writes_the_whole_tile_prior(tmp_path: Path) -> None:
    height, width = 2 * STRIP_ROWS + 70, 300
    tile, _ = _tile(tmp_path, height, width)
    matrix = _matrix()
    job = NLCDPriorJob(tmp_path / "priors", scheme=CHESAPEAKE4, matrix=matrix, sigma_m=12.0)
    result = job(tile)
    assert result.status == "written"
    grid = Grid.of(tile.layer("naip"))
    prior, valid = nlcd_prior(grid, tile.layer("nlcd"), matrix, sigma=12.0)
    with rasterio.open(result.path) as src:
        assert src.compression is not None and src.compression.name.lower() == "zstd"
        assert src.dtypes == ("float32",) * 4 and src.descriptions == CHESAPEAKE4.classes
        assert src.block_shapes[0] == (256, 256)
        tags = src.tags()
        written = src.read()
    assert tags["recipe"] == "nlcd" and json.loads(tags["sources"]) == [str(tile.layer("nlcd"))]
    assert not valid.all() and valid.any()
    np.testing.assert_array_equal(np.isfinite(written).all(0), valid)
    np.testing.assert_array_equal(written[:, valid], prior[:, valid])  # the very same values
    assert result.valid_fraction == pytest.approx(valid.mean())
    assert job(tile).status == "skipped"  # provenance unchanged: not rebuilt
    # a whole-array prior written by write_prior reads back the same
    again = write_prior(tmp_path / "whole.tif", prior, valid, grid, CHESAPEAKE4, {"recipe": "x"})
    with rasterio.open(again) as src:
        np.testing.assert_array_equal(src.read(), written)


def test_streamed_job_on_a_tile_without_nlcd_writes_nothing(tmp_path: Path) -> None:
    tile, _ = _tile(tmp_path, 64, 64)
    far = Grid(UTM, Affine(1.0, 0, 600_000.0, 0, -1.0, 4_000_000.0), 64, 64)
    naip = write_raster(tmp_path / "far.tif", np.full((4, 64, 64), 9, np.uint8), far)
    tile = Tile("far", "train", UTM.to_string(), far.bounds, {**tile.layers, "naip": naip})
    job = NLCDPriorJob(tmp_path / "priors", scheme=CHESAPEAKE4, matrix=_matrix())
    result = job(tile)
    assert result.status == "no_valid" and not job.output(tile).exists()


def _strips(count: int, fail_at: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    for n in range(count):
        if n == fail_at:
            raise RuntimeError("compute failed")
        yield n * 256, np.full((1, 256, 256), n, np.uint8)


def test_write_row_strips_overlaps_and_fails_cleanly(tmp_path: Path) -> None:
    grid = _grid(500_000.0, 4_400_000.0, 4 * 256, 256)
    out = tmp_path / "strips.tif"
    with raster_writer(out, grid, 1, "uint8") as dst:
        assert write_row_strips(dst, _strips(4)) == 4
    with rasterio.open(out) as src:
        assert [int(src.read(1)[256 * n, 0]) for n in range(4)] == [0, 1, 2, 3]
    # an error while computing a strip: raised, and the raster is not left behind
    bad = tmp_path / "bad.tif"
    with pytest.raises(RuntimeError, match="compute failed"):
        with raster_writer(bad, grid, 1, "uint8") as dst:
            write_row_strips(dst, _strips(4, fail_at=2))
    assert not bad.exists() and not list(tmp_path.glob("*.tmp*"))
    # an error while writing (a strip of the wrong band count): raised in the caller
    wrong = ((0, np.zeros((2, 256, 256), np.uint8)) for _ in range(3))
    with pytest.raises(Exception, match=r"band|shape|count"):
        with raster_writer(tmp_path / "wrong.tif", grid, 1, "uint8") as dst:
            write_row_strips(dst, wrong)
    assert not (tmp_path / "wrong.tif").exists()


def _bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_prior", ROOT / "scripts/bench_prior.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_prior"] = module
    spec.loader.exec_module(module)
    return module


def test_bench_prior_reports_the_floor_in_the_same_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _bench_module()
    assert bench.main(["--size", "600x520", "--repeat", "1", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| step |") and len(rows) == 5
    assert "I/O floor" in rows[2] and rows[2].split("|")[3].strip() == "1.00x"
    assert "lcip NLCD prior" in rows[3] and rows[3].split("|")[3].strip().endswith("x")
    assert "previous path" in rows[4]


def test_nlcd_read_on_the_tile_grid_equals_gdal_nearest_warp(tmp_path: Path) -> None:
    """The fast read (same CRS, north-up) gives what GDAL's nearest warp gives, nodata too."""
    from lcip.classes import nlcd_to_index
    from lcip.io.raster import read_on_grid

    codes = _region_codes(seed=3, shape=(12, 14)).astype(np.uint8)
    codes[0, :3] = 250  # the source's nodata value
    origin = (499_993.3, 4_400_017.8)  # not on whole metres
    src = Grid(UTM, Affine(30.0, 0, origin[0], 0, -30.0, origin[1]), *codes.shape)
    path = write_raster(tmp_path / "nlcd.tif", codes, src, nodata=250)
    grid = Grid(UTM, Affine(0.6, 0, 499_950.0, 0, -0.6, 4_400_040.0), 500, 640)  # 0.6 m tile
    fast = read_nlcd_index(path, grid, halo=40)
    warped = read_on_grid(path, grid.expand(40), bands=1, fill=0)
    warped[warped == 250] = 0
    np.testing.assert_array_equal(fast, nlcd_to_index(warped))
    assert (fast == 0).any() and len(np.unique(fast)) > 4  # outside / nodata, and classes
