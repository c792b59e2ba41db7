"""The collapse guard: a run forced to collapse is told, recorded, flagged and can be stopped."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from lcip.classes import CHESAPEAKE4
from lcip.config import compose_config
from lcip.evaluation.collapse import CollapseError, check_collapse
from lcip.evaluation.evaluate import MapSpec, evaluate_manifest
from lcip.evaluation.report import COLLAPSED_MARK, build_report
from lcip.io.manifest import Manifest, Tile
from lcip.io.raster import Grid, write_raster
from lcip.stages.train import train
from lcip.training.models import FCN
from tests.conftest import make_grid, write_fake_tile
from tests.stages.test_train_stage import read_rows, tiny_overrides, write_prior_region

TREE = CHESAPEAKE4.classes.index("tree canopy")


def test_check_collapse_needs_one_class_in_q_and_a_spread_prior() -> None:
    found = check_collapse([1, 97, 1, 1], [30, 40, 20, 10])
    assert found.collapsed and found.top_class == 1 and found.top_share == pytest.approx(0.97)
    assert found.prior_class == 1 and found.prior_share == pytest.approx(0.40)
    assert "q predicts 'tree canopy' on 97.0 %" in found.describe(CHESAPEAKE4.classes)
    assert not check_collapse([1, 94, 3, 2], [30, 40, 20, 10]).collapsed  # below 95 %
    # a region that truly is one class: the prior says so too
    assert not check_collapse([0, 99, 1, 0], [2, 85, 13, 0]).collapsed
    assert not check_collapse([0, 0, 0, 0], [1, 1, 1, 1]).collapsed  # no valid pixels
    assert check_collapse([0, 90, 10, 0], [50, 50, 0, 0], share=0.9).collapsed


def _collapsed_init(path: Path) -> Path:
    """A checkpoint of the tiny runs' model whose classifier says 'tree canopy' everywhere."""
    model = FCN(4, 4, num_filters=4, num_layers=1, batch_norm=True)
    assert model.last.bias is not None
    with torch.no_grad():
        model.last.bias.copy_(torch.tensor([0.0, 50.0, 0.0, 0.0]))
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state}, path)
    return path


def _forced(root: Path, run: str, *extra: str) -> list[str]:
    """A tiny QR run that cannot leave its one-class start (lr 1e-9)."""
    return [
        *tiny_overrides(root, run),
        "loss=qr",
        "optimizer.lr=1e-9",
        f"task.init_from={_collapsed_init(root / 'tree.ckpt')}",
        "task.warmup_steps=0",
        "data.steps_per_epoch=6",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "callbacks.collapse_guard.every_n_steps=2",
        "callbacks.collapse_guard.after_steps=2",
        *extra,
    ]


def test_a_forced_collapse_is_told_and_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_prior_region(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lcip.evaluation.collapse"):
        last = train(compose_config(_forced(tmp_path, "forced")), force=True)
    lines = [r.getMessage() for r in caplog.records if "q collapsed" in r.getMessage()]
    # one line per stage when it starts (not one per check): training batches, validation tiles
    assert len(lines) == 2, lines
    assert lines[0].startswith("q collapsed: run tiny/forced, step 2 (training batches): ")
    assert "q predicts 'tree canopy' on 100.0 % of valid pixels" in lines[0]
    assert "step 6 (validation tiles)" in lines[1] and "the prior's argmax" in lines[1]
    rows = read_rows(last.parents[1] / "logs" / "metrics.csv")
    val = [r for r in rows if "val/collapsed" in r]
    assert [float(r["val/collapsed"]) for r in val] == [1.0, 1.0]  # both epochs
    assert all(float(r["val/q_top_share"]) == 1.0 for r in val)
    steps = [int(r["step"]) for r in rows if r.get("train/collapsed") == "1.0"]
    # none before the first check at global step 2 (Lightning's CSV rows count from 0)
    assert steps and min(steps) == 1
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 12


def test_stop_on_collapse_stops_with_the_message(tmp_path: Path) -> None:
    write_prior_region(tmp_path)
    cfg = compose_config(_forced(tmp_path, "stopped", "callbacks.collapse_guard.stop=true"))
    with pytest.raises(CollapseError, match=r"^q collapsed: run tiny/stopped, step 2 .*stopped"):
        train(cfg, force=True)
    last = Path(cfg.run_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 2


def test_a_learning_run_stays_silent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_prior_region(tmp_path)
    overrides = [
        *tiny_overrides(tmp_path, "healthy"),
        "loss=soft_naive",
        "optimizer.lr=0.01",
        "callbacks.collapse_guard.every_n_steps=10",
        "callbacks.collapse_guard.after_steps=20",
    ]
    with caplog.at_level(logging.WARNING, logger="lcip.evaluation.collapse"):
        last = train(compose_config(overrides), force=True)
    assert not [r for r in caplog.records if "collapsed" in r.getMessage()]
    rows = read_rows(last.parents[1] / "logs" / "metrics.csv")
    val = [float(r["val/collapsed"]) for r in rows if "val/collapsed" in r]
    assert val == [0.0, 0.0]
    assert all(float(r["val/q_top_share"]) < 0.95 for r in rows if "val/q_top_share" in r)
    assert {r["train/collapsed"] for r in rows if "train/collapsed" in r} == {"0.0"}


def _one_class_map(tile: Tile, root: Path) -> Path:
    grid = Grid.of(tile.layers["naip"])
    q = np.full((1, *grid.shape), TREE, np.uint8)
    return write_raster(root / f"q_{tile.tile_id}.tif", q, grid)


def test_evaluate_and_report_flag_a_collapsed_map(tmp_path: Path) -> None:
    tiles = []
    for i in range(2):
        t = write_fake_tile(tmp_path, f"t{i}", make_grid(96, (400000.0 + 96 * i, 4.3e6)), "test", i)
        layers = {**t.layers, "q_class": _one_class_map(t, tmp_path)}
        tiles.append(Tile(t.tile_id, t.split, t.crs, t.bounds, layers))
    manifest = Manifest(tuple(tiles))
    maps = [MapSpec("prior (argmax)", "prior", "prob"), MapSpec("QR (q)", "q_class")]
    ev = evaluate_manifest(manifest, maps, CHESAPEAKE4, "lc", image_layer="naip")
    flags = {(r["tile"], r["map"]): r["collapsed"] for r in ev.rows()}
    assert flags == {
        (t, m): int(m == "QR (q)")
        for t in ("t0", "t1", "all")
        for m in ("prior (argmax)", "QR (q)")
    }
    assert "| QR (q) (collapsed) |" in ev.summary_markdown()
    assert "collapsed: QR (q): it predicts 'tree canopy' on 100.0 %" in ev.summary_markdown()
    # the report shows the flag (metrics.csv as lcip-evaluate writes it)
    run = tmp_path / "runs" / "tiny" / "qr_nlcd"
    run.mkdir(parents=True)
    ev.write(run)
    (run / "config.yaml").write_text(
        "region: {name: tiny}\nloss: {name: qr}\nprior: {name: nlcd}\n"
    )
    written = build_report([str(run)], tmp_path / "report", quicklook_tiles=0)
    report = written["report.md"].read_text()
    assert f"QR (q) {COLLAPSED_MARK}" in report and f"(argmax) {COLLAPSED_MARK}" not in report
    with open(written["report.csv"], newline="") as f:
        got = {r["map"]: r["collapsed"] for r in csv.DictReader(f)}
    assert got == {"prior (argmax)": "0", "QR (q)": "1"}
