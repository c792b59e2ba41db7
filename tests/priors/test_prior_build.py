"""The prior stage's runner: alignment, idempotency, process pool, no-valid tiles, report."""

import json
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from lcip.classes import CHESAPEAKE4
from lcip.io.manifest import Manifest
from lcip.io.raster import Grid, write_raster
from lcip.priors.build import NLCDPriorJob, results_manifest, run_tile_jobs, write_report
from tests.conftest import CRS_UTM


def _region_with_nlcd(tmp_path: Path, fake_region: Manifest) -> Manifest:
    # A region-wide 30 m NLCD raster offset from the tile grids; its right part is nodata,
    # which covers the whole of tile t3.
    rng = np.random.default_rng(0)
    codes = rng.choice(np.array([11, 21, 41, 82], np.uint8), size=(12, 24))
    codes[:, 9:] = 0
    grid = Grid(CRS_UTM, Affine(30.0, 0, 400000.0 - 11, 0, -30.0, 4300000.0 + 130), 12, 24)
    path = write_raster(tmp_path / "nlcd_30m.tif", codes, grid, nodata=0)
    return fake_region.with_layer("nlcd", {t.tile_id: path for t in fake_region})


def test_nlcd_prior_job(tmp_path: Path, fake_region: Manifest) -> None:
    manifest = _region_with_nlcd(tmp_path, fake_region)
    matrix = np.full((4, 17), 0.25)
    job = NLCDPriorJob(
        tmp_path / "priors", scheme=CHESAPEAKE4, matrix=matrix, nlcd_layer="nlcd", sigma_m=5.0
    )
    results = run_tile_jobs(job, manifest, jobs=2)
    assert [r.status for r in results] == ["written", "written", "written", "no_valid"]
    for r, tile in zip(results[:3], manifest, strict=False):
        with rasterio.open(r.path) as src, rasterio.open(tile.layer("naip")) as ref:
            assert (src.crs, src.transform, src.shape) == (ref.crs, ref.transform, ref.shape)
            assert (
                src.count == 4
                and src.dtypes[0] == "float32"
                and src.descriptions == CHESAPEAKE4.classes
            )
            tags = src.tags()
            assert tags["recipe"] == "nlcd" and json.loads(tags["sources"]) == [
                str(tile.layer("nlcd"))
            ]
            prior = src.read()
        valid = np.isfinite(prior).all(0)
        assert valid.any()
        np.testing.assert_allclose(prior[:, valid].sum(0), 1.0, atol=1e-3)
        assert prior[:, valid].min() >= 0
    # the no-valid tile is reported and left out of the next manifest
    report = json.loads(write_report(results, tmp_path / "priors").read_text())
    assert report["no_valid_tiles"] == ["t3"] and report["counts"]["written"] == 3
    out = results_manifest(manifest, results, "prior_nlcd")
    assert [t.tile_id for t in out] == ["t0", "t1", "t2"]
    # idempotent: the same parameters skip, other parameters rebuild
    again = run_tile_jobs(job, manifest.select(tile_ids=["t0"]))
    assert again[0].status == "skipped"
    other = NLCDPriorJob(
        tmp_path / "priors", scheme=CHESAPEAKE4, matrix=matrix, nlcd_layer="nlcd", sigma_m=6.0
    )
    assert run_tile_jobs(other, manifest.select(tile_ids=["t0"]))[0].status == "written"


def test_fused_job_on_generated_region(tmp_path: Path) -> None:
    from lcip.priors.build import FusedPriorJob, VectorLayersJob
    from lcip.priors.cooccurrence import count_cooccurrence
    from lcip.synthetic import RegionConfig, generate_region

    manifest = Manifest.read(
        generate_region(RegionConfig(name="t", tiles_x=2, tiles_y=1, tile_size=128), tmp_path)
    )
    matrix = count_cooccurrence(
        manifest, CHESAPEAKE4, nlcd_layer="nlcd_30m", allow_test=True, progress=False
    ).matrix
    common = dict(scheme=CHESAPEAKE4, matrix=matrix, nlcd_layer="nlcd_30m")
    nlcd = run_tile_jobs(NLCDPriorJob(tmp_path / "nlcd", **common), manifest)  # type: ignore[arg-type]
    fused = run_tile_jobs(FusedPriorJob(tmp_path / "fused", **common), manifest)  # type: ignore[arg-type]
    vectors = run_tile_jobs(VectorLayersJob(tmp_path / "vectors"), manifest)
    for n, f, v in zip(nlcd, fused, vectors, strict=True):
        with rasterio.open(n.path) as a, rasterio.open(f.path) as b, rasterio.open(v.path) as c:
            assert a.transform == b.transform == c.transform and b.tags()["recipe"] == "fused"
            p, q, layers, names = a.read(), b.read(), c.read(), c.descriptions
        assert layers.dtype == np.uint8 and set(np.unique(layers)) <= {0, 1} and names[1] == "roads"
        np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-3)
        roads = layers[1] == 1
        assert roads.any() and q[3][roads].mean() > p[3][roads].mean() + 0.05
