"""Prediction and evaluation of a full-size tile: bounded peak memory, valid COG outputs.

A 6000 x 6000 px tile is the size of a NAIP quarter quad. Its 4-band float32 probability
rasters are 576 MB each; prediction and evaluation stream them window by window, so their
peak memory must stay far below that. Each phase runs in a fresh subprocess (one process, no
DataLoader workers, so everything it allocates is counted). The child takes its RSS after
importing torch and lcip as the baseline, restarts the kernel's peak-RSS counter there
(``/proc/self/clear_refs``) and reads the peak (``VmHWM``, what ``ru_maxrss`` reports) after the
phase; ``ru_maxrss`` itself is reported too (it also covers the import's own peak).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from lcip.classes import CHESAPEAKE4, IGNORE_INDEX
from lcip.inference.predict import OUTPUT_LAYERS
from lcip.io.manifest import Manifest, Tile
from lcip.io.raster import BLOCK_SIZE, Grid, strip_windows, write_raster
from tests.conftest import make_grid
from tests.paths import ROOT

REPO = ROOT

#: Peak RSS a phase may add to its baseline (torch and lcip imported): well below the 576 MB
#: of one whole float32 4-band 6000 x 6000 array.
BOUND_MB = 400

#: Prediction runs one 512 px window per batch: the network's own activations scale with
#: batch size x window area, not with the tile (on the CPU, torch's forward pass of even the
#: tiny test FCN takes ~ 40 MB per 528 px window), so one window per batch keeps them from
#: hiding what this test is about, the streaming of the rasters.
BATCH_SIZE = 1

SHA = "c" * 64

CHILD = r"""
import json, resource, sys, time
from pathlib import Path

import torch

from lcip.classes import CHESAPEAKE4
from lcip.data.datasets import LayerSpec
from lcip.evaluation.evaluate import MapSpec, evaluate_manifest
from lcip.inference.windows import WindowConfig
from lcip.io.manifest import Manifest
from lcip.training.models import FCN
from lcip.inference.predict import predict_manifest


def status_mb(key):
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith(key + ":")) / 1024


phase, root, sha, batch_size = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
torch.manual_seed(0)
model = FCN(4, 4, num_filters=4, num_layers=1)
baseline = status_mb("VmRSS")
try:  # restart the peak (VmHWM) from here, so that the import's own peak does not hide ours
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass  # then VmHWM includes the import's peak: a stricter measurement
start = time.perf_counter()
result = {}
if phase == "predict":
    out = predict_manifest(
        model,
        Manifest.read(root / "manifest.csv"),
        LayerSpec("naip", "prior", None),
        CHESAPEAKE4,
        root / "pred",
        WindowConfig(window=512, batch_size=batch_size, num_workers=0),
        params={"checkpoint_sha256": sha, "loss": "qr"},
    )
    out.write(root / "predictions.csv")
else:
    expect = {"checkpoint_sha256": sha}
    maps = [
        MapSpec("prior", "prior", "prob"),
        MapSpec("q", "q_class", expect=expect),
        MapSpec("r", "r_class", expect=expect),
        MapSpec("q argmax", "q_prob", "prob", expect=expect),
    ]
    ev = evaluate_manifest(
        Manifest.read(root / "predictions.csv"), maps, CHESAPEAKE4, "lc", image_layer="naip"
    )
    result["pixels"] = {m.name: int(ev.overall(m.name).sum()) for m in maps}
    result["accuracy"] = {r["map"]: r["accuracy"] for r in ev.rows() if r["tile"] == "all"}
