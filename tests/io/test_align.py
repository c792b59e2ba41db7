"""Alignment onto 1 m UTM grids, on real data: NAIP 0.6 m crops and Albers 1 m labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import rasterio
from rasterio.crs import CRS

from lcip.errors import ConfigError
from lcip.io.align import align_raster, grid_for, snapped_grid, utm_crs
from lcip.io.provenance import PROVENANCE_TAG, read_provenance
from lcip.io.raster import Grid
from tests.markers import needs_realdata
from tests.paths import REALDATA

NAIP = sorted((REALDATA / "naip_crops").glob("*.tif"))
ALBERS = REALDATA / "chesapeake_lc_albers" / "Baywide_13Class_20132014_E1300000_N1770000.tif"
needs_naip_and_albers = needs_realdata(REALDATA / "naip_crops", ALBERS)


def test_snapped_grid_covers_the_footprint_on_whole_metres() -> None:
    grid = snapped_grid("EPSG:26918", (100.4, 199.5, 110.2, 205.01), 1.0)
    assert grid.transform.c == 100.0 and grid.transform.f == 206.0
    assert grid.shape == (7, 11) and grid.bounds == (100.0, 199.0, 111.0, 206.0)
    assert snapped_grid("EPSG:26918", (0.0, 0.0, 3.0, 3.0), 0.6).shape == (5, 5)
    with pytest.raises(ConfigError, match="resolution=0"):
        snapped_grid("EPSG:26918", (0.0, 0.0, 3.0, 3.0), 0)


def test_utm_zone_of_a_footprint() -> None:
    assert utm_crs("EPSG:4326", (-77.1, 38.9, -77.0, 39.0)) == CRS.from_epsg(26918)
    assert utm_crs("EPSG:4326", (11.5, 48.1, 11.6, 48.2)) == CRS.from_epsg(32632)
    assert utm_crs("EPSG:4326", (151.1, -33.9, 151.2, -33.8)) == CRS.from_epsg(32756)


def _box_average(img: npt.NDArray[np.float64], src: Grid, dst: Grid) -> npt.NDArray[np.float64]:
    """Area-weighted average of ``img`` (bands, rows, cols) on ``src`` over ``dst`` cells."""

    def overlaps(src0: float, step: float, n_src: int, dst0: float, dstep: float, n_dst: int):  # type: ignore[no-untyped-def]
        s_edges = src0 + step * np.arange(n_src + 1)
        d_edges = dst0 + dstep * np.arange(n_dst + 1)
        lo = np.maximum(d_edges[:-1, None], s_edges[None, :-1])
        hi = np.minimum(d_edges[1:, None], s_edges[None, 1:])
        return np.clip(hi - lo, 0, None)

    wx = overlaps(src.transform.c, src.res[0], src.width, dst.transform.c, dst.res[0], dst.width)
    wy = overlaps(
        -src.transform.f, src.res[1], src.height, -dst.transform.f, dst.res[1], dst.height
    )
    total = wy.sum(1)[:, None] * wx.sum(1)[None, :]
    return np.einsum("ij,bjk,lk->bil", wy, img, wx) / total


@needs_naip_and_albers
@pytest.mark.parametrize("path", NAIP, ids=lambda p: p.stem)
def test_naip_resampled_to_1m_keeps_its_georeferencing(path: Path, tmp_path: Path) -> None:
    src = Grid.of(path)
    grid = grid_for(path, resolution=1.0)
    assert grid.crs == src.crs and grid.res == (1.0, 1.0)
    assert grid.transform.c == np.floor(src.transform.c) and grid.transform.f == np.ceil(
        src.transform.f
    )
    out = align_raster(path, tmp_path / "naip_1m.tif", grid, "imagery")
    with rasterio.open(out) as dst, rasterio.open(path) as s:
        assert Grid.of(out).same_as(grid) and dst.count == 4 and dst.dtypes[0] == "uint8"
        assert dst.overviews(1) is not None  # a COG
        resampled = dst.read().astype(np.float64)
        original = s.read().astype(np.float64)
    record = read_provenance(out)
    assert record is not None and record["params"]["resampling"] == "bilinear"
    assert PROVENANCE_TAG in rasterio.open(out).tags()
    # Cells wholly inside the source agree with a direct area average of the 0.6 m pixels,
    # and agree best at zero offset: a shift of a pixel (or of half a source pixel) would not.
    reference = _box_average(original, src, grid)
    inner = (slice(2, -2), slice(2, -2))
    err = {
        (dy, dx): np.abs(
            np.roll(resampled, (dy, dx), axis=(1, 2))[:, inner[0], inner[1]]
            - reference[:, inner[0], inner[1]]
        ).mean()
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    }
    assert min(err, key=err.get) == (0, 0)  # type: ignore[arg-type]
    assert err[(0, 0)] < 0.5 * min(v for k, v in err.items() if k != (0, 0))
    assert err[(0, 0)] < 3.0  # grey levels; half a metre off gives about 6


@needs_naip_and_albers
def test_albers_labels_reprojected_to_utm_keep_codes_nodata_and_areas(tmp_path: Path) -> None:
    src = Grid.of(ALBERS)
    utm = utm_crs(src.crs, src.bounds)
    assert utm == CRS.from_epsg(26917)  # the tile lies west of 78° W
    grid = grid_for(ALBERS, utm, resolution=1.0)
    out = align_raster(ALBERS, tmp_path / "lc_utm.tif", grid, "categorical")
    with rasterio.open(ALBERS) as s, rasterio.open(out) as d:
        before, after = s.read(1), d.read(1)
        assert d.nodata == s.nodata == 0 and d.crs == utm and d.dtypes[0] == "uint8"
    assert Grid.of(out).same_as(grid)
    codes_before, n_before = np.unique(before, return_counts=True)
    codes_after, n_after = np.unique(after, return_counts=True)
    assert set(codes_after) <= set(codes_before)  # nearest: no new codes
    counts = dict(zip(codes_after.tolist(), n_after.tolist(), strict=True))
    for code, n in zip(codes_before.tolist(), n_before.tolist(), strict=True):
        if code == 0 or n < 10_000:
            continue
        assert abs(counts.get(code, 0) - n) / n < 0.01, (code, n, counts.get(code))
