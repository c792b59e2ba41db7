"""The console scripts end to end on a tiny generated region, as a user runs them.

Every stage runs first as its console script. The re-runs that check which maps are skipped,
remade or stale call the stages in this process (each console script would spend seconds
importing torch and Lightning for a few milliseconds of work); the scripts' own handling of
a refused run (one ``error:`` line, exit status 2) is checked by the stale evaluation here and
by ``test_train_stage.py``.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from omegaconf import DictConfig

from lcip.classes import CHESAPEAKE4, IGNORE_INDEX
from lcip.config import compose_config
from lcip.errors import LcipError
from lcip.io.manifest import Manifest
from lcip.io.provenance import read_provenance, sha256_file
from lcip.stages.predict import predict
from lcip.stages.train import train


def run(stage: str, *args: str) -> subprocess.CompletedProcess[str]:
    code = f"from lcip.cli import {stage}; {stage}()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600
    )


def ok(stage: str, *args: str) -> subprocess.CompletedProcess[str]:
    proc = run(stage, *args)
    assert proc.returncode == 0, f"lcip-{stage} failed:\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def region_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    ok("region", "region=tiny", f"paths.root={root}")
    ok("cooccurrence", "region=tiny", f"paths.root={root}")
    ok("prior", "region=tiny", f"paths.root={root}", "prior=fused")
    return root


def train_args(root: Path, *extra: str) -> list[str]:
    return [
        "region=tiny",
        f"paths.root={root}",
        "prior=fused",
        "experiment=demo",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "data.steps_per_epoch=8",
        "data.val_crop_size=128",
        "task.warmup_steps=4",
        *extra,
    ]


def in_process(stage: Callable[[DictConfig], object], root: Path, *extra: str) -> None:
    """Run a stage in this process on the config :func:`train_args` composes."""
    stage(compose_config(train_args(root, *extra)))


def recompute(manifest: Manifest, layer: str) -> tuple[float, float]:
    """Accuracy and mIoU of a class map against the labels, computed here from the files."""
    cm = np.zeros((4, 4), np.int64)
    for tile in manifest:
        with rasterio.open(tile.layer(layer)) as src:
            pred = src.read(1).astype(np.int64)
        with rasterio.open(tile.layer("lc")) as src:
            target = CHESAPEAKE4.map_labels(src.read(1)).astype(np.int64)
        keep = (pred != IGNORE_INDEX) & (target != IGNORE_INDEX)
        np.add.at(cm, (target[keep], pred[keep]), 1)
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = tp[union > 0] / union[union > 0]
    return float(tp.sum() / cm.sum()), float(iou.mean())


def test_stages_end_to_end_and_stale_maps(region_root: Path) -> None:
    root = region_root
    ok("train", *train_args(root))
    run_dir = root / "runs" / "tiny" / "qr_fused"
    used = run_dir / "checkpoints" / "last.ckpt"  # predict.checkpoint=last (the default)
    ok("predict", *train_args(root))
    ok("evaluate", *train_args(root))
    manifest = Manifest.read(run_dir / "predictions" / "manifest.csv")
    assert {t.split for t in manifest} == {"test"} and len(manifest) >= 1
    for tile in manifest:
        for layer, dtype, count in (("q_prob", "float32", 4), ("r_class", "uint8", 1)):
            with rasterio.open(tile.layer(layer)) as src, rasterio.open(tile.layer("naip")) as img:
                assert (src.crs, src.transform, src.shape) == (img.crs, img.transform, img.shape)
                assert src.dtypes[0] == dtype and src.count == count
                data = src.read()
            if layer == "q_prob":
                valid = np.isfinite(data).all(0)
                np.testing.assert_allclose(data[:, valid].sum(0), 1.0, atol=1e-4)
            else:
                assert set(np.unique(data)) <= {0, 1, 2, 3, IGNORE_INDEX}
        record = read_provenance(tile.layer("q_class"))
        assert record is not None
        assert record["params"]["checkpoint_sha256"] == sha256_file(used)
        assert record["params"]["checkpoint"] == "last" and record["params"]["loss"] == "qr"
    with open(run_dir / "evaluation.csv", newline="") as f:
        rows = {(r["tile"], r["map"]): r for r in csv.DictReader(f)}
    for layer, name in (("q_class", "QR (q)"), ("r_class", "QR (r)")):
        acc, miou = recompute(manifest, layer)
        assert abs(float(rows[("all", name)]["accuracy"]) - acc) < 1e-9
        assert abs(float(rows[("all", name)]["miou"]) - miou) < 1e-9

    # an unchanged run is skipped; retraining with another lr makes the maps stale
    q_map = manifest.tiles[0].layer("q_class")
    mtime = q_map.stat().st_mtime_ns
    in_process(predict, root)
    assert q_map.stat().st_mtime_ns == mtime
    # what the network sees beyond the tiles' edges is part of what made the maps
    assert (read_provenance(q_map) or {})["params"]["edge"] == "reflect"
    in_process(predict, root, "predict.edge=zeros")
    assert q_map.stat().st_mtime_ns != mtime
    assert (read_provenance(q_map) or {})["params"]["edge"] == "zeros"
    in_process(predict, root)
    mtime = q_map.stat().st_mtime_ns
    with pytest.raises(LcipError, match=r"train\.resume=never"):
        in_process(train, root, "optimizer.lr=0.01")
    in_process(train, root, "optimizer.lr=0.01", "train.resume=never")
    stale = run("evaluate", *train_args(root, "optimizer.lr=0.01"))
    errors = [ln for ln in stale.stderr.splitlines() if ln.startswith("error:")]
    assert stale.returncode == 2 and len(errors) == 1, stale.stderr[-2000:]
    assert "checkpoint_sha256=" in errors[0] and "run lcip-predict again" in errors[0]
    in_process(predict, root, "optimizer.lr=0.01")
    assert q_map.stat().st_mtime_ns != mtime
    record = read_provenance(q_map)
    assert record is not None and record["params"]["checkpoint_sha256"] == sha256_file(used)
    ok("evaluate", *train_args(root, "optimizer.lr=0.01"))


def test_help_and_hydra_flags() -> None:
    helped = ok("region", "--help")
    assert helped.stdout.startswith("lcip-region: ") and "Configuration groups" in helped.stdout
    info = ok("train", "--info")
    assert "Hydra" in info.stdout
    cfg = ok("predict", "--cfg")
    assert "checkpoint: last" in cfg.stdout
