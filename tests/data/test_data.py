from pathlib import Path

import numpy as np
import pytest
import torch

from lcip.classes import CHESAPEAKE4, IGNORE_INDEX
from lcip.data.datamodules import TileDataModule
from lcip.data.datasets import LayerSpec, TileWindowDataset
from lcip.data.samplers import GridCropSampler, RandomCropSampler, grid_starts
from lcip.errors import ConfigError, DataError, GridMismatchError
from lcip.io.manifest import Manifest
from lcip.io.raster import Grid, read_on_grid, write_raster
from tests.conftest import make_grid

LAYERS = LayerSpec("naip", "prior", "lc")


def test_window_matches_files(fake_region: Manifest) -> None:
    ds = TileWindowDataset(fake_region, LAYERS, CHESAPEAKE4)
    s = ds[(1, 4, 10, 32, 40)]
    assert s["image"].shape == (4, 32, 40) and s["image"].dtype == torch.float32
    tile = fake_region.tiles[1]
    grid = ds.grids[1]
    naip = read_on_grid(tile.layer("naip"), grid)
    np.testing.assert_allclose(s["image"].numpy(), naip[:, 4:36, 10:50] / 255.0, rtol=1e-6)
    prior = read_on_grid(tile.layer("prior"), grid)[:, 4:36, 10:50]
    valid = np.isfinite(prior).all(0)
    assert not valid[:4].any() and valid[4:].all()  # tile 1 has 8 nodata rows
    np.testing.assert_array_equal(s["valid"].numpy(), valid)
    assert torch.all(s["prior"][:, ~s["valid"]] == 0)
    np.testing.assert_allclose(s["prior"][:, s["valid"]].sum(0).numpy(), 1.0, atol=1e-5)
    lc = read_on_grid(tile.layer("lc"), grid, bands=1)[4:36, 10:50]
    np.testing.assert_array_equal(s["label"].numpy(), CHESAPEAKE4.map_labels(lc))
    assert (s["label"][:4] == IGNORE_INDEX).all()


def test_grid_mismatch_is_reported(fake_region: Manifest) -> None:
    tile = fake_region.tiles[0]
    write_raster(tile.layer("prior"), np.zeros((4, 90, 96), np.float32), make_grid(90, width=96))
    with pytest.raises(GridMismatchError, match=r"layer 'prior' of tile t0"):
        TileWindowDataset(fake_region, LAYERS, CHESAPEAKE4)


def test_prior_band_count_checked(fake_region: Manifest) -> None:
    from lcip.classes import ENVIROATLAS5

    with pytest.raises(DataError, match="prior has 4 bands but class scheme 'enviroatlas5' has 5"):
        TileWindowDataset(fake_region, LAYERS, ENVIROATLAS5)


def test_random_sampler_mixes_tiles_and_is_seeded() -> None:
    shapes = [(96, 96)] * 8
    keys = list(RandomCropSampler(shapes, 32, 64, seed=3))
    assert len(keys) == 64 and len({k[0] for k in keys[:32]}) >= 6  # one batch spans many tiles
    assert all(0 <= r <= 64 and 0 <= c <= 64 and h == w == 32 for _, r, c, h, w in keys)
    assert keys == list(RandomCropSampler(shapes, 32, 64, seed=3))
    s = RandomCropSampler(shapes, 32, 64, seed=3)
    s.set_epoch(1)
    assert list(s) != keys
    with pytest.raises(ValueError, match="smaller than the crop size"):
        RandomCropSampler([(16, 96)], 32, 4)


def test_grid_sampler_covers_tiles() -> None:
    assert grid_starts(100, 32, 32) == [0, 32, 64, 68]
    assert grid_starts(20, 32, 32) == [0]
    keys = list(GridCropSampler([(100, 64)], 32))
    covered = np.zeros((100, 64), bool)
    for _, r, c, h, w in keys:
        covered[r : r + h, c : c + w] = True
    assert covered.all()
    # partition: every pixel in exactly one crop, crops past the edge
    count = np.zeros((100, 64), int)
    parts = list(GridCropSampler([(100, 64)], 32, partition=True))
    for _, r, c, h, w in parts:
        count[r : r + h, c : c + w] += 1
    assert (count == 1).all() and len(parts) == 4 * 2


