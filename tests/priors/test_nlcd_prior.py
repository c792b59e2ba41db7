"""Tests of the NLCD prior: formula, seams between tiles, nodata, reprojection, errors."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform, transform_bounds
from scipy import ndimage

from lcip.classes import CHESAPEAKE4, NLCD_CODES
from lcip.errors import DataError
from lcip.io.raster import Grid, write_raster
from lcip.priors.cooccurrence import Cooccurrence
from lcip.priors.nlcd import NLCDPriorParams, nlcd_prior, prior_from_index, read_nlcd_index
from tests.markers import needs_realdata
from tests.paths import REALDATA

UTM = CRS.from_epsg(32618)
ALBERS = CRS.from_epsg(5070)
ORIGIN = (499_993.0, 4_400_017.0)  # NLCD 30 m grid origin, off the tiles' 30 m multiples
PRESENT = (11, 21, 22, 41, 42, 81, 82)


def _write_nlcd(path: Path, codes: np.ndarray, origin=ORIGIN, crs=UTM, nodata=0) -> Path:
    grid = Grid(crs, Affine(30.0, 0, origin[0], 0, -30.0, origin[1]), *codes.shape)
    return write_raster(path, codes.astype(np.uint8), grid, nodata=nodata)


def _region_codes(seed: int = 0, shape=(16, 15)) -> np.ndarray:
    """Random NLCD blocks with a few nodata cells."""
    rng = np.random.default_rng(seed)
    codes = rng.choice(PRESENT, size=shape)
    codes[rng.random(shape) < 0.08] = 0
    return codes


def _grid(left: float, top: float, height: int, width: int) -> Grid:
    return Grid(UTM, Affine(1.0, 0, left, 0, -1.0, top), height, width)


def _matrix(num_classes: int = 4, seed: int = 1) -> np.ndarray:
    m = np.random.default_rng(seed).random((num_classes, 17)) + 0.05
    return m / m.sum(axis=0)


def _reference(codes, grid, matrix, sigma=31.0, eps=1e-4, halo=124, origin=ORIGIN):
    """Direct computation: nearest NLCD at pixel centres, float64 scipy blur, crop, smooth."""
    big = grid.expand(halo)
    xs = big.transform.c + np.arange(big.width) + 0.5
    ys = big.transform.f - np.arange(big.height) - 0.5
    i = np.floor((origin[1] - ys) / 30).astype(int)
    j = np.floor((xs - origin[0]) / 30).astype(int)
    inside = (i[:, None] >= 0) & (i[:, None] < codes.shape[0])
    inside = inside & (j[None] >= 0) & (j[None] < codes.shape[1])
    pix = np.where(
        inside, codes[i.clip(0, codes.shape[0] - 1)][:, j.clip(0, codes.shape[1] - 1)], 0
    )
    blurred = np.zeros((17, *pix.shape))
    for n, code in enumerate(NLCD_CODES):
        if n and np.any(pix == code):
            layer = (pix == code).astype(np.float64)
            blurred[n] = ndimage.gaussian_filter(layer, sigma, truncate=4.0, mode="nearest")
    m0 = matrix.copy()
    m0[:, 0] = 0
    b = np.einsum("ln,nhw->lhw", m0, blurred)[:, halo:-halo, halo:-halo]
    v = blurred[1:].sum(axis=0)[halo:-halo, halo:-halo]
    valid = pix[halo:-halo, halo:-halo] != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        p = (b / v + eps) / (1 + matrix.shape[0] * eps)
        p = p / p.sum(axis=0)
    return np.where(valid, p, 0.0), valid


@pytest.fixture
def region(tmp_path):
    codes = _region_codes()
    return _write_nlcd(tmp_path / "nlcd.tif", codes), codes


def test_matches_direct_reference(region):
    path, codes = region
    grid = _grid(500_050.0, 4_399_950.0, 150, 170)
    matrix = _matrix()
    prior, valid = nlcd_prior(grid, path, matrix, sigma=12.0)  # halo 48 px
    ref, ref_valid = _reference(codes, grid, matrix, sigma=12.0, halo=48)
    assert prior.dtype == np.float32 and prior.shape == (4, 150, 170)
    np.testing.assert_array_equal(valid, ref_valid)
    assert not valid.all() and valid.any()
    assert np.abs(prior - ref).max() < 1e-5


def test_adjacent_tiles_have_no_seams(region):
    """Two neighbouring tiles equal their union's prior (halo read from a region raster)."""
    path, _ = region
    matrix = _matrix(seed=2)
    left, right = _grid(500_050.0, 4_399_950.0, 140, 160), _grid(500_210.0, 4_399_950.0, 140, 160)
    union = _grid(500_050.0, 4_399_950.0, 140, 320)
    p_left, v_left = nlcd_prior(left, path, matrix)
    p_right, v_right = nlcd_prior(right, path, matrix)
    p_union, v_union = nlcd_prior(union, path, matrix)
    assert np.abs(p_left - p_union[:, :, :160]).max() < 1e-5
    assert np.abs(p_right - p_union[:, :, 160:]).max() < 1e-5
    np.testing.assert_array_equal(np.concatenate([v_left, v_right], axis=1), v_union)
    # Below too: a tile under the left one.
    below = _grid(500_050.0, 4_399_810.0, 100, 160)
    tall = _grid(500_050.0, 4_399_950.0, 240, 160)
    p_below, _ = nlcd_prior(below, path, matrix)
    p_tall, _ = nlcd_prior(tall, path, matrix)
    assert np.abs(p_below - p_tall[:, 140:]).max() < 1e-5


