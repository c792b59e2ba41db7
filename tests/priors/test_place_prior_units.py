"""Prior parameters in metres: a 0.6 m tile gets the same physical prior as a 1 m tile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from lcip.classes import CHESAPEAKE4
from lcip.errors import ConfigError, DataError
from lcip.io.manifest import Manifest, Tile
from lcip.io.provenance import read_provenance
from lcip.io.raster import Grid, write_raster
from lcip.priors.build import FusedPriorJob, NLCDPriorJob, run_tile_jobs
from lcip.priors.fused import radius_in_pixels
from lcip.priors.nlcd import metres_per_pixel, sigma_in_pixels
from tests.conftest import CRS_UTM

X0, Y0 = 400020.0, 4300020.0  # tile corner; the NLCD edge is 150 m to its right
WIDTH_M, HEIGHT_M = 300.0, 30.0


def _tile(root: Path, name: str, res: float, nlcd: Path) -> Tile:
    grid = Grid(
        CRS_UTM,
        Affine(res, 0, X0, 0, -res, Y0),
        round(HEIGHT_M / res),
        round(WIDTH_M / res),
    )
    naip = write_raster(root / f"{name}_naip.tif", np.zeros((1, *grid.shape), np.uint8), grid)
    return Tile(name, "train", "EPSG:32618", grid.bounds, {"naip": naip, "nlcd": nlcd})


@pytest.fixture
def tiles(tmp_path: Path) -> Manifest:
    # 30 m NLCD: open water (11) on the left, deciduous forest (41) on the right.
    codes = np.full((10, 40), 11, np.uint8)
    codes[:, 20:] = 41
    grid = Grid(CRS_UTM, Affine(30.0, 0, X0 - 450, 0, -30.0, Y0 + 150), 10, 40)
    nlcd = write_raster(tmp_path / "nlcd.tif", codes, grid, nodata=0)
    return Manifest((_tile(tmp_path, "m1", 1.0, nlcd), _tile(tmp_path, "m06", 0.6, nlcd)))


def _matrix() -> np.ndarray:
    matrix = np.full((4, 17), 0.05)
    matrix[:, 1] = [0.85, 0.05, 0.05, 0.05]  # 11 -> water
    matrix[:, 8] = [0.05, 0.85, 0.05, 0.05]  # 41 -> tree canopy
    return matrix / matrix.sum(0, keepdims=True)


def _profile(path: str | None, res: float) -> tuple[np.ndarray, np.ndarray]:
    """The middle row of the water band and its pixel centres' x offsets (m)."""
    assert path is not None
    with rasterio.open(path) as src:
        row = src.read(1)[src.height // 2]
    return (np.arange(row.size) + 0.5) * res, row


def test_sigma_in_metres_gives_the_same_physical_prior(tmp_path: Path, tiles: Manifest) -> None:
    job = NLCDPriorJob(tmp_path / "nlcd", scheme=CHESAPEAKE4, matrix=_matrix(), sigma_m=31.0)
    r1, r06 = run_tile_jobs(job, tiles)
    x1, p1 = _profile(r1.path, 1.0)
    x06, p06 = _profile(r06.path, 0.6)
    # Pixel centres common to both grids (every 3 m): the same prior there.
    common = np.intersect1d(np.round(x1, 6), np.round(x06, 6))
    assert common.size > 90
    a = p1[np.isin(np.round(x1, 6), common)]
    b = p06[np.isin(np.round(x06, 6), common)]
    assert np.abs(a - b).max() < 5e-3
    assert a.max() > 0.8 and a.min() < 0.1  # the edge is there, blurred over ~31 m
    # The same sigma in *pixels* would make the 0.6 m prior's transition 40 % narrower.
    narrow = NLCDPriorJob(tmp_path / "px", scheme=CHESAPEAKE4, matrix=_matrix(), sigma_m=18.6)
    _, c = _profile(run_tile_jobs(narrow, tiles.select(tile_ids=["m06"]))[0].path, 0.6)
    assert np.abs(a - c[np.isin(np.round(x06, 6), common)]).max() > 0.05
    # The recorded parameters hold the metres and the pixels they resolved to.
    for r, px in ((r1, 31.0), (r06, 31.0 / 0.6)):
        prov = read_provenance(r.path or "")
        assert prov is not None
        assert prov["params"]["sigma_m"] == 31.0
        assert prov["params"]["sigma_px"] == pytest.approx(px)


def test_fused_radii_in_metres_are_resolved_per_grid(tmp_path: Path, tiles: Manifest) -> None:
    job = FusedPriorJob(
        tmp_path / "fused",
        scheme=CHESAPEAKE4,
        matrix=_matrix(),
        osm_layer=None,
        buildings_layer=None,
        water_class=0,
        impervious_class=3,
    )
    r1, r06 = run_tile_jobs(job, tiles)
    radii = {}
    for r in (r1, r06):
        prov = read_provenance(r.path or "")
        assert prov is not None
        radii[r.tile_id] = prov["params"]["radius_px"]
        assert json.dumps(prov["params"]["sigma_px"])
    assert radii["m1"] == {"buildings": 4, "roads": 4, "waterways": 2, "waterbodies": 2}
    assert radii["m06"] == {"buildings": 7, "roads": 7, "waterways": 3, "waterbodies": 3}


def test_unit_conversions_and_their_errors() -> None:
    assert sigma_in_pixels(31.0, 0.6) == pytest.approx(51.6667, abs=1e-4)
    assert radius_in_pixels({"roads": 6.0}, 0.5)["roads"] == 12
    with pytest.raises(ConfigError, match="radius_m"):
        radius_in_pixels({"rails": 2.0}, 1.0)
    with pytest.raises(ConfigError, match="radius_m"):
        radius_in_pixels({"roads": -1.0}, 1.0)
    utm = Grid(CRS_UTM, Affine(0.6, 0, X0, 0, -0.6, Y0), 10, 10)
    assert metres_per_pixel(utm) == pytest.approx(0.6)
    lonlat = Grid(rasterio.crs.CRS.from_epsg(4326), Affine(1e-5, 0, -76, 0, -1e-5, 42), 10, 10)
    with pytest.raises(DataError, match="not projected"):
        metres_per_pixel(lonlat)