def test_random_sampler_resumes_mid_epoch() -> None:
    shapes = [(96, 96), (64, 80)]
    full = RandomCropSampler(shapes, 32, 40, seed=5)
    full.set_epoch(2)
    keys = list(full)
    resumed = RandomCropSampler(shapes, 32, 40, seed=5)
    resumed.resume(2, 24)
    resumed.set_epoch(2)
    assert list(resumed) == keys[24:] and resumed.offset == 24
    assert list(resumed) == keys  # the skip applies to one pass only
    other = RandomCropSampler(shapes, 32, 40, seed=5)
    other.resume(1, 24)  # a resume point of another epoch is ignored
    other.set_epoch(2)
    assert list(other) == keys


def test_train_loader_state_round_trip(fake_region: Manifest) -> None:
    dm = TileDataModule(fake_region, crop_size=32, batch_size=4, steps_per_epoch=5)
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    all_batches = list(loader)
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches": 2}
    fresh = dm.train_dataloader()
    fresh.load_state_dict(state)
    fresh.sampler.set_epoch(1)
    rest = list(fresh)
    assert len(rest) == 3 and fresh.state_dict() == {"epoch": 1, "batches": 5}
    for a, b in zip(rest, all_batches[2:], strict=True):
        torch.testing.assert_close(a["image"], b["image"])


def test_crop_larger_than_tile_is_a_config_error(fake_region: Manifest) -> None:
    dm = TileDataModule(fake_region, crop_size=128)
    dm.setup("fit")
    with pytest.raises(
        ConfigError, match=r"data.crop_size=128: larger than training tile\(s\) \['t0', 't1'\]"
    ):
        dm.train_dataloader()


def test_black_imagery_is_invalid(fake_region: Manifest) -> None:
    tile = fake_region.tiles[0]
    grid = Grid.of(tile.layer("naip"))
    naip = read_on_grid(tile.layer("naip"), grid)
    naip[:, :10] = 0
    write_raster(tile.layer("naip"), naip, grid)
    s = TileWindowDataset(fake_region, LAYERS, CHESAPEAKE4)[(0, 0, 0, 32, 32)]
    assert not s["valid"][:10].any() and s["valid"][10:].all() and int(s["tile"]) == 0
    kept = TileWindowDataset(fake_region, LAYERS, CHESAPEAKE4, zero_is_nodata=False)
    assert kept[(0, 0, 0, 32, 32)]["valid"].all()
    naip[:, :10] = 7  # a declared nodata value is honoured whatever zero_is_nodata says
    write_raster(tile.layer("naip"), naip, grid, nodata=7)
    kept = TileWindowDataset(fake_region, LAYERS, CHESAPEAKE4, zero_is_nodata=False)
    assert not kept[(0, 0, 0, 32, 32)]["valid"][:10].any()


def test_datamodule_batches(fake_region: Manifest) -> None:
    dm = TileDataModule(
        fake_region,
        "chesapeake4",
        crop_size=32,
        batch_size=8,
        steps_per_epoch=3,
    )
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 3 and batches[0]["image"].shape == (8, 4, 32, 32)
    assert batches[0]["prior"].shape == (8, 4, 32, 32) and batches[0]["valid"].dtype == torch.bool
    val = list(dm.val_dataloader())  # type: ignore[arg-type]
    assert sum(b["image"].shape[0] for b in val) == 1 and val[0]["image"].shape[-1] == 96


def test_datamodule_reads_the_layers_of_its_layer_spec(fake_region: Manifest) -> None:
    layers = LayerSpec(prior=None, label=None, extra=["prior"])  # type: ignore[arg-type]
    assert layers.extra == ("prior",) and hash(layers)  # a list given becomes a tuple
    dm = TileDataModule(fake_region, layers=layers, crop_size=32, batch_size=2, steps_per_epoch=1)
    dm.setup("fit")
    assert dm.train_dataset is not None and dm.train_dataset.layers is layers
    (batch,) = list(dm.train_dataloader())
    assert set(batch) == {"image", "tile", "valid"}  # no prior, no labels
    assert batch["image"].shape == (2, 8, 32, 32)  # imagery + the prior's bands as inputs
    valid = batch["valid"]
    assert valid.any()
    bands = batch["image"].permute(1, 0, 2, 3)[:, valid]
    assert torch.allclose(bands[4:].sum(0), torch.ones(()), atol=1e-5)  # the prior, stacked on


