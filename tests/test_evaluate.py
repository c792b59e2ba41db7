from pathlib import Path

import numpy as np

from lcip.classes import CHESAPEAKE4, IGNORE_INDEX
from lcip.evaluate import (
    MapSpec,
    accuracy,
    confusion_matrix,
    evaluate_manifest,
    iou_per_class,
    mean_iou,
)
from lcip.manifest import Manifest
from lcip.raster import Grid, read_on_grid, write_raster


def test_metrics_against_direct_count() -> None:
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, size=500)
    pred = np.where(rng.random(500) < 0.7, target, rng.integers(0, 4, size=500))
    target[:20] = IGNORE_INDEX
    cm = confusion_matrix(pred, target, 4)
    keep = target != IGNORE_INDEX
    assert cm.sum() == keep.sum()
    assert accuracy(cm) == np.mean(pred[keep] == target[keep])
    for c in range(4):
        t, p = target[keep] == c, pred[keep] == c
        assert iou_per_class(cm)[c] == (t & p).sum() / (t | p).sum()
    assert np.isclose(mean_iou(cm), np.mean(iou_per_class(cm)))
    # a class absent from labels and predictions does not count in the mean
    cm2 = confusion_matrix(np.array([0, 1]), np.array([0, 1]), 4)
    assert mean_iou(cm2) == 1.0


def test_evaluate_manifest_writes_reports(fake_region: Manifest, tmp_path: Path) -> None:
    m = fake_region.select(["val", "test"])
    classes = {}
    for t in m:
        grid = Grid.of(t.layer("lc"))
        truth = CHESAPEAKE4.map_labels(read_on_grid(t.layer("lc"), grid, bands=1))
        classes[t.tile_id] = write_raster(
            tmp_path / "pred" / f"{t.tile_id}.tif", truth, grid, nodata=IGNORE_INDEX
        )
    m = m.with_layer("perfect", classes)
    ev = evaluate_manifest(
        m, [MapSpec("perfect", "perfect"), MapSpec("prior", "prior", "prob")], CHESAPEAKE4
    )
    rows = {(r["tile"], r["map"]): r for r in ev.rows()}
    assert rows[("all", "perfect")]["accuracy"] == 1.0 and rows[("all", "perfect")]["miou"] == 1.0
    assert 0.4 < float(rows[("all", "prior")]["accuracy"]) < 0.95  # the fake prior is 70 % right
    md, csv_path = ev.write(tmp_path / "report")
    assert "| perfect | 100.0 | 100.0 |" in md.read_text()
    assert csv_path.read_text().splitlines()[0].startswith("tile,map,accuracy,miou,iou_water")
