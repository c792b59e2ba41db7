"""Tests of the exact block blur against scipy's direct Gaussian filter."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from scipy import ndimage

from lcip.priors.blur import blur_onehot, gaussian_kernel1d, kernel_radius, partition


def _reference(index: np.ndarray, num_classes: int, sigma: float, truncate: float = 4.0):
    """Direct float64 Gaussian blur of the 1 m one-hot layers (the definition)."""
    return np.stack(
        [
            ndimage.gaussian_filter(
                (index == k).astype(np.float64), sigma, truncate=truncate, mode="nearest"
            )
            for k in range(num_classes)
        ]
    )


def _block_map(rng, height, width, num_classes, block=30, offset=(0, 0)):
    """A map constant on block x block cells, shifted by ``offset`` (cut blocks at edges)."""
    oy, ox = offset
    cells = rng.integers(0, num_classes, ((height + oy) // block + 2, (width + ox) // block + 2))
    full = np.repeat(np.repeat(cells, block, axis=0), block, axis=1)
    return np.ascontiguousarray(full[oy : oy + height, ox : ox + width]).astype(np.uint8)


def test_kernel_is_scipys():
    sigma, truncate = 31.0, 4.0
    radius = kernel_radius(sigma, truncate)
    assert radius == 124
    impulse = np.zeros(2 * radius + 41)
    impulse[radius + 20] = 1.0
    response = ndimage.gaussian_filter1d(impulse, sigma, truncate=truncate, mode="constant")
    kernel = gaussian_kernel1d(sigma, truncate)
    assert kernel.shape == (2 * radius + 1,)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(kernel, response[20 : 20 + 2 * radius + 1], rtol=0, atol=1e-15)


def test_kernel_rejects_bad_sigma():
    with pytest.raises(ValueError, match="positive"):
        gaussian_kernel1d(0.0)


@pytest.mark.parametrize(
    ("sigma", "offset", "shape"),
    [
        (31.0, (7, 13), (300, 257)),
        (31.0, (29, 1), (140, 121)),
        (4.5, (0, 0), (140, 121)),
        (4.5, (13, 22), (300, 257)),
    ],
)
def test_block_map_matches_scipy(sigma, offset, shape):
    rng = np.random.default_rng(31 * offset[0] + offset[1])
    index = _block_map(rng, *shape, 4, offset=offset)
    ref = _reference(index, 4, sigma)
    fast = blur_onehot(index, 5, sigma)
    assert fast.dtype == np.float32 and fast.shape == (5, *shape)
    assert np.abs(fast[:4] - ref).max() < 1e-4
    assert np.abs(fast[:4] - ref).max() < 1e-6  # float32 rounding only
    assert not np.any(fast[4])  # absent class: exactly zero
    exact = blur_onehot(index, 4, sigma, dtype=np.float64)
    assert np.abs(exact - ref).max() < 1e-12


def test_partition_of_block_map():
    rng = np.random.default_rng(1)
    index = _block_map(rng, 100, 95, 50, offset=(7, 13))
    rows, cols = partition(index)
    # With 50 classes, neighbouring blocks almost surely differ: breaks every 30 px.
    assert rows.tolist() == [0, 23, 53, 83]
    assert cols.tolist() == [0, 17, 47, 77]


def test_irregular_product_partition_matches_scipy():
    rng = np.random.default_rng(2)
    row_edges = np.cumsum(rng.integers(1, 60, 12))
    col_edges = np.cumsum(rng.integers(1, 60, 12))
    cells = rng.integers(0, 5, (13, 13))
    index = cells[np.searchsorted(row_edges, np.arange(250), side="right")][
        :, np.searchsorted(col_edges, np.arange(230), side="right")
    ]
    ref = _reference(index, 5, 15.0)
    assert np.abs(blur_onehot(index, 5, 15.0) - ref).max() < 1e-6


def test_non_block_map_is_exact_and_warns(caplog):
    rng = np.random.default_rng(3)
    index = rng.integers(0, 4, (90, 71))
    with caplog.at_level(logging.WARNING, logger="lcip.priors.blur"):
        fast = blur_onehot(index, 4, 9.0)
    assert "not block-structured" in caplog.text
    assert np.abs(fast - _reference(index, 4, 9.0)).max() < 1e-6


@pytest.mark.parametrize("transposed", [False, True])
def test_stripes_use_either_pass_order(transposed):
    rng = np.random.default_rng(4)
    index = np.repeat(rng.integers(0, 3, (1, 150)), 120, axis=0)  # constant down columns
    if transposed:
        index = np.ascontiguousarray(index.T)
    assert np.abs(blur_onehot(index, 3, 12.0) - _reference(index, 3, 12.0)).max() < 1e-6


def test_image_smaller_than_kernel():
    rng = np.random.default_rng(5)
    index = _block_map(rng, 23, 41, 3, block=10, offset=(3, 8))
    assert np.abs(blur_onehot(index, 3, 31.0) - _reference(index, 3, 31.0)).max() < 1e-6


def test_weights_blur_equals_weighted_blurs():
    rng = np.random.default_rng(6)
    index = _block_map(rng, 200, 170, 8, offset=(11, 5))
    weights = rng.random((3, 8))
    weights[:, 2] = 0.0
    combined = blur_onehot(index, 8, 31.0, weights=weights)
    separate = np.einsum("mk,khw->mhw", weights, blur_onehot(index, 8, 31.0, dtype=np.float64))
    assert combined.shape == (3, 200, 170)
    assert np.abs(combined - separate).max() < 1e-5
    zero_layer = np.zeros((1, 8))
    assert not np.any(blur_onehot(index, 8, weights=zero_layer))


def test_crop_equals_cropped_full_blur():
    rng = np.random.default_rng(7)
    index = _block_map(rng, 260, 300, 5, offset=(2, 19))
    full = blur_onehot(index, 5, 31.0, dtype=np.float64)
    cropped = blur_onehot(index, 5, 31.0, crop=37, dtype=np.float64)
    assert cropped.shape == (5, 260 - 74, 300 - 74)
    np.testing.assert_allclose(cropped, full[:, 37:-37, 37:-37], rtol=0, atol=1e-13)


def test_layers_sum_to_one():
    rng = np.random.default_rng(8)
    index = _block_map(rng, 150, 140, 4, offset=(5, 5))
    np.testing.assert_allclose(blur_onehot(index, 4).sum(axis=0), 1.0, atol=1e-6)


def test_threads_setting_is_restored():
    before = torch.get_num_threads()
    blur_onehot(np.zeros((40, 40), np.uint8), 2, 3.0, threads=1)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    ("index", "kwargs", "match"),
    [
        (np.zeros((10, 10), np.float32), {}, "integer"),
        (np.full((10, 10), 5, np.uint8), {}, r"0\.\.2"),
        (np.zeros((10, 10), np.uint8), {"crop": 5}, "crop"),
        (np.zeros((10, 10), np.uint8), {"weights": np.ones((2, 4))}, "weights"),
    ],
)
def test_bad_arguments(index, kwargs, match):
    with pytest.raises(ValueError, match=match):
        blur_onehot(index, 3, 2.0, **kwargs)


@pytest.mark.slow
def test_large_tile_matches_scipy():
    """A 3000 x 2800 px NLCD-like tile, 30 px blocks, two layers against scipy float32."""
    rng = np.random.default_rng(9)
    index = _block_map(rng, 3000, 2800, 10, offset=(17, 4))
    fast = blur_onehot(index, 10)
    for k in (0, 7):
        ref = ndimage.gaussian_filter((index == k).astype(np.float32), 31.0, mode="nearest")
        assert np.abs(fast[k] - ref).max() < 1e-4


def test_out_buffer_is_filled_and_absent_layers_zeroed():
    rng = np.random.default_rng(10)
    index = _block_map(rng, 120, 100, 3, offset=(4, 9))
    expected = blur_onehot(index, 5, 7.0)
    buf = np.full((5, 120, 100), 7.0, dtype=np.float32)
    assert blur_onehot(index, 5, 7.0, out=buf) is buf
    np.testing.assert_array_equal(buf, expected)
    with pytest.raises(ValueError, match="out must be"):
        blur_onehot(index, 5, 7.0, out=np.zeros((5, 120, 99), np.float32))
