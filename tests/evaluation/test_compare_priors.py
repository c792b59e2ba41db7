"""Stage compare-priors: priors scored side by side, and their mean absolute differences."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import rasterio

from lcip.classes import CHESAPEAKE4, IGNORE_INDEX
from lcip.config import compose_config
from lcip.errors import ConfigError, DataError
from lcip.io.manifest import Manifest
from lcip.io.raster import Grid
from lcip.priors.build import write_prior
from lcip.stages.compare_priors import compare_priors


def _labels(tile_path: Path) -> npt.NDArray[np.uint8]:
    with rasterio.open(tile_path) as src:
        return CHESAPEAKE4.map_labels(src.read(1))


def _region(root: Path, fake_region: Manifest) -> Any:
    """Config of a region made of the fake tiles, with priors ``onehot`` and ``noisy``."""
    cfg = compose_config(
        [f"paths.root={root}", "compare.priors=[onehot,noisy]", "compare.splits=[val,test]"]
    )
    region_dir = Path(cfg.region.dir)
    fake_region.write(cfg.region.manifest)
    onehot = {}
    for tile in fake_region:
        grid = Grid.of(tile.layer("lc"))
        labels = _labels(tile.layer("lc"))
        valid = labels != IGNORE_INDEX
        prior = np.zeros((4, *grid.shape), np.float32)
        for c in range(4):
            prior[c] = labels == c
        path = region_dir / "priors" / "onehot" / f"{tile.tile_id}.tif"
        onehot[tile.tile_id] = write_prior(path, prior, valid, grid, CHESAPEAKE4, {})
    priors = {"onehot": onehot, "noisy": {t.tile_id: t.layer("prior") for t in fake_region}}
    for name, paths in priors.items():
        fake_region.with_layer(f"prior_{name}", paths).write(
            region_dir / "priors" / name / "manifest.csv"
        )
    return cfg


def test_compare_priors_scores_and_differences(
    tmp_path: Path, fake_region: Manifest, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _region(tmp_path / "root", fake_region)
    md = compare_priors(cfg)
    out_dir = Path(cfg.compare.out_dir)
    assert md == out_dir / "comparison.md"
    rows = {r["prior"]: r for r in csv.DictReader(open(out_dir / "comparison.csv"))}
    assert float(rows["onehot"]["accuracy"]) == 1.0 and float(rows["onehot"]["miou"]) == 1.0
    assert float(rows["onehot"]["mad_onehot"]) == 0.0

    # direct computation on the compared tiles (val and test)
    diffs, count, right, labelled = 0.0, 0, 0, 0
    for tile in fake_region.select(["val", "test"]):
        with rasterio.open(tile.layer("prior")) as src:
            noisy = src.read().astype(np.float64)
        labels = _labels(tile.layer("lc"))
        valid = labels != IGNORE_INDEX
        onehot = np.stack([(labels == c) for c in range(4)]).astype(np.float64)
        both = valid & np.isfinite(noisy).all(0)
        diffs += np.abs(onehot[:, both] - noisy[:, both]).sum()
        count += int(both.sum())
        scored = valid & np.isfinite(noisy).all(0)
        right += int((noisy.argmax(0)[scored] == labels[scored]).sum())
        labelled += int(scored.sum())
    mad = diffs / (count * 4)
    assert 0.1 < mad < 0.5
    for a, b in (("onehot", "noisy"), ("noisy", "onehot")):
        assert float(rows[a][f"mad_{b}"]) == pytest.approx(mad, rel=1e-6)
    assert float(rows["noisy"]["accuracy"]) == pytest.approx(right / labelled)
    assert int(rows["noisy"]["pixels"]) == labelled == int(rows["onehot"]["pixels"])
    text = md.read_text()
    assert "| onehot | 100.0 | 100.0 |" in text and "t2, t3" in text and "t0" not in text
    assert f"| noisy | {mad:.4f} | 0.0000 |" in text
    assert capsys.readouterr().out.strip() == text.strip()


def test_missing_prior_says_which_prior_to_build(tmp_path: Path, fake_region: Manifest) -> None:
    cfg = _region(tmp_path / "root", fake_region)
    cfg.compare.priors = ["onehot", "fused"]
    with pytest.raises(ConfigError) as info:
        compare_priors(cfg)
    message = str(info.value)
    assert "\n" not in message and message.startswith("compare.priors: prior 'fused'")
    assert message.endswith("run lcip-prior region=demo prior=fused")


def test_tiles_a_prior_lacks_are_left_out(tmp_path: Path, fake_region: Manifest) -> None:
    cfg = _region(tmp_path / "root", fake_region)
    path = Path(cfg.region.dir) / "priors" / "noisy" / "manifest.csv"
    Manifest.read(path).select(tile_ids=["t3"]).write(path)
    md = compare_priors(cfg)
    assert "1 labelled tile(s) of splits val, test: t3" in md.read_text()
    cfg.compare.splits = ["train"]
    with pytest.raises(DataError, match="no labelled tile"):
        compare_priors(cfg)
