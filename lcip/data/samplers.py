"""Samplers of pixel windows ``(tile, row, col, height, width)`` of a tile window dataset.

Training draws every crop independently: a tile (with probability proportional to its area)
and a uniform position inside it, so each batch mixes crops from many tiles. This matters for
the QR/RQ losses, whose denominator is computed over the batch.

Under DDP every rank draws the same global sequence of crops for an epoch (seeded from the
config seed and the epoch) and keeps every ``world_size``-th crop starting at its rank, so the
ranks' crops of an epoch are disjoint, together they are exactly what one process drawing
``world_size`` times as many crops would use, and each rank's batches still mix many tiles.
Lightning must not wrap these samplers in its own ``DistributedSampler``: the training stage
builds its trainer with ``use_distributed_sampler=False`` (see :mod:`lcip.training.trainer`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
import torch.distributed as dist
from torch.utils.data import Sampler

from lcip.data.datasets import WindowKey


def distributed_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process.

    From ``torch.distributed`` when a process group is initialized, else ``(0, 1)``.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``: the given ones, or :func:`distributed_rank`'s where None.

    Raises:
        ValueError: the rank is outside ``[0, world_size)``.
    """
    auto_rank, auto_world = distributed_rank()
    rank = auto_rank if rank is None else rank
    world_size = auto_world if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    return rank, world_size


