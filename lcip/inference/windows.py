"""Sliding-window inference over whole tiles, equal to running the network on the whole tile.

Shared by prediction (:mod:`lcip.inference.predict`) and the learned prior
(:mod:`lcip.priors.learned`): write windows of ``window`` px (a multiple of the 256 px block
size of written rasters, so each write fills whole blocks) tile the grid; the network runs on
each write window grown by a margin of at least half its receptive field and only the write
window is kept, so the stitched output equals whole-tile inference. Beyond the tile's edges
the network sees, by ``edge``, the tile mirrored (``reflect``: whole-tile inference on the
tile padded by reflection, as if the scene went on) or the zero padding of its convolutions
(``zeros``: whole-tile inference on the tile as it is, whose outermost pixels a network
trained on interior crops often gets wrong; see BENCHMARKS.md).

Windows are read through a :class:`torch.utils.data.DataLoader` (``num_workers`` processes
reading ``prefetch_factor`` batches ahead, pinned memory on CUDA), so a GPU does not wait on
disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from rasterio.windows import Window
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from lcip.data.batch_slots import SlotBatch
from lcip.data.datasets import TileWindowDataset, WindowKey, collate_windows
from lcip.errors import ConfigError
from lcip.io.raster import BLOCK_SIZE, Grid
from lcip.losses import log_probs

#: What a network sees beyond a tile's edges (:attr:`WindowConfig.edge`).
EDGES = ("reflect", "zeros")


@dataclass(frozen=True)
class WindowConfig:
    """Sliding-window settings.

    Args:
        window: write window size in pixels, a positive multiple of :data:`BLOCK_SIZE`; the
            network reads it grown by ``margin`` on each side.
        margin: pixels of context read on each side of a write window (None: half the
            receptive field, at least 8).
        batch_size: windows per forward pass.
        smoothing: additive smoothing of the output probabilities.
        device: torch device (``cpu``, ``cuda``, ``cuda:1``, ...).
        num_workers: processes reading windows ahead of the network (DataLoader workers).
        prefetch_factor: batches each worker reads ahead (used when ``num_workers > 0``).
        edge: what the network sees beyond the tile's edges: ``reflect`` (the tile mirrored
            across its edge) or ``zeros`` (its own zero padding).

    Raises:
        ConfigError: for a window that is not a positive multiple of the block size, or
            another setting out of range.
    """

    window: int = 512
    margin: int | None = None
    batch_size: int = 4
    smoothing: float = 1e-4
    device: str = "cpu"
    num_workers: int = 0
    prefetch_factor: int = 2
    edge: str = "reflect"

    def __post_init__(self) -> None:
        check_window(self.window)
        if self.edge not in EDGES:
            raise ConfigError(f"edge {self.edge!r}: use one of {EDGES}")
        if self.margin is not None and self.margin < 0:
            raise ConfigError(f"margin {self.margin}: must be >= 0 (or None)")
        for name, least in (("batch_size", 1), ("num_workers", 0), ("prefetch_factor", 1)):
            if getattr(self, name) < least:
                raise ConfigError(f"{name} {getattr(self, name)}: must be >= {least}")


def check_window(size: int) -> None:
    """Check that a write window is a positive multiple of :data:`BLOCK_SIZE`.

    Raises:
        ConfigError: naming the window and the block size.
    """
    if size <= 0 or size % BLOCK_SIZE:
        raise ConfigError(
            f"window {size}: the write window must be a positive multiple of the "
            f"{BLOCK_SIZE} px block size of written rasters (e.g. {BLOCK_SIZE * 2})"
        )


def receptive_field(model: nn.Module) -> int:
    """Receptive field of a network in pixels (its ``receptive_field`` attribute if it has one).

    Otherwise computed for a stack of stride-1 convolutions: ``1 + sum(kernel - 1)``.
    """
    rf = getattr(model, "receptive_field", None)
    if isinstance(rf, int):
        return rf
    return 1 + sum(int(m.kernel_size[0]) - 1 for m in model.modules() if isinstance(m, nn.Conv2d))


def tile_windows(
    grid: Grid, size: int, margin: int, clip: bool = True
) -> Iterator[tuple[Window, Window]]:
    """(read window, write window) pairs tiling the grid, row by row.

    Write windows of ``size`` x ``size`` px (clipped at the grid's right and bottom edges)
    start at multiples of ``size``, a multiple of :data:`BLOCK_SIZE`, so they cover whole
    blocks of the written rasters. Each read window is its write window grown by ``margin``
    on every side, clipped to the grid (``clip``: at the tile's edges the network sees the
    same zero padding as on the whole tile) or reaching past it (to be filled, e.g. by
    reflection).

    Args:
        grid: the tile's grid.
        size: write window size (a positive multiple of :data:`BLOCK_SIZE`).
        margin: pixels of context on each side.
        clip: clip read windows to the grid.

    Yields:
        (read window, write window).

    Raises:
        ConfigError: if ``size`` is not a positive multiple of the block size.
    """
    check_window(size)
    if margin < 0:
        raise ValueError(f"margin {margin} must be >= 0")
    for r0 in range(0, grid.height, size):
        for c0 in range(0, grid.width, size):
            h, w = min(size, grid.height - r0), min(size, grid.width - c0)
            top, left = r0 - margin, c0 - margin
            bottom, right = r0 + h + margin, c0 + w + margin
            if clip:
                top, left = max(0, top), max(0, left)
                bottom, right = min(grid.height, bottom), min(grid.width, right)
            yield Window(left, top, right - left, bottom - top), Window(c0, r0, w, h)


def _batches(
    windows: list[tuple[Window, Window]], batch_size: int
) -> Iterator[list[tuple[Window, Window]]]:
    """Consecutive windows grouped into batches of equal read-window shape."""
    batch: list[tuple[Window, Window]] = []
    for pair in windows:
        if batch and (len(batch) == batch_size or _shape(batch[0][0]) != _shape(pair[0])):
            yield batch
            batch = []
        batch.append(pair)
    if batch:
        yield batch


def _shape(w: Window) -> tuple[int, int]:
    return int(w.height), int(w.width)


def _offsets(w: Window) -> tuple[int, int]:
    return int(w.row_off), int(w.col_off)


def sliding_window_log_probs(
    model: nn.Module, dataset: TileWindowDataset, tile_index: int, cfg: WindowConfig
) -> Iterator[tuple[Window, torch.Tensor, torch.Tensor]]:
    """Run a network over a tile with overlapping windows.

    Yields, for the write windows of :func:`tile_windows` in order, ``(window, log_q,
    valid)``: the smoothed log-probabilities (C x h x w, float32 on the CPU) of the write
    window and its valid mask (h x w). The stitched result equals running the network on the
    whole tile (padded by reflection with ``cfg.edge="reflect"``).

    Args:
        model: network (logits), in eval mode, on ``cfg.device``.
        dataset: dataset over the tiles.
        tile_index: index of the tile in the dataset's manifest.
        cfg: sliding-window settings.
    """
    grid = dataset.grids[tile_index]
    margin = cfg.margin if cfg.margin is not None else max(8, receptive_field(model) // 2)
    windows = list(tile_windows(grid, cfg.window, margin, clip=cfg.edge == "zeros"))
    keys = [(tile_index, *_offsets(rw), *_shape(rw)) for rw, _ in windows]
    index_batches = []
    start = 0
    for chunk in _batches(windows, cfg.batch_size):
        index_batches.append(list(range(start, start + len(chunk))))
        start += len(chunk)
    device = torch.device(cfg.device)
    loader = DataLoader(
        _Windows(dataset, keys, reflect=cfg.edge == "reflect"),
        batch_sampler=index_batches,
        num_workers=cfg.num_workers,
        prefetch_factor=cfg.prefetch_factor if cfg.num_workers > 0 else None,
        pin_memory=device.type == "cuda",
        collate_fn=collate_windows,
    )
    tile_id = dataset.manifest.tiles[tile_index].tile_id
    done = 0
    for batch in tqdm(loader, desc=tile_id, leave=False):
        valids = batch["valid"]
        with torch.inference_mode():
            image = batch["image"].to(device, non_blocking=True)
            del batch  # the inputs are not kept while the outputs are consumed
            log_qs = log_probs(model(image).float(), "logits", cfg.smoothing).cpu()
            del image
        chunk = windows[done : done + len(log_qs)]
        done += len(log_qs)
        for (rw, ww), valid, log_q in zip(chunk, valids, log_qs, strict=True):
            r0, c0 = int(ww.row_off - rw.row_off), int(ww.col_off - rw.col_off)
            rows, cols = slice(r0, r0 + int(ww.height)), slice(c0, c0 + int(ww.width))
            yield ww, log_q[:, rows, cols], valid[rows, cols]


class _Windows(Dataset[dict[str, torch.Tensor]]):
    """The windows of one tile, by position in a list of keys (mirrored past the tile)."""

    def __init__(self, dataset: TileWindowDataset, keys: list[WindowKey], reflect: bool) -> None:
        self.dataset = dataset
        self.keys = keys
        self.reflect = reflect

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        sample = self.dataset[self.keys[i]]
        if self.reflect:
            reflect_outside(sample["image"].numpy(), self.keys[i], self._shape(i))
        return sample

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor] | SlotBatch:
        """A batch of windows (of one size) read whole."""
        batch = self.dataset.read_windows([self.keys[i] for i in indices])
        if self.reflect:
            assert isinstance(batch, dict)  # no batch slots here
            image = batch["image"].numpy()
            for n, i in enumerate(indices):
                reflect_outside(image[n], self.keys[i], self._shape(i))
        return batch

    def _shape(self, i: int) -> tuple[int, int]:
        return self.dataset.grids[self.keys[i][0]].shape


def reflect_outside(image: npt.NDArray[Any], key: WindowKey, shape: tuple[int, int]) -> None:
    """Fill the part of a window's ``(C, h, w)`` image outside its tile by reflection.

    The pixels inside the tile are mirrored across the tile's edges (``numpy.pad``'s
    ``reflect``: the edge pixel is not repeated), as far as the window reaches.

    Args:
        image: the window's image, changed in place.
        key: the window ``(tile, row, col, height, width)``.
        shape: the tile's ``(height, width)``.
    """
    _, row, col, h, w = key
    rs, cs = max(0, -row), max(0, -col)
    re, ce = min(h, shape[0] - row), min(w, shape[1] - col)
    if (rs, cs, re, ce) == (0, 0, h, w):
        return
    inside = image[:, rs:re, cs:ce].copy()
    widths = ((0, 0), (rs, h - re), (cs, w - ce))
    if min(inside.shape[1:]) > 1:
        image[...] = np.pad(inside, widths, mode="reflect")
    else:  # one row or column inside: nothing to mirror across
        image[...] = np.pad(inside, widths, mode="edge")


__all__ = [
    "EDGES",
    "WindowConfig",
    "check_window",
    "receptive_field",
    "reflect_outside",
    "sliding_window_log_probs",
    "tile_windows",
]
