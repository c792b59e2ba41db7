"""Samplers of pixel windows ``(tile, row, col, height, width)`` of a tile window dataset.

Training draws every crop independently: a tile (with probability proportional to its area)
and a uniform position inside it, so each batch mixes crops from many tiles. This matters for
the QR/RQ losses, whose denominator is computed over the batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from lcip.datasets import WindowKey


class RandomCropSampler(Sampler[WindowKey]):
    """Random crops from many tiles, seeded and reproducible per epoch.

    Args:
        tile_shapes: (height, width) of each tile.
        size: crop size in pixels (crops lie fully inside their tile).
        length: number of crops per epoch.
        seed: base seed; epoch ``e`` uses ``seed + e`` (call :meth:`set_epoch`).

    The crops of an epoch depend only on ``seed`` and the epoch, so a run resumed from a
    mid-epoch checkpoint can continue exactly where it stopped: :meth:`resume` makes the next
    pass over that epoch skip the crops already used.
    """

    def __init__(
        self, tile_shapes: Sequence[tuple[int, int]], size: int, length: int, seed: int = 0
    ) -> None:
        small = [i for i, (h, w) in enumerate(tile_shapes) if h < size or w < size]
        if small:
            raise ValueError(f"tiles {small} are smaller than the crop size {size}")
        self.tile_shapes = list(tile_shapes)
        self.size = size
        self.length = length
        self.seed = seed
        self.epoch = 0
        areas = np.array(
            [(h - size + 1) * (w - size + 1) for h, w in self.tile_shapes], dtype=np.float64
        )
        self.weights = areas / areas.sum()
        self._resume: tuple[int, int] | None = None
        #: Crops skipped at the start of the current pass (non-zero only when resuming).
        self.offset = 0

    def resume(self, epoch: int, offset: int) -> None:
        """Make the next pass over ``epoch`` start at crop ``offset`` (a resumed run).

        Args:
            epoch: the epoch the checkpoint was taken in.
            offset: crops of that epoch already used.
        """
        self._resume = (epoch, offset)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (changes the crops drawn)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[WindowKey]:
        self.offset = 0
        if self._resume is not None:
            epoch, offset = self._resume
            self._resume = None
            if epoch == self.epoch:
                self.offset = min(offset, self.length)
        rng = np.random.default_rng(self.seed + self.epoch)
        tiles = rng.choice(len(self.tile_shapes), size=self.length, p=self.weights)
        shapes = np.asarray(self.tile_shapes)[tiles]
        rows = (rng.random(self.length) * (shapes[:, 0] - self.size + 1)).astype(int)
        cols = (rng.random(self.length) * (shapes[:, 1] - self.size + 1)).astype(int)
        for t, r, c in list(zip(tiles, rows, cols, strict=True))[self.offset :]:
            yield (int(t), int(r), int(c), self.size, self.size)

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
