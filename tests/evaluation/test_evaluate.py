import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

import lcip.evaluation.evaluate
from lcip.classes import CHESAPEAKE4, ENVIROATLAS5, IGNORE_INDEX
from lcip.errors import ConfigError, DataError
from lcip.evaluation.evaluate import (
    PAPER,
    PARAFORMER,
    PARAFORMER_CHESAPEAKE4,
    MapSpec,
    accuracy,
    class_map,
    confusion_matrix,
    evaluate_manifest,
    evaluate_protocols,
    get_protocols,
    iou_per_class,
    mean_class_recall,
    mean_iou,
    miou_over_all_classes,
    recall_per_class,
    write_evaluations,
)
from lcip.io.manifest import Manifest
from lcip.io.provenance import PROVENANCE_TAG, provenance
from lcip.io.raster import Grid, read_on_grid, strip_windows, write_raster
from tests.conftest import make_grid, write_fake_tile


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


def write_map(path: Path, data: np.ndarray, grid: Grid, sha: str | None) -> Path:
    tags = {PROVENANCE_TAG: provenance({"checkpoint_sha256": sha})} if sha else None
    return write_raster(path, data, grid, nodata=IGNORE_INDEX, tags=tags, cog=True)


def test_evaluation_refuses_maps_of_another_checkpoint(
    fake_region: Manifest, tmp_path: Path
) -> None:
    tile = fake_region.tile("t3")
    grid = Grid.of(tile.layer("lc"))
    truth = CHESAPEAKE4.map_labels(read_on_grid(tile.layer("lc"), grid, bands=1))
    made = write_map(tmp_path / "q" / "t3.tif", truth, grid, "a" * 64)
    plain = write_map(tmp_path / "plain" / "t3.tif", truth, grid, None)
    m = fake_region.select(tile_ids=["t3"]).with_layer("q", {"t3": made})
    m = m.with_layer("plain", {"t3": plain})
    ok = evaluate_manifest(
        m, [MapSpec("q", "q", expect={"checkpoint_sha256": "a" * 64})], CHESAPEAKE4
    )
    assert accuracy(ok.overall("q")) == 1.0
    with pytest.raises(DataError) as err:
        evaluate_manifest(
            m, [MapSpec("q", "q", expect={"checkpoint_sha256": "b" * 64})], CHESAPEAKE4
        )
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == (
        f"{made}: made with checkpoint_sha256={'a' * 12}, but this run expects "
        f"checkpoint_sha256={'b' * 12}; run lcip-predict again"
    )
    with pytest.raises(
        DataError, match=rf"^{plain}: records no checkpoint_sha256 .*run lcip-predict again$"
    ):
        evaluate_manifest(
            m, [MapSpec("p", "plain", expect={"checkpoint_sha256": "a" * 64})], CHESAPEAKE4
        )


