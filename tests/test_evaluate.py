from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

import lcip.evaluate
from lcip.classes import CHESAPEAKE4, IGNORE_INDEX
from lcip.errors import DataError
from lcip.evaluate import (
    MapSpec,
    accuracy,
    class_map,
    confusion_matrix,
    evaluate_manifest,
    iou_per_class,
    mean_iou,
)
from lcip.manifest import Manifest
from lcip.provenance import PROVENANCE_TAG, provenance
from lcip.raster import Grid, read_on_grid, strip_windows, write_raster
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

    monkeypatch.setattr(lcip.evaluate, "STRIP_ROWS", 256)
    monkeypatch.setattr(lcip.evaluate, "strip_windows", recording)
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