class RandomCropSampler(Sampler[WindowKey]):
    """Random crops from many tiles, seeded and reproducible per epoch, sharded by rank.

    Args:
        tile_shapes: (height, width) of each tile.
        size: crop size in pixels (crops lie fully inside their tile).
        length: number of crops per epoch (of this rank).
        seed: base seed; epoch ``e`` uses ``seed + e`` (call :meth:`set_epoch`).
        rank: this process's rank; None: from ``torch.distributed`` (0 without a group).
        world_size: number of ranks; None: from ``torch.distributed`` (1 without a group).

    An epoch's global sequence holds ``length * world_size`` distinct crops (a crop position
    drawn twice in an epoch is replaced by the next fresh draw; only when the tiles hold fewer
    crop positions than that are positions repeated), each a tile drawn with
    probability proportional to its area and a uniform position in it; rank ``k`` takes
    crops ``k, k + world_size, ...``. The sequence depends only on ``seed``, the epoch and
    the total number of crops, so a run resumed from a mid-epoch checkpoint can continue
    exactly where it stopped: :meth:`resume` makes the next pass over that epoch skip the
    crops already used.
    """

    def __init__(
        self,
        tile_shapes: Sequence[tuple[int, int]],
        size: int,
        length: int,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        small = [i for i, (h, w) in enumerate(tile_shapes) if h < size or w < size]
        if small:
            raise ValueError(f"tiles {small} are smaller than the crop size {size}")
        self.rank, self.world_size = resolve_rank(rank, world_size)
        self.tile_shapes = list(tile_shapes)
        self.size = size
        self.length = length
        self.seed = seed
        self.epoch = 0
        self._positions = np.array(
            [(h - size + 1) * (w - size + 1) for h, w in self.tile_shapes], dtype=np.int64
        )
        self.weights = self._positions / self._positions.sum()
        self._resume: tuple[int, int] | None = None
        #: Crops skipped at the start of the current pass (non-zero only when resuming).
        self.offset = 0

    def resume(self, epoch: int, offset: int) -> None:
        """Make the next pass over ``epoch`` start at crop ``offset`` (a resumed run).

        Args:
            epoch: the epoch the checkpoint was taken in.
            offset: crops of that epoch already used (by this rank).
        """
        self._resume = (epoch, offset)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (changes the crops drawn)."""
        self.epoch = epoch

    def epoch_crops(self) -> npt.NDArray[np.int64]:
        """All ranks' crops of the current epoch, ``(length * world_size, 3)``: tile, row, col.

        Distinct crops, in draw order; independent of the rank.
        """
        total = self.length * self.world_size
        rng = np.random.default_rng(self.seed + self.epoch)
        shapes = np.asarray(self.tile_shapes, dtype=np.int64)
        # a crop's flat id: its tile's first id plus its position inside the tile
        first = np.concatenate([[0], np.cumsum(self._positions)[:-1]])
        distinct = total <= int(self._positions.sum())
        ids = np.empty(0, dtype=np.int64)
        while len(ids) < total:
            n = total - len(ids)
            tiles = rng.choice(len(self.tile_shapes), size=n, p=self.weights)
            span = shapes[tiles] - self.size + 1
            rows = (rng.random(n) * span[:, 0]).astype(np.int64)
            cols = (rng.random(n) * span[:, 1]).astype(np.int64)
            ids = np.concatenate([ids, first[tiles] + rows * span[:, 1] + cols])
            if distinct:
                _, keep = np.unique(ids, return_index=True)  # first draw of each, in order
                ids = ids[np.sort(keep)]
        tiles = np.searchsorted(first, ids, side="right") - 1
        within = ids - first[tiles]
        width = shapes[tiles, 1] - self.size + 1
        return np.stack([tiles, within // width, within % width], axis=1)

    def __iter__(self) -> Iterator[WindowKey]:
        self.offset = 0
        if self._resume is not None:
            epoch, offset = self._resume
            self._resume = None
            if epoch == self.epoch:
                self.offset = min(offset, self.length)
        mine = self.epoch_crops()[self.rank :: self.world_size]
        for t, r, c in mine[self.offset :].tolist():
            yield (t, r, c, self.size, self.size)

    def __len__(self) -> int:
        return self.length


class GridCropSampler(Sampler[WindowKey]):
    """Crops on a regular grid covering every tile.

    By default the last row/column of crops is flush with the tile's edge (crops may overlap
    there). With ``partition=True`` the crops do not overlap: the last ones extend past the
    edge (read boundless; those pixels are invalid), so every pixel of a tile is in exactly one
    crop, as validation needs when it sums over a whole tile.

    Args:
        tile_shapes: (height, width) of each tile.
        size: crop size.
        stride: step between crops (``size`` for no overlap).
        partition: non-overlapping crops covering each tile exactly once.
    """

    def __init__(
        self,
        tile_shapes: Sequence[tuple[int, int]],
        size: int,
        stride: int | None = None,
        partition: bool = False,
    ) -> None:
        self.tile_shapes = [tuple(s) for s in tile_shapes]
        self.size = size
        self.keys: list[WindowKey] = []
        step = size if partition else (stride or size)
        for t, (h, w) in enumerate(tile_shapes):
            rows = range(0, h, size) if partition else grid_starts(h, size, step)
            cols = range(0, w, size) if partition else grid_starts(w, size, step)
            self.keys += [(t, r, c, size, size) for r in rows for c in cols]

    def __iter__(self) -> Iterator[WindowKey]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class ShardedBatchSampler(Sampler[list[WindowKey]]):
    """Consecutive batches of a crop grid, this rank's share, the same number on every rank.

    The grid's crops are cut into consecutive batches of ``batch_size`` (the last may be
    short), and rank ``k`` of ``world_size`` takes batches ``k, k + world_size, ...``: every
    batch is one that a single process would see, so per-batch values (a loss with its batch's
    denominator) are the single-process ones and sums over the ranks are the single-process
    sums. A rank left one batch short gets a *padding batch* instead: one crop lying wholly
    past the bottom-right corner of tile 0, whose pixels are all invalid (``valid`` all
    False, ignored labels), so it adds nothing to any sum. Every rank thus runs the same number
    of steps, which DDP needs: it broadcasts module buffers (batch-norm statistics, a running
    denominator) in every forward, also in validation during ``fit``.

    Args:
        grid: the crops.
        batch_size: crops per batch.
        rank: this process's rank; None: from ``torch.distributed`` (0 without a group).
        world_size: number of ranks; None: from ``torch.distributed`` (1 without a group).
    """

    def __init__(
        self,
        grid: GridCropSampler,
        batch_size: int,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size}: must be at least 1")
        self.rank, self.world_size = resolve_rank(rank, world_size)
        keys = grid.keys
        every = [keys[i : i + batch_size] for i in range(0, len(keys), batch_size)]
        mine = every[self.rank :: self.world_size]
        #: Number of padding batches at the end of :attr:`batches` (0 or 1).
        self.padding = -(-len(every) // self.world_size) - len(mine)
        height, width = grid.tile_shapes[0]
        pad: list[WindowKey] = [(0, height, width, grid.size, grid.size)]
        self.batches: list[list[WindowKey]] = mine + [pad] * self.padding

    def __iter__(self) -> Iterator[list[WindowKey]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def grid_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of windows of ``size`` with ``stride`` covering ``[0, length)``.

    The last window is flush with the end; a length shorter than ``size`` gives one window
    at 0 (read boundless).

    Args:
        length: extent to cover.
        size: window size.
        stride: step between windows.

    Returns:
        sorted, unique start offsets.
    """
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    starts.append(length - size)
    return sorted(set(starts))