def test_evaluation_streams_strips_and_skips_nodata_imagery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grid = make_grid(600, width=300)
    tile = write_fake_tile(tmp_path, "x", grid, "test", seed=3)
    naip = read_on_grid(tile.layer("naip"), grid)
    naip[:, 100:380, 50:120] = 0  # black imagery (nodata: the raster declares none)
    write_raster(tile.layer("naip"), naip, grid)
    truth = CHESAPEAKE4.map_labels(read_on_grid(tile.layer("lc"), grid, bands=1))
    rng = np.random.default_rng(0)
    noisy = np.where(rng.random(grid.shape) < 0.2, rng.integers(0, 4, grid.shape), truth)
    q = write_map(tmp_path / "q.tif", noisy.astype(np.uint8), grid, None)
    m = Manifest((tile,)).with_layer("q", {"x": q})
    strips: list[Window] = []

    def recording(g: Grid, rows: int) -> Iterator[Window]:
        for w in strip_windows(g, rows):
            strips.append(w)
            yield w

    monkeypatch.setattr(lcip.evaluation.evaluate, "STRIP_ROWS", 256)
    monkeypatch.setattr(lcip.evaluation.evaluate, "strip_windows", recording)
    maps = [MapSpec("q", "q"), MapSpec("prior", "prior", "prob")]
    ev = evaluate_manifest(m, maps, CHESAPEAKE4, image_layer="naip")
    assert [(w.row_off, w.height) for w in strips] == [(0, 256), (256, 256), (512, 88)]
    valid = (naip != 0).any(0)
    prior = read_on_grid(tile.layer("prior"), grid)
    prior_cls = np.where(np.isfinite(prior).all(0), prior.argmax(0), IGNORE_INDEX)
    for name, pred in (("q", noisy), ("prior", prior_cls)):
        target = np.where(valid, truth, IGNORE_INDEX)
        np.testing.assert_array_equal(ev.matrices[("x", name)], confusion_matrix(pred, target, 4))
    scored = truth[valid] != IGNORE_INDEX
    assert ev.overall("q").sum() == ev.overall("prior").sum() == scored.sum() < truth.size
    # a black tile scores nothing
    write_raster(tile.layer("naip"), np.zeros_like(naip), grid)
    ev = evaluate_manifest(m, maps, CHESAPEAKE4, image_layer="naip")
    assert ev.overall("q").sum() == ev.overall("prior").sum() == 0


def test_class_map_argmax_and_nodata() -> None:
    prob = np.array(
        [
            [[0.1, 0.5, np.nan], [0.3, 0.2, 0.25]],
            [[0.7, 0.5, 0.5], [0.3, 0.2, 0.25]],
            [[0.2, 0.0, 0.5], [0.4, 0.6, 0.5]],
        ],
        dtype=np.float32,
    )
    # ties go to the first class, as numpy's argmax; NaN in any band -> IGNORE_INDEX
    np.testing.assert_array_equal(class_map(prob, "prob"), [[1, 0, IGNORE_INDEX], [2, 2, 2]])
    np.testing.assert_array_equal(class_map(prob[:, :, :2], "prob"), prob[:, :, :2].argmax(0))
    with pytest.raises(ValueError, match="unknown kind 'probs'"):
        MapSpec("x", "x", "probs")


# --- protocols -------------------------------------------------------------------------------

#: A hand-made confusion matrix (rows = truth, columns = prediction); class 3 never occurs.
HAND_CM = np.array([[5, 1, 0, 0], [2, 6, 2, 0], [0, 0, 0, 0], [1, 0, 0, 3]])


def test_paper_protocol_on_a_hand_made_matrix() -> None:
    # accuracy = (5 + 6 + 0 + 3) / 20; IoU = TP / (row + column - TP) per class
    assert accuracy(HAND_CM) == 14 / 20
    iou = [5 / (6 + 8 - 5), 6 / (10 + 7 - 6), 0 / (0 + 2 - 0), 3 / (4 + 3 - 3)]
    np.testing.assert_allclose(iou_per_class(HAND_CM), iou)
    assert np.isclose(mean_iou(HAND_CM), sum(iou) / 4)  # class 2 is predicted: IoU 0 counts
    no_third = HAND_CM.copy()
    no_third[1, 2] = 0  # class 2 now absent from labels and predictions: left out of the mean
    assert np.isclose(mean_iou(no_third), (5 / 9 + 6 / 9 + 3 / 4) / 3)
    assert PAPER.accuracy is accuracy and PAPER.miou is mean_iou


