"""The training copy by default: made under paths.root, bounded, provenance-checked, exact."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from lcip.config import compose_config
from lcip.data.datamodules import TileDataModule
from lcip.data.datasets import memory_map
from lcip.data.training_copy import bounded_training_copy, plan_copy, raw_size
from lcip.io.manifest import Manifest

LAYERS = ["naip", "prior", "lc"]


def _module(manifest: Manifest, copy: Path | None, max_gb: float | None = 100.0) -> TileDataModule:
    dm = TileDataModule(
        manifest,
        crop_size=32,
        batch_size=4,
        steps_per_epoch=3,
        training_copy=copy,
        training_copy_max_gb=max_gb,
    )
    dm.setup("fit")
    return dm


def _batches(dm: TileDataModule) -> list[dict[str, torch.Tensor]]:
    return [{k: v.clone() for k, v in b.items()} for b in dm.train_dataloader()]


def test_default_config_puts_the_copy_under_paths_root() -> None:
    cfg = compose_config(["paths.root=/data/lcip", "region=demo"])
    assert cfg.data.training_copy == "/data/lcip/cache/training_copy/demo"
    assert float(cfg.data.training_copy_max_gb) > 0


def test_default_path_makes_the_copy_and_its_batches_equal_the_originals(
    fake_region: Manifest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "cache" / "training_copy" / "fake"
    with caplog.at_level(logging.INFO, logger="lcip.data.training_copy"):
        dm = _module(fake_region, folder)
    train = fake_region.select(["train"])
    expected = sum(raw_size(t.layer(n)) for t in train for n in LAYERS)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith("data.training_copy: writing 6 layer files (")
    assert str(folder) in said[0]
    copies = dm.train_dataset.manifest  # type: ignore[union-attr]
    for tile in copies:
        for name in LAYERS:
            path = tile.layer(name)
            assert path.parent.parent == folder
            with rasterio.open(path) as src:
                assert memory_map(src) is not None  # read without GDAL or decoding
    on_disk = sum(f.stat().st_size for f in folder.rglob("*.tif"))
    assert expected <= on_disk < expected + 64 * 1024  # the raw size, plus headers
    # The copy's batches are the originals' batches, exactly (stored uncompressed, no rounding).
    for a, b in zip(_batches(dm), _batches(_module(fake_region, None)), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True)
    # Reused by the next run: nothing rewritten, one line saying so.
    stamps = sorted(f.stat().st_mtime_ns for f in folder.rglob("*.tif"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lcip.data.training_copy"):
        _module(fake_region, folder)
    assert sorted(f.stat().st_mtime_ns for f in folder.rglob("*.tif")) == stamps
    assert [r.getMessage() for r in caplog.records] == [
        f"data.training_copy: reading the up-to-date copy in {folder}"
    ]


def test_a_stale_copy_is_remade_not_read(fake_region: Manifest, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    _module(fake_region, folder)
    tile = fake_region.select(["train"]).tiles[0]
    with rasterio.open(tile.layer("prior"), "r+") as src:  # the prior is rebuilt
        data = src.read()
        data[:, :10] = np.where(np.isfinite(data[:, :10]), 0.25, data[:, :10])
        src.write(data)
    stat = tile.layer("prior").stat()
    os.utime(tile.layer("prior"), ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    plan = plan_copy(fake_region.select(["train"]), LAYERS, folder)
    assert plan.missing_files == 1 and plan.missing_bytes == raw_size(tile.layer("prior"))
    dm = _module(fake_region, folder)
    copy = dm.train_dataset.manifest.tiles[0].layer("prior")  # type: ignore[union-attr]
    with rasterio.open(copy) as src, rasterio.open(tile.layer("prior")) as ref:
        np.testing.assert_array_equal(src.read(), ref.read())


def test_over_the_bound_the_originals_are_read_with_one_warning(
    fake_region: Manifest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "copy"
    with caplog.at_level(logging.INFO, logger="lcip.data.training_copy"):
        dm = _module(fake_region, folder, max_gb=1e-5)  # 10 kB: less than the copy
    said = list(caplog.records)
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    message = said[0].getMessage()
    assert "\n" not in message and "data.training_copy_max_gb=1e-05" in message
    assert "reading the original files instead" in message
    assert not folder.exists()
    assert dm.train_dataset.manifest == fake_region.select(["train"])  # type: ignore[union-attr]


def test_a_copy_the_free_disk_cannot_hold_is_not_made(
    fake_region: Manifest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from lcip.data.training_copy import _free_bytes

    train = fake_region.select(["train"])
    full = _free_bytes(tmp_path)  # as if the disk had to keep all its free space
    with caplog.at_level(logging.WARNING, logger="lcip.data.training_copy"):
        out = bounded_training_copy(train, LAYERS, tmp_path / "copy", None, free_margin=full)
    assert out == train and not (tmp_path / "copy").exists()
    assert "only" in caplog.records[0].getMessage() and "free there" in caplog.text
