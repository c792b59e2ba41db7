"""Tests for lcip.priors.fused: the fused prior formula against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from lcip.classes import CHESAPEAKE4, ENVIROATLAS5, ClassScheme
from lcip.errors import ConfigError
from lcip.priors.fused import DEFAULT_RADIUS, fuse_prior, fusion_classes
from tests.paths import REALDATA

NAMES = ("buildings", "roads", "waterways", "waterbodies")


def reference_fuse(
    prior: npt.NDArray[np.floating],
    layers: npt.NDArray[np.uint8],
    water: int,
    impervious: int,
    radius: dict[str, int],
    weights: dict[str, float],
) -> npt.NDArray[np.float64]:
    """The fusion formula, pixel by pixel (float64); box means by edge padding + windows."""
    _, height, width = prior.shape
    target = {
        "buildings": impervious,
        "roads": impervious,
        "waterways": water,
        "waterbodies": water,
    }
    means = []
    for k, name in enumerate(NAMES):
        r = radius[name]
        padded = np.pad(layers[k].astype(np.float64), r, mode="edge")  # nearest-pixel padding
        windows = np.lib.stride_tricks.sliding_window_view(padded, (2 * r + 1, 2 * r + 1))
        means.append(windows.mean(axis=(2, 3)))
    out = np.zeros_like(prior, dtype=np.float64)
    for i in range(height):
        for j in range(width):
            if prior[:, i, j].sum() <= 0:
                continue
            f = prior[:, i, j].astype(np.float64).copy()
            for k, name in enumerate(NAMES):
                f[target[name]] += weights[name] * means[k][i, j]
            out[:, i, j] = f / f.sum()
    return out


def random_case(
    seed: int, num_classes: int = 4, shape: tuple[int, int] = (9, 11)
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    rng = np.random.default_rng(seed)
    prior = rng.random((num_classes, *shape)).astype(np.float32)
    prior[:, rng.random(shape) < 0.1] = 0.0  # some invalid pixels
    prior[rng.integers(0, num_classes), rng.random(shape) < 0.2] = 0.0  # zeros in valid pixels
    total = prior.sum(axis=0)
    prior = np.divide(prior, total, out=np.zeros_like(prior), where=total > 0)
    layers = (rng.random((4, *shape)) < 0.15).astype(np.uint8)
    return prior, layers


@pytest.mark.parametrize(
    ("seed", "radius", "weights"),
    [
        (0, None, None),
        (1, {"buildings": 1, "roads": 2, "waterways": 0, "waterbodies": 3}, None),
        (2, {"roads": 1}, {"buildings": 0.5, "roads": 2.0, "waterways": 0.0, "waterbodies": 1.5}),
    ],
)
def test_matches_direct_computation(
    seed: int, radius: dict[str, int] | None, weights: dict[str, float] | None
) -> None:
    prior, layers = random_case(seed)
    water, impervious = 0, 3
    full_radius = {**DEFAULT_RADIUS, **(radius or {})}
    full_weights = {name: 1.0 for name in NAMES} | (weights or {})
    expected = reference_fuse(prior, layers, water, impervious, full_radius, full_weights)
    got = fuse_prior(
        prior,
        layers,
        water_class=water,
        impervious_class=impervious,
        radius=radius,
        weights=weights,
    )
    assert got.dtype == np.float32 and got.shape == prior.shape
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_sums_to_one_and_invalid_stays_zero() -> None:
    prior, layers = random_case(3, num_classes=5, shape=(40, 50))
    layers[:] = 1  # vector mass on every pixel, invalid ones included
    invalid = prior.sum(axis=0) == 0
    assert invalid.any()
    water, impervious = fusion_classes(ENVIROATLAS5)
    out = fuse_prior(prior, layers, water_class=water, impervious_class=impervious)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(axis=0)[~invalid], 1.0, atol=1e-6)
    assert (out[:, invalid] == 0).all()
    # an explicit valid mask also switches pixels off
    valid = ~invalid
    valid[:5] = False
    masked = fuse_prior(prior, layers, water_class=water, impervious_class=impervious, valid=valid)
    assert (masked[:, :5] == 0).all()
    np.testing.assert_array_equal(masked[:, 5:], out[:, 5:])
    as_int = fuse_prior(
        prior, layers, water_class=water, impervious_class=impervious, valid=valid.astype(np.uint8)
    )
    np.testing.assert_array_equal(as_int, masked)
    nan_prior = prior.copy()
    nan_prior[:, invalid] = np.nan
    np.testing.assert_array_equal(
        fuse_prior(nan_prior, layers, water_class=water, impervious_class=impervious), out
    )
    with pytest.raises(ValueError, match="valid mask"):
        fuse_prior(prior, layers, water_class=water, impervious_class=impervious, valid=valid[1:])


def test_no_vectors_leaves_prior_unchanged() -> None:
    prior, layers = random_case(4)
    out = fuse_prior(prior, np.zeros_like(layers), water_class=0, impervious_class=3)
    np.testing.assert_allclose(out, prior, atol=1e-6)


def test_adds_mass_to_the_right_class() -> None:
    prior = np.full((4, 21, 21), 0.25, np.float32)
    layers = np.zeros((4, 21, 21), np.uint8)
    layers[1, 10, :] = 1  # a road along row 10
    out = fuse_prior(prior, layers, water_class=0, impervious_class=3)
    # box mean of radius 4 over a 1-px line: 9/81 on rows 6..14, 0 elsewhere
    assert out[3, 10, 10] == pytest.approx((0.25 + 1 / 9) / (1 + 1 / 9), abs=1e-6)
    assert out[3, 5, 10] == pytest.approx(0.25, abs=1e-6)
    assert out[3, 6, 10] > 0.25 and out[0, 10, 10] < 0.25
    layers[:] = 0
    layers[3, :, :] = 1  # water everywhere
    out = fuse_prior(prior, layers, water_class=0, impervious_class=3)
    np.testing.assert_allclose(out[0], 1.25 / 2, atol=1e-6)


def test_halo_is_cropped() -> None:
    prior, layers = random_case(5, shape=(12, 12))
    big = np.zeros((4, 18, 18), np.uint8)
    big[:, 3:15, 3:15] = layers
    big[1, 0:3, :] = 1  # a road just outside the tile reaches in through the box mean
    out = fuse_prior(prior, big, water_class=0, impervious_class=3, halo=3)
    assert out.shape == prior.shape
    ref = reference_fuse(
        np.pad(prior, ((0, 0), (3, 3), (3, 3)), mode="edge").astype(np.float64),
        big,
        0,
        3,
        dict(DEFAULT_RADIUS),
        {name: 1.0 for name in NAMES},
    )[:, 3:15, 3:15]
    valid = prior.sum(axis=0) > 0
    np.testing.assert_allclose(out[:, valid], ref[:, valid], atol=1e-6)


def test_fusion_classes() -> None:
    assert fusion_classes(CHESAPEAKE4) == (0, 3)
    assert fusion_classes(ENVIROATLAS5) == (0, 1)
    custom = ClassScheme("x", ("Tree", "Impervious surfaces", "Water"), ((0, 0, 0),) * 3, {})
    assert fusion_classes(custom) == (2, 1)
    no_water = ClassScheme("dry", ("tree", "impervious"), ((0, 0, 0),) * 2, {})
    with pytest.raises(ConfigError, match="'dry' has no 'water' class"):
        fusion_classes(no_water)


def test_bad_arguments() -> None:
    prior, layers = random_case(6)
    with pytest.raises(ValueError, match="vector layers must have shape"):
        fuse_prior(prior, layers[:3], water_class=0, impervious_class=3)
    with pytest.raises(ValueError, match="impervious_class=4"):
        fuse_prior(prior, layers, water_class=0, impervious_class=4)
    with pytest.raises(ConfigError, match="unknown layer"):
        fuse_prior(prior, layers, water_class=0, impervious_class=3, radius={"rails": 2})
    with pytest.raises(ConfigError, match="radius"):
        fuse_prior(prior, layers, water_class=0, impervious_class=3, radius={"roads": -1})
    with pytest.raises(ConfigError, match="weights"):
        fuse_prior(prior, layers, water_class=0, impervious_class=3, weights={"roads": -1.0})


def test_real_west_oakland_roads_gain_impervious_mass() -> None:
    osm = REALDATA / "osm" / "West-Oakland.osm.bz2"
    if not osm.exists():
        pytest.skip(f"real sample data not available: {osm} (see shared/realdata/README.md)")
    import geopandas as gpd
    import shapely
    from affine import Affine
    from rasterio.crs import CRS

    from lcip.io.raster import Grid
    from lcip.priors.vectors import rasterize_vectors

    b = gpd.GeoSeries([shapely.box(-122.30258, 37.80615, -122.29825, 37.80914)], crs=4326)
    left, bottom, right, top = b.to_crs(32610).total_bounds
    left, top = math.floor(left), math.ceil(top)
    grid = Grid(
        CRS.from_epsg(32610),
        Affine(1.0, 0.0, left, 0.0, -1.0, top),
        top - math.floor(bottom),
        math.ceil(right) - left,
    )
    layers = rasterize_vectors(grid.expand(4), osm, None)
    # A smooth synthetic prior standing in for an NLCD prior (mostly low vegetation / tree).
    rows = np.linspace(0.0, 1.0, grid.height, dtype=np.float32)[:, None]
    prior = np.stack(
        [
            np.full(grid.shape, 0.05, np.float32),
            0.35 + 0.1 * rows * np.ones(grid.shape, np.float32),
            0.45 - 0.1 * rows * np.ones(grid.shape, np.float32),
            np.full(grid.shape, 0.15, np.float32),
        ]
    )
    prior /= prior.sum(axis=0)
    water, impervious = fusion_classes(CHESAPEAKE4)
    fused = fuse_prior(prior, layers, water_class=water, impervious_class=impervious, halo=4)
    assert fused.shape == prior.shape and fused.dtype == np.float32
    np.testing.assert_allclose(fused.sum(axis=0), 1.0, atol=1e-3)
    road = layers[1, 4:-4, 4:-4] == 1
    assert road.mean() > 0.05
    assert (fused[impervious][road] > prior[impervious][road]).all()
    assert fused[impervious][road].mean() > prior[impervious][road].mean() + 0.1
    # no water anywhere here: water mass only shrinks
    assert (fused[water] <= prior[water] + 1e-6).all()