def test_paraformer_protocol_on_a_hand_made_matrix() -> None:
    # "OA" = mean recall over classes present in the labels (class 2 has no label pixel)
    assert np.isclose(mean_class_recall(HAND_CM), (5 / 6 + 6 / 10 + 3 / 4) / 3)
    np.testing.assert_allclose(recall_per_class(HAND_CM)[[0, 1, 3]], [5 / 6, 6 / 10, 3 / 4])
    assert np.isnan(recall_per_class(HAND_CM)[2])
    # mIoU = sum of IoU of the classes present / 4, also when a class is absent altogether
    no_third = HAND_CM.copy()
    no_third[1, 2] = 0
    assert np.isclose(miou_over_all_classes(no_third), (5 / 9 + 6 / 9 + 3 / 4) / 4)
    assert np.isclose(miou_over_all_classes(HAND_CM), (5 / 9 + 6 / 11 + 0 + 3 / 4) / 4)
    assert np.isnan(miou_over_all_classes(np.zeros((4, 4), np.int64)))
    assert PARAFORMER.accuracy is mean_class_recall and PARAFORMER.miou is miou_over_all_classes


def test_paraformer_class_mappings() -> None:
    # Chesapeake 1 m labels: barren (4) is low vegetation, not impervious as in the paper
    codes = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    paper = CHESAPEAKE4.map_labels(codes)
    later = PARAFORMER.labels(CHESAPEAKE4).map_labels(codes)
    ig = IGNORE_INDEX
    np.testing.assert_array_equal(paper, [ig, 0, 1, 2, 3, 3, 3, ig])
    np.testing.assert_array_equal(later, [ig, 0, 1, 2, 2, 3, 3, ig])
    assert PARAFORMER.labels(ENVIROATLAS5) is ENVIROATLAS5
    # NLCD codes: 11 water; 41/42/43/90 tree; 31/52/71/81/82/95 low vegetation; 21-24 built-up
    nlcd = np.array([[[0, 11, 12, 21, 22, 23, 24, 31, 41, 42, 43, 52, 71, 81, 82, 90, 95]]])
    expect = [ig, 0, ig, 3, 3, 3, 3, 2, 1, 1, 1, 2, 2, 2, 2, 1, 2]
    np.testing.assert_array_equal(class_map(nlcd, "nlcd")[0], expect)
    with pytest.raises(ConfigError, match=r"^evaluate.protocols=\['papers'\]: use one or more"):
        get_protocols(["papers"])


def test_protocols_scored_on_the_same_pixels_and_written(
    fake_region: Manifest, tmp_path: Path
) -> None:
    tile = fake_region.tile("t3")
    grid = Grid.of(tile.layer("lc"))
    raw = read_on_grid(tile.layer("lc"), grid, bands=1)
    pred = CHESAPEAKE4.map_labels(raw)  # the paper's truth: barren predicted impervious
    q = write_map(tmp_path / "q.tif", pred, grid, None)
    m = fake_region.select(tile_ids=["t3"]).with_layer("q", {"t3": q})
    evs = evaluate_protocols(m, [MapSpec("X (q)", "q")], CHESAPEAKE4)
    assert list(evs) == ["paper", "paraformer"]
    paper, later = evs["paper"].overall("X (q)"), evs["paraformer"].overall("X (q)")
    direct = confusion_matrix(pred, PARAFORMER_CHESAPEAKE4.map_labels(raw), 4)
    np.testing.assert_array_equal(later, direct)
    assert paper.sum() == later.sum() and accuracy(paper) == 1.0
    barren = int((raw == 4).sum())
    assert barren > 0 and later[2, 3] == barren  # barren: low vegetation truth, impervious map
    paths = write_evaluations(evs, tmp_path / "run")
    assert [p.name for p in paths] == ["evaluation.md", "evaluation.csv", "metrics.csv"]
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = {(r["protocol"], r["tile"], r["map"]): r for r in csv.DictReader(f)}
    row = rows[("paraformer", "all", "X (q)")]
    assert float(row["accuracy"]) == pytest.approx(mean_class_recall(direct))
    assert float(row["miou"]) == pytest.approx(miou_over_all_classes(direct))
    assert float(row["iou_impervious"]) == pytest.approx(iou_per_class(direct)[3])
    assert ("paraformer", "t3", "X (q)") in rows and float(
        rows[("paper", "t3", "X (q)")]["miou"]
    ) == 1
    assert "protocol paraformer" in paths[0].read_text()