def test_cached_reads_equal_windowed_reads(fake_region: Manifest) -> None:
    plain = TileWindowDataset(fake_region, LAYERS, CHESAPEAKE4)
    cached = TileWindowDataset(fake_region, LAYERS, CHESAPEAKE4, cache=True)
    for key in [(1, 4, 10, 32, 40), (0, 0, 0, 96, 96), (2, 70, 80, 32, 32)]:
        a, b = plain[key], cached[key]
        for k in a:
            torch.testing.assert_close(a[k], b[k])
    # boundless past the edge: NaN imagery -> invalid, zero-filled
    edge = cached[(0, 80, 80, 32, 32)]
    assert not edge["valid"][16:, :].any() and edge["valid"][:16, :16].all()


def test_reads_equal_gdal_boundless_reads_and_training_copies_are_memory_mapped(
    fake_region: Manifest, tmp_path: Path
) -> None:
    import rasterio
    from rasterio.windows import Window

    from lcip.data.datasets import memory_map
    from lcip.data.training_copy import training_copy

    names = ["naip", "prior", "lc"]
    copies = training_copy(fake_region, names, tmp_path / "copy")
    stamps = [t.layer(n).stat().st_mtime_ns for t in copies for n in names]
    assert training_copy(fake_region, names, tmp_path / "copy") == copies  # reused as is
    assert [t.layer(n).stat().st_mtime_ns for t in copies for n in names] == stamps
    plain = TileWindowDataset(fake_region, LAYERS, CHESAPEAKE4)
    mapped = TileWindowDataset(copies, LAYERS, CHESAPEAKE4)
    for layer in names:
        with rasterio.open(copies.tiles[0].layer(layer)) as src:
            assert memory_map(src) is not None
        with rasterio.open(fake_region.tiles[0].layer(layer)) as src:
            assert memory_map(src) is None  # DEFLATE: read through GDAL
    windows = [(1, 4, 10, 32, 40), (0, -5, 80, 32, 32), (3, 70, -3, 40, 30), (2, 90, 90, 16, 16)]
    for t, r, c, h, w in windows:
        for layer, fill in (("naip", 0.0), ("prior", np.nan), ("lc", 0.0)):
            with rasterio.open(fake_region.tiles[t].layer(layer)) as src:
                expected = src.read(window=Window(c, r, w, h), boundless=True, fill_value=fill)
            for ds in (plain, mapped):
                got = ds.read(t, layer, Window(c, r, w, h), fill=fill)
                np.testing.assert_array_equal(got.astype(expected.dtype), expected)
        a, b = plain[(t, r, c, h, w)], mapped[(t, r, c, h, w)]
        for k in a:
            torch.testing.assert_close(a[k], b[k])


def test_loader_workers_give_the_batches_of_the_main_process(fake_region: Manifest) -> None:
    def batches(workers: int) -> list[dict[str, torch.Tensor]]:
        dm = TileDataModule(
            fake_region, crop_size=32, batch_size=4, steps_per_epoch=3, num_workers=workers
        )
        dm.setup("fit")
        return list(dm.train_dataloader())

    for a, b in zip(batches(0), batches(2), strict=True):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k])


def test_processes_building_one_training_copy_wait_for_each_other(
    fake_region: Manifest, tmp_path: Path
) -> None:
    import multiprocessing

    from lcip.data.training_copy import training_copy
    from lcip.io.atomic import file_lock

    out = tmp_path / "copy"
    context = multiprocessing.get_context("fork")
    with file_lock(out / ".lock"):  # another rank is building the copies
        rank = context.Process(target=training_copy, args=(fake_region, ["naip"], out))
        rank.start()
        rank.join(1.0)
        assert rank.is_alive() and not (out / "naip").exists()
    rank.join(60)
    assert rank.exitcode == 0 and len(list((out / "naip").glob("*.tif"))) == len(fake_region)