def test_sums_to_one_and_zero_on_nodata(region):
    path, _ = region
    grid = _grid(500_100.0, 4_399_900.0, 120, 130)
    prior, valid = nlcd_prior(grid, path, _matrix(5))
    sums = prior.sum(axis=0)
    assert np.abs(sums[valid] - 1).max() < 1e-3
    assert np.abs(sums[valid] - 1).max() < 1e-6  # float32 renormalization
    assert not np.any(prior[:, ~valid])
    assert np.isfinite(prior).all() and (prior >= 0).all()
    index = read_nlcd_index(path, grid)
    np.testing.assert_array_equal(valid, index != 0)


def test_one_class_region_equals_smoothed_column(tmp_path):
    """One class with nodata holes and the region edge nearby: nodata never dilutes."""
    codes = np.full((12, 12), 41)
    codes[4:6, 5:8] = 0
    path = _write_nlcd(tmp_path / "nlcd.tif", codes)
    matrix = _matrix(4, seed=3)
    eps = 1e-4
    prior, valid = nlcd_prior(_grid(500_000.0, 4_399_990.0, 200, 220), path, matrix)
    column = (matrix[:, NLCD_CODES.index(41)] + eps) / (1 + 4 * eps)
    assert (~valid).sum() == 60 * 77  # the hole only: 2 x 3 cells of 30 m, cut by the tile edge
    np.testing.assert_allclose(prior[:, valid], column[:, None].repeat(valid.sum(), 1), atol=2e-6)


def test_nodata_value_other_than_zero(tmp_path):
    codes = np.full((10, 10), 82)
    codes[:2] = 255  # the tile's top 33 rows
    path = _write_nlcd(tmp_path / "nlcd255.tif", codes, nodata=255)
    prior, valid = nlcd_prior(_grid(500_000.0, 4_399_990.0, 100, 100), path, _matrix())
    assert not valid[:33].any() and valid[33:].all()
    assert np.abs(prior.sum(axis=0)[valid] - 1).max() < 1e-6


def test_unknown_code_names_file(tmp_path):
    codes = _region_codes()
    codes[3, 3] = 99
    path = _write_nlcd(tmp_path / "nlcd_bad.tif", codes)
    with pytest.raises(DataError, match=r"nlcd_bad\.tif.*\[99\]"):
        nlcd_prior(_grid(500_050.0, 4_399_950.0, 60, 60), path, _matrix())
    with pytest.raises(DataError, match="does not exist"):
        nlcd_prior(_grid(500_050.0, 4_399_950.0, 60, 60), tmp_path / "none.tif", _matrix())


