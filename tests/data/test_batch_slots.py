"""Reusable shared batch buffers: freed only when unused; worker batches exact and kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lcip.classes import CHESAPEAKE4
from lcip.data.batch_slots import FREE, HELD, SENT, BatchSlots, SlotBatch
from lcip.data.datamodules import TileDataModule
from lcip.data.datasets import LayerSpec, TileWindowDataset, collate_windows
from lcip.io.manifest import Manifest
from lcip.io.raster import Grid, read_on_grid, write_raster
from tests.markers import needs_cuda

LAYOUT = {
    "image": (torch.float32, (4, 3, 8, 8)),
    "tile": (torch.int64, (4,)),
    "valid": (torch.bool, (4, 8, 8)),
}


def test_a_slot_is_freed_only_when_no_tensor_uses_it() -> None:
    slots = BatchSlots(LAYOUT, slots_per_worker=2, num_workers=0)
    assert len(slots) == 2 and slots.nbytes % 64 == 0
    first, second = slots.acquire(), slots.acquire()
    assert (first, second) == (0, 1) and slots.acquire() is None  # both claimed
    assert slots.state.tolist() == [SENT, SENT]
    writer = slots.views(first, 3)
    writer["image"].fill_(1.5)
    writer["tile"][:] = torch.tensor([7, 8, 9])
    del writer
    batch = SlotBatch(slots.key, first, 3).resolve()
    assert batch["image"].shape == (3, 3, 8, 8) and batch["valid"].dtype == torch.bool
    assert float(batch["image"].sum()) == 1.5 * 3 * 3 * 64 and batch["tile"].tolist() == [7, 8, 9]
    slots.release_unused()
    assert slots.state.tolist() == [HELD, SENT]  # sent slots are never freed by the receiver
    # anything that keeps the memory alive keeps the slot held: a view, a NumPy array
    part = batch["image"][:, :1]
    array = batch["valid"].numpy()
    del batch
    slots.release_unused()
    assert slots.state[first] == HELD
    del part
    slots.release_unused()
    assert slots.state[first] == HELD
    del array
    slots.release_unused()
    assert slots.state[first] == FREE and slots.acquire() == first


def test_slots_belong_to_their_worker_and_their_process() -> None:
    slots = BatchSlots(LAYOUT, slots_per_worker=3, num_workers=2)
    assert len(slots) == 6 and slots.state.is_shared()
    assert slots.acquire() is None  # the main process is not one of the two writers
    with pytest.raises(RuntimeError, match="not owned by this process"):
        SlotBatch(slots.key + 1000, 0, 1).resolve()


def test_a_batch_read_whole_equals_its_samples(fake_region: Manifest) -> None:
    # tile 2 declares a nodata value, so one batch mixes nodata rules (the per-crop branch)
    tile = fake_region.tiles[2]
    grid = Grid.of(tile.layer("naip"))
    naip = read_on_grid(tile.layer("naip"), grid)
    naip[:, 20:30] = 9
    write_raster(tile.layer("naip"), naip, grid, nodata=9)
    ds = TileWindowDataset(fake_region, LayerSpec("naip", "prior", "lc"), CHESAPEAKE4)
    mixed = [(1, 4, 10, 32, 32), (0, -5, 80, 32, 32), (2, 10, -3, 32, 32), (3, 70, 70, 32, 32)]
    same = [(0, 0, 0, 32, 32), (1, 64, 64, 32, 32), (3, -8, -8, 32, 32)]
    for keys in (mixed, same):
        batch = ds.read_windows(keys)
        assert isinstance(batch, dict)
        expected = collate_windows([ds[k] for k in keys])
        assert isinstance(expected, dict) and batch.keys() == expected.keys()
        for key in batch:
            torch.testing.assert_close(batch[key], expected[key], rtol=0, atol=0)
    nodata_rows = ds.read_windows(mixed)
    assert isinstance(nodata_rows, dict)
    assert not nodata_rows["valid"][2, 10:20].any() and nodata_rows["valid"][2, :10, 3:].all()
    with pytest.raises(ValueError, match="windows of different sizes"):
        ds.read_windows([(0, 0, 0, 32, 32), (0, 0, 0, 16, 16)])


def test_worker_batches_are_exact_and_held_batches_never_change(fake_region: Manifest) -> None:
    def loader(workers: int) -> object:
        dm = TileDataModule(
            fake_region, "chesapeake4", crop_size=32, batch_size=4, steps_per_epoch=30
        )
        dm.num_workers = workers
        dm.setup("fit")
        return dm.train_dataloader()

    workers = loader(2)
    keys = list(workers.sampler)  # type: ignore[attr-defined]
    reference = workers.dataset  # type: ignore[attr-defined]
    held, copies = [], []
    for i, batch in enumerate(workers):  # type: ignore[attr-defined]
        start = 4 * i
        expected = collate_windows([reference[k] for k in keys[start : start + 4]])
        assert isinstance(expected, dict)
        for key in expected:
            torch.testing.assert_close(batch[key], expected[key], rtol=0, atol=0)
        if i % 3 == 0:  # a consumer that keeps some batches: they must stay as they were
            held.append(batch)
            copies.append({k: v.clone() for k, v in batch.items()})
    for batch, copy in zip(held, copies, strict=True):
        for key in copy:
            assert torch.equal(batch[key], copy[key]), key
    # both hand-overs ran: reused buffers, and new memory while the held batches filled them
    assert workers.slot_hits >= 10 and workers.slot_misses >= 1  # type: ignore[attr-defined]
    assert workers.slot_hits + workers.slot_misses == 30  # type: ignore[attr-defined]
    single = loader(0)
    for i, batch in enumerate(single):  # type: ignore[attr-defined]
        np.testing.assert_array_equal(
            batch["tile"].numpy(), [k[0] for k in keys[4 * i : 4 * i + 4]]
        )
    assert single.slot_misses == 0  # type: ignore[attr-defined]


def test_a_plain_loader_with_default_collation_still_gets_samples(fake_region: Manifest) -> None:
    from torch.utils.data import DataLoader

    keys = [(0, 0, 0, 32, 32), (1, 40, 40, 32, 32), (3, 64, 70, 32, 32)]
    plain = TileWindowDataset(fake_region, LayerSpec("naip", "prior", "lc"), CHESAPEAKE4)
    (stacked,) = DataLoader(plain, sampler=keys, batch_size=3)  # type: ignore[arg-type]
    whole = TileWindowDataset(
        fake_region, LayerSpec("naip", "prior", "lc"), CHESAPEAKE4, whole_batches=True
    )
    loader = DataLoader(whole, sampler=keys, batch_size=3, collate_fn=collate_windows)  # type: ignore[arg-type]
    (batch,) = loader
    assert stacked.keys() == batch.keys()
    for key in batch:
        torch.testing.assert_close(batch[key], stacked[key], rtol=0, atol=0)


@needs_cuda
def test_pinned_batches_come_from_the_pin_thread_and_free_their_slot(
    fake_region: Manifest,
) -> None:
    dm = TileDataModule(fake_region, "chesapeake4", crop_size=32, batch_size=4, steps_per_epoch=12)
    dm.num_workers = 2
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.pin_memory
    keys = list(loader.sampler)
    for i, batch in enumerate(loader):
        assert all(value.is_pinned() for value in batch.values())
        expected = collate_windows([loader.dataset[k] for k in keys[4 * i : 4 * i + 4]])
        assert isinstance(expected, dict)
        for key in expected:
            torch.testing.assert_close(batch[key], expected[key], rtol=0, atol=0)
    assert loader.slots is not None
    loader.slots.release_unused()  # the pinned copies hold no slot
    assert (loader.slots.state.numpy() == FREE).all()


def test_slots_fit_in_the_free_shared_memory() -> None:
    nbytes = BatchSlots(LAYOUT, 1, 0).nbytes
    roomy = BatchSlots.for_loader(LAYOUT, num_workers=2, prefetch_factor=2, shm_free=10**9)
    assert len(roomy) == 2 * (2 + 3)  # prefetched batches plus three held, per worker
    tight = BatchSlots.for_loader(LAYOUT, 2, 2, shm_free=2 * nbytes * 2 * 3)  # half: 3 each
    assert len(tight) == 2 * 3
    with pytest.warns(UserWarning, match=r"/dev/shm has 0 MiB free.*--shm-size"):
        none = BatchSlots.for_loader(LAYOUT, 2, 2, shm_free=nbytes)
    assert len(none) == 0 and none.acquire() is None  # every batch in new memory
    assert len(BatchSlots.for_loader(LAYOUT, 0, None, shm_free=0)) == 1 + 3  # no /dev/shm used


def test_spawned_workers_share_the_buffers(fake_region: Manifest) -> None:
    """Spawned workers (macOS and Windows' default) get the buffers through PyTorch's pickling."""
    dm = TileDataModule(fake_region, "chesapeake4", crop_size=32, batch_size=4, steps_per_epoch=6)
    dm.num_workers = 2
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.multiprocessing_context = "spawn"
    keys = list(loader.sampler)
    for i, batch in enumerate(loader):
        expected = collate_windows([loader.dataset[k] for k in keys[4 * i : 4 * i + 4]])
        assert isinstance(expected, dict)
        for key in expected:
            torch.testing.assert_close(batch[key], expected[key], rtol=0, atol=0)
    assert loader.slot_hits == 6 and loader.slot_misses == 0