result.update(
    baseline_mb=baseline,
    peak_mb=status_mb("VmHWM"),
    ru_maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    seconds=time.perf_counter() - start,
)
print("RESULT " + json.dumps(result))
"""


def write_tile(root: Path, size: int, seed: int = 0) -> tuple[Tile, int]:
    """A NAIP-like tile: uint8 4-band imagery, float32 4-class prior, uint8 labels.

    Labels and prior are constant on 16 px cells (priors come from 30 m maps); the imagery is
    a noisy function of the labels. The prior is nodata (NaN) on the top 100 rows, the labels
    (code 0) on the first 40 columns, the imagery black on a 700 x 500 px block.

    Returns:
        the tile and the number of pixels every map must be scored on.
    """
    rng = np.random.default_rng(seed)
    grid = make_grid(size)
    cells = -(-size // 16)
    coarse = rng.integers(1, 7, (cells, cells)).astype(np.uint8)
    lc = np.repeat(np.repeat(coarse, 16, 0), 16, 1)[:size, :size]
    lc[:, :40] = 0
    classes = CHESAPEAKE4.map_labels(lc)
    means = np.array(
        [[40, 60, 90, 20], [50, 90, 50, 160], [110, 150, 90, 190], [150, 140, 135, 110], [0] * 4],
        np.uint8,
    )
    naip = means[np.minimum(classes, 4)].transpose(2, 0, 1)
    naip += rng.integers(1, 25, naip.shape, dtype=np.uint8)
    naip[:, 2000 % size : 2000 % size + 700, 3000 % size : 3000 % size + 500] = 0
    prior_coarse = rng.dirichlet(np.ones(4), (cells, cells)).astype(np.float32).transpose(2, 0, 1)
    prior = np.repeat(np.repeat(prior_coarse, 16, 1), 16, 2)[:, :size, :size]
    prior[:, :100] = np.nan
    scored = (classes != IGNORE_INDEX) & (naip != 0).any(0) & np.isfinite(prior).all(0)
    layers = {}
    for name, data, nodata in (("naip", naip, None), ("lc", lc, 0), ("prior", prior, np.nan)):
        layers[name] = write_raster(root / name / "big.tif", data, grid, nodata=nodata)
    return Tile("big", "test", grid.crs.to_string(), grid.bounds, layers), int(scored.sum())


def run_phase(phase: str, root: Path) -> dict[str, Any]:
    """Run one phase in a fresh interpreter; returns its measurements."""
    env = {k: v for k, v in os.environ.items() if k != "GDAL_CACHEMAX"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, phase, str(root), SHA, str(BATCH_SIZE)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    print(
        f"{phase}: baseline {result['baseline_mb']:.0f} MB, peak {result['peak_mb']:.0f} MB "
        f"(+{result['peak_mb'] - result['baseline_mb']:.0f} MB; ru_maxrss "
        f"{result['ru_maxrss_mb']:.0f} MB), {result['seconds']:.1f} s"
    )
    return result


def check_output(path: Path, grid: Grid, name: str) -> None:
    """A COG on ``grid`` with overviews; probabilities in (0, 1) summing to 1, classes < 4."""
    prob = name.endswith("prob")
    with rasterio.open(path) as src:
        assert (src.crs, src.transform, src.shape) == (grid.crs, grid.transform, grid.shape)
        assert (src.count, src.dtypes[0]) == ((4, "float32") if prob else (1, "uint8"))
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.profile["tiled"] and src.block_shapes[0] == (BLOCK_SIZE, BLOCK_SIZE)
        assert src.overviews(1)[0] == 2
        assert src.tags()["checkpoint_sha256"] == SHA
        invalid = 0
        for window in strip_windows(grid, 1024):
            data = src.read(window=window)
            if prob:
                valid = np.isfinite(data).all(0)
                assert (np.isnan(data[:, ~valid])).all()
                assert data[:, valid].min() > 0 and data[:, valid].max() < 1
                np.testing.assert_allclose(data[:, valid].sum(0), 1, atol=1e-4)
            else:
                valid = data[0] != IGNORE_INDEX
                assert data[0, valid].max() < 4
            invalid += int((~valid).sum())
    # nodata where the prior is (100 rows) and where the imagery is black (700 x 500 px)
    assert invalid == 100 * grid.width + 700 * 500


@pytest.mark.parametrize("size", [pytest.param(6000, marks=pytest.mark.slow), 1500])
def test_prediction_and_evaluation_memory_and_cogs(tmp_path: Path, size: int) -> None:
    """Peak RSS of prediction and of evaluation each stays under baseline + 400 MB.

    The baseline is the child's RSS after importing torch and lcip (~ 660 MB). Measured on the
    2-core VM, 6000 px tile: prediction +150 to +190 MB in ~ 50 s (half of it compressing the
    two float32 COGs), evaluation ~ +120 MB in ~ 3 s; 1500 px: prediction +130 to +180 MB,
    evaluation ~ +50 MB. Memory does not grow with the tile.
    Every output must be a COG (LAYOUT=COG, 256 px tiles, overviews) on the input grid, with
    the right dtype, value range and nodata; every map is scored on the same pixels.
    """
    tile, scored = write_tile(tmp_path, size)
    Manifest((tile,)).write(tmp_path / "manifest.csv")
    grid = Grid.of(tile.layer("naip"))
    predicted = run_phase("predict", tmp_path)
    assert predicted["peak_mb"] - predicted["baseline_mb"] < BOUND_MB
    out = Manifest.read(tmp_path / "predictions.csv").tile("big")
    for name in OUTPUT_LAYERS:
        check_output(out.layer(name), grid, name)
    assert list((tmp_path / "pred").rglob(".*")) == []  # no temporary or scratch file left
    evaluated = run_phase("evaluate", tmp_path)
    assert evaluated["peak_mb"] - evaluated["baseline_mb"] < BOUND_MB
    # every map is scored on the same pixels: labelled, imagery valid, prior valid
    assert set(evaluated["pixels"].values()) == {scored}
    assert abs(evaluated["accuracy"]["q"] - evaluated["accuracy"]["q argmax"]) < 1e-4
