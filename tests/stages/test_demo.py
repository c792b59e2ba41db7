"""lcip-demo: every loss of demo.losses on each prior, and self-epitomic LSR, in one table."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from lcip.config import compose_config
from lcip.stages.demo import demo
from tests.markers import needs_realdata
from tests.paths import REALDATA

WV = REALDATA / "chesapeake_wv_patches"


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def test_demo_runs_each_loss_and_the_epitome(tmp_path: Path) -> None:
    overrides = [
        "region=tiny",
        f"paths.root={tmp_path}",
        "demo.priors=[nlcd]",
        "demo.losses=[soft_naive,qr]",
        "demo.epitome=true",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "data.steps_per_epoch=4",
        "data.val_crop_size=128",
        "task.warmup_steps=2",
        "epitome.num_patches=200",
    ]
    md = demo(compose_config(overrides), overrides=overrides)
    rows = _rows(md.parent)
    got = [(r["prior"], r["method"], r["map"]) for r in rows]
    assert got == [
        ("nlcd", "prior", "prior nlcd (argmax)"),  # once per prior, not once per loss
        ("nlcd", "soft_naive", "SOFT_NAIVE (q)"),
        ("nlcd", "soft_naive", "SOFT_NAIVE (r)"),
        ("nlcd", "qr", "QR (q)"),
        ("nlcd", "qr", "QR (r)"),
        ("nlcd", "self-epitomic LSR", "self-epitomic LSR (q)"),
    ]
    for r in rows:
        assert 0.0 < float(r["accuracy"]) <= 1.0 and 0.0 < float(r["miou"]) <= 1.0
        assert float(r["seconds"]) > 0
    # each loss trained in its own run folder, the epitome scored in its own
    runs = tmp_path / "runs" / "tiny"
    assert {p.name for p in runs.iterdir()} >= {"soft_naive_nlcd", "qr_nlcd", "epitome"}
    assert (runs / "epitome" / "evaluation.csv").is_file()
    text = md.read_text()
    assert "| prior | method | map | accuracy (%) | mIoU (%) | run (s) |" in text
    assert (md.parent / "quicklook.png").stat().st_size > 10_000


@pytest.mark.slow
@needs_realdata(WV)
def test_real_wv_acceptance(tmp_path: Path) -> None:
    """`make acceptance`: QR (r) beats the prior and reaches the issue's reference figure."""
    overrides = ["experiment=wv_acceptance", f"paths.root={tmp_path}", f"region.folders.root={WV}"]
    md = demo(compose_config(overrides), overrides=overrides)
    table = {r["map"]: (float(r["accuracy"]), float(r["miou"])) for r in _rows(md.parent)}
    prior = table["prior nlcd (argmax)"]
    for method in ("HARD_NAIVE", "SOFT_NAIVE", "LSR", "QR", "RQ"):
        assert f"{method} (q)" in table and f"{method} (r)" in table
    qr = table["QR (r)"]
    assert qr[0] > prior[0] and qr[1] > prior[1]
    assert qr[0] >= 0.894 and qr[1] >= 0.516  # the plain reference implementation's QR (r)
    assert table["self-epitomic LSR (q)"][1] > prior[1]
