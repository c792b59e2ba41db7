"""Reusable shared-memory batch buffers between loader workers and the training process.

PyTorch's loader workers put every batch into a fresh shared-memory segment that the main
process maps and unmaps again. For a training batch of 32 crops of 128 px (about 21 MB of
float32 imagery and prior) creating, first touching and freeing that segment costs about 12 ms
per batch on the 2-core VM this project is developed on: an empty loader that does nothing but
hand over such batches tops out near 2600 crops/s with one worker (see BENCHMARKS.md), which
caps any real loader there. Handing over the same, already mapped buffers costs under 1 ms.

:class:`BatchSlots` holds a fixed number of such buffers (slots), made once by the loader in the
main process before its workers start (forked workers inherit them; spawned workers receive
them through PyTorch's shared-memory pickling). Slot ``s`` belongs to worker
``s % num_workers``; a slot's state, kept in a shared array, moves

    FREE --(its worker claims it and writes a batch)--> SENT
    SENT --(the main process turns the message into tensors)--> HELD
    HELD --(no tensor of the main process uses the buffer any longer)--> FREE

so every state change has a single writer. The main process frees a slot only when PyTorch's
use count of the slot's storage is back to the slot table's own reference: a batch, a view
of it, a NumPy array over it or anything else that keeps its memory alive keeps the slot
held, whatever the consumer does with it. A worker that finds none of its slots free (the
consumer is holding many batches) falls back to a fresh buffer, so nothing ever waits and
no held batch is ever overwritten.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.data import get_worker_info

#: Slot states (see the module docstring).
FREE, SENT, HELD = 0, 1, 2

#: Byte alignment of each array inside a slot.
ALIGN = 64

#: A batch layout: key -> (dtype, shape with the batch dimension first).
Layout = Mapping[str, tuple[torch.dtype, tuple[int, ...]]]


@dataclass(frozen=True)
class SlotBatch:
    """What a worker sends for a batch written into a slot of a :class:`BatchSlots`.

    Args:
        owner: :attr:`BatchSlots.key` of the slots (in the process that made them).
        slot: the slot.
        count: samples in the batch.
    """

    owner: int
    slot: int
    count: int

    def resolve(self) -> dict[str, Tensor]:
        """The batch as tensors over its slot (in the process that made the slots)."""
        slots = _OWNERS.get(self.owner)
        if slots is None:
            raise RuntimeError(f"batch slots {self.owner} are not owned by this process")
        return slots.receive(self)

    def pin_memory(self) -> dict[str, Tensor]:
        """The batch copied into pinned memory (its slot is free again once this returns).

        PyTorch's loader calls this in its pin-memory thread when ``pin_memory=True``, so the
        copy runs beside the training loop, as for any other batch.
        """
        return {key: value.pin_memory() for key, value in self.resolve().items()}


#: The slots made by this process, by key (what :meth:`SlotBatch.resolve` looks up).
_OWNERS: weakref.WeakValueDictionary[int, BatchSlots] = weakref.WeakValueDictionary()
_KEYS = itertools.count()


def storage_use_count(storage: torch.UntypedStorage) -> int:
    """How many references (tensors, storages) keep ``storage``'s memory alive in this process.

    PyTorch's own multiprocessing code counts storage references the same way.
    """
    return int(torch._C._storage_Use_Count(StorageWeakRef(storage).cdata))


class BatchSlots:
    """A fixed set of shared-memory buffers, each holding one batch of a fixed layout.

    Args:
        layout: key -> (dtype, shape) of a full batch (batch dimension first).
        slots_per_worker: buffers per worker (in flight plus held by the consumer; see
            :meth:`for_loader`).
        num_workers: loader workers (0: the main process writes the batches itself).
    """

    def __init__(self, layout: Layout, slots_per_worker: int, num_workers: int) -> None:
        self.layout = {k: (dtype, tuple(shape)) for k, (dtype, shape) in layout.items()}
        self.writers = max(num_workers, 1)
        self.offsets, nbytes = _offsets(self.layout)
        self.nbytes = nbytes
        count = slots_per_worker * self.writers
        shared = num_workers > 0
        self.storages = [
            torch.UntypedStorage._new_shared(nbytes) if shared else torch.UntypedStorage(nbytes)
            for _ in range(count)
        ]
        state = torch.zeros(count, dtype=torch.int8)
        self.state = state.share_memory_() if shared else state
        #: Identifies these slots in the messages of their workers.
        self.key = next(_KEYS)
        _OWNERS[self.key] = self

    @classmethod
    def for_loader(
        cls,
        layout: Layout,
        num_workers: int,
        prefetch_factor: int | None,
        shm_free: int | None = None,
    ) -> BatchSlots:
        """Slots for a loader: each worker's prefetched batches plus three held downstream.

        The consumer holds the batch it trains on and the one Lightning fetches ahead; a third
        covers the batch being turned into tensors. With workers, the slots live in
        ``/dev/shm``: they take at most half of its free space (a container's is often 64 MB),
        fewer per worker if need be, none (batches in new memory, as PyTorch does, with a
        warning) when not even one per worker fits.

        Args:
            layout: a full batch's arrays.
            num_workers: loader workers.
            prefetch_factor: batches each worker fetches ahead.
            shm_free: free bytes of ``/dev/shm`` (None: looked up).
        """
        per_worker = ((prefetch_factor or 2) if num_workers > 0 else 1) + 3
        if num_workers > 0:
            free = shared_memory_free() if shm_free is None else shm_free
            if free is not None:
                nbytes = _offsets(layout)[1]
                fits = free // 2 // (nbytes * num_workers)
                if fits < 1:
                    warnings.warn(
                        f"/dev/shm has {free / 2**20:.0f} MiB free, too little for reused "
                        f"batch buffers ({nbytes / 2**20:.1f} MiB each): batches are handed "
                        "over in new shared memory; give it more room (e.g. docker run "
                        "--shm-size=1g)",
                        stacklevel=2,
                    )
                per_worker = min(per_worker, int(fits))
        return cls(layout, per_worker, num_workers)

    def __len__(self) -> int:
        return len(self.storages)

    def views(self, slot: int, count: int | None = None) -> dict[str, Tensor]:
        """New tensors over slot ``slot`` (the first ``count`` samples of each array)."""
        storage = self.storages[slot]
        out: dict[str, Tensor] = {}
        for key, (dtype, shape) in self.layout.items():
            n = shape[0] if count is None else count
            view = torch.empty(0, dtype=dtype).set_(
                storage,
                self.offsets[key] // dtype.itemsize,
                (n, *shape[1:]),
                _contiguous_strides(shape),
            )
            out[key] = view
        return out

    def acquire(self) -> int | None:
        """Claim a free slot of the calling worker (None when all of them are in use).

        The worker writes its batch into :meth:`views` of the slot, then sends
        ``SlotBatch(slots.key, slot, count)``.
        """
        info = get_worker_info()
        worker, writers = (info.id, info.num_workers) if info is not None else (0, 1)
        if writers != self.writers:
            return None
        state = self.state.numpy()
        for slot in range(worker, len(self), writers):
            if state[slot] == FREE:
                state[slot] = SENT
                return slot
        return None

    def receive(self, message: SlotBatch) -> dict[str, Tensor]:
        """The batch a worker wrote into ``message.slot`` (main process), as tensors over it."""
        batch = self.views(message.slot, message.count)  # in use before it is marked held
        self.state.numpy()[message.slot] = HELD
        return batch

    def release_unused(self) -> None:
        """Free every held slot whose buffer no tensor of this process uses any longer."""
        state = self.state.numpy()
        for slot, storage in enumerate(self.storages):
            if state[slot] == HELD and storage_use_count(storage) == 1:
                state[slot] = FREE


def empty_tensor(dtype: torch.dtype, shape: tuple[int, ...], shared: bool) -> Tensor:
    """An uninitialized tensor, in shared memory when ``shared``."""
    if not shared:
        return torch.empty(shape, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage).view(shape)


def batch_memory(
    layout: Layout, slots: BatchSlots | None
) -> tuple[dict[str, Tensor], SlotBatch | None]:
    """Tensors to write a batch of ``layout`` into, and the message that hands it over.

    A free slot of ``slots`` when the batch fits one and the calling worker has one free (the
    message then names the slot: send it instead of the tensors); otherwise new tensors, in
    shared memory inside a loader worker as PyTorch's collation makes them, and no message.

    Args:
        layout: the batch's arrays (batch dimension first).
        slots: the loader's slots, or None.
    """
    count = next(iter(layout.values()))[1][0]
    if slots is not None and _fits(layout, slots.layout):
        slot = slots.acquire()
        if slot is not None:
            return slots.views(slot, count), SlotBatch(slots.key, slot, count)
    shared = get_worker_info() is not None
    return {k: empty_tensor(dtype, shape, shared) for k, (dtype, shape) in layout.items()}, None


def shared_memory_free(path: str = "/dev/shm") -> int | None:
    """Free bytes of the shared-memory file system (None where there is none)."""
    try:
        stat = os.statvfs(path)
    except (OSError, AttributeError):  # no /dev/shm, or no statvfs (Windows)
        return None
    return stat.f_bavail * stat.f_frsize


def _offsets(layout: Layout) -> tuple[dict[str, int], int]:
    """Byte offset of each array of a batch layout in a slot, and the slot's size."""
    offsets: dict[str, int] = {}
    nbytes = 0
    for key, (dtype, shape) in layout.items():
        offsets[key] = nbytes
        nbytes += -(-math.prod(shape) * dtype.itemsize // ALIGN) * ALIGN
    return offsets, nbytes


def _fits(layout: Layout, slot: Layout) -> bool:
    """Whether a batch of ``layout`` fits a slot of layout ``slot`` (same arrays, room)."""
    if layout.keys() != slot.keys():
        return False
    for key, (dtype, shape) in layout.items():
        slot_dtype, slot_shape = slot[key]
        if dtype != slot_dtype or shape[1:] != slot_shape[1:] or shape[0] > slot_shape[0]:
            return False
    return True


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides = []
    step = 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


__all__ = [
    "FREE",
    "HELD",
    "SENT",
    "BatchSlots",
    "Layout",
    "SlotBatch",
    "batch_memory",
    "empty_tensor",
    "shared_memory_free",
    "storage_use_count",
]