def test_albers_nlcd_is_reprojected(tmp_path, caplog):
    """NLCD in CONUS Albers (like the real product) is warped onto the UTM tile with nearest."""
    grid = _grid(500_050.0, 4_399_950.0, 90, 100)
    sigma, halo = 10.0, 40
    west, south, east, north = transform_bounds(UTM, ALBERS, *grid.expand(halo).bounds)
    origin = (math.floor(west / 30) * 30 - 60.0, math.ceil(north / 30) * 30 + 60.0)
    shape = (int((origin[1] - south) // 30) + 3, int((east - origin[0]) // 30) + 3)
    codes = _region_codes(seed=4, shape=shape)
    path = _write_nlcd(tmp_path / "nlcd_albers.tif", codes, origin=origin, crs=ALBERS)
    matrix = _matrix()
    with caplog.at_level(logging.INFO, logger="lcip.priors.nlcd"):
        prior, valid = nlcd_prior(grid, path, matrix, sigma=sigma)
    assert "reprojected" in caplog.text and "EPSG:5070" in caplog.text
    assert np.abs(prior.sum(axis=0)[valid] - 1).max() < 1e-6
    # The warp is nearest: pixel centres projected to Albers fall in the cell read (GDAL's
    # approximate transformer may flip a few pixels on cell edges).
    big = grid.expand(halo)
    index = read_nlcd_index(path, grid, halo=halo)
    cols, rows = np.meshgrid(np.arange(big.width) + 0.5, np.arange(big.height) + 0.5)
    xs, ys = big.transform * (cols.ravel(), rows.ravel())
    ax, ay = transform(UTM, ALBERS, xs, ys)
    i = np.floor((origin[1] - np.asarray(ay)) / 30).astype(int)
    j = np.floor((np.asarray(ax) - origin[0]) / 30).astype(int)
    expected = np.searchsorted(NLCD_CODES, codes[i, j]).reshape(big.shape)
    assert (index == expected).mean() > 0.99
    # The prior is the formula applied to that (non-block) index map.
    ref, _ = prior_from_index(index.astype(np.int64), matrix, NLCDPriorParams(sigma), crop=halo)
    np.testing.assert_allclose(prior, ref, atol=1e-6)


def test_params_cooccurrence_object_and_errors(region, caplog):
    path, _ = region
    grid = _grid(500_050.0, 4_399_950.0, 50, 60)
    counts = np.random.default_rng(5).integers(1, 100, (4, 17))
    coocc = Cooccurrence.from_counts(counts, CHESAPEAKE4)
    params = NLCDPriorParams(sigma=8.0, smoothing=1e-3)
    assert params.halo_px == 32
    assert params.as_tags()["nlcd_prior_sigma"] == 8.0
    a, va = params.compute(grid, path, coocc)
    b, vb = nlcd_prior(grid, path, coocc.matrix, sigma=8.0, smoothing=1e-3, halo=32)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(va, vb)
    with pytest.raises(ValueError, match=r"shape \(C, 17\)"):
        nlcd_prior(grid, path, np.ones((4, 16)) / 4)
    with pytest.raises(ValueError, match="positive"):
        NLCDPriorParams(sigma=0)
    with caplog.at_level(logging.WARNING, logger="lcip.priors.nlcd"):
        nlcd_prior(grid, path, coocc, sigma=8.0, halo=5)
    assert "seams" in caplog.text or "not match" in caplog.text


def test_tile_outside_nlcd_is_all_invalid(region, caplog):
    path, _ = region
    with caplog.at_level(logging.WARNING, logger="lcip.priors.nlcd"):
        prior, valid = nlcd_prior(_grid(510_000.0, 4_399_950.0, 40, 50), path, _matrix())
    assert not valid.any() and not prior.any()
    assert "no NLCD data" in caplog.text


WV = REALDATA / "chesapeake_wv_patches"


@needs_realdata(WV)
def test_real_patch_prior():
    """A real 1 m NLCD patch (EPSG:26917): valid everywhere, sums to 1, follows the NLCD."""
    folder = WV / "train" / "m_3708020_sw_17_1_p0"
    grid = Grid.of(folder / "naip.tif")
    matrix = np.full((4, 17), 0.25)
    matrix[:, NLCD_CODES.index(41)] = (0.01, 0.9, 0.05, 0.04)
    prior, valid = nlcd_prior(grid, folder / "nlcd.tif", matrix)
    assert valid.all() and prior.shape == (4, 256, 256)
    assert np.abs(prior.sum(axis=0) - 1).max() < 1e-6
    forest = read_nlcd_index(folder / "nlcd.tif", grid) == NLCD_CODES.index(41)
    assert prior[1][forest].mean() > prior[1][~forest].mean()
