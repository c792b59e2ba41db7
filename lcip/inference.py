"""Sliding-window inference over whole tiles, equal to running the network on the whole tile.

Shared by prediction (:mod:`lcip.predict`) and the learned prior
(:mod:`lcip.priors.learned`): write windows of ``window`` px (a multiple of the 256 px block
size of written rasters, so each write fills whole blocks) tile the grid; the network runs on
each write window grown by a margin of at least half its receptive field (clipped to the grid,
where it sees the same zero padding as on the whole tile) and only the write window is kept,
so the stitched output equals whole-tile inference.

Windows are read through a :class:`torch.utils.data.DataLoader` (``num_workers`` processes
reading ``prefetch_factor`` batches ahead, pinned memory on CUDA), so a GPU does not wait on
disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from rasterio.windows import Window
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from lcip.batch_slots import SlotBatch
from lcip.datasets import TileWindowDataset, WindowKey, collate_windows
from lcip.errors import ConfigError
from lcip.losses import log_probs
from lcip.raster import BLOCK_SIZE, Grid


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

    def __post_init__(self) -> None:
        check_window(self.window)
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


def tile_windows(grid: Grid, size: int, margin: int) -> Iterator[tuple[Window, Window]]:
    """(read window, write window) pairs tiling the grid, row by row.

    Write windows of ``size`` x ``size`` px (clipped at the grid's right and bottom edges)
    start at multiples of ``size``, a multiple of :data:`BLOCK_SIZE`, so they cover whole
    blocks of the written rasters. Each read window is its write window grown by ``margin``
    on every side and clipped to the grid, so that at the tile's edges the network sees the
    same zero padding as on the whole tile.

    Args:
        grid: the tile's grid.
        size: write window size (a positive multiple of :data:`BLOCK_SIZE`).
        margin: pixels of context on each side.

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
            top, left = max(0, r0 - margin), max(0, c0 - margin)
            bottom, right = min(grid.height, r0 + h + margin), min(grid.width, c0 + w + margin)
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
    whole tile.

    Args:
        model: network (logits), in eval mode, on ``cfg.device``.
        dataset: dataset over the tiles.
        tile_index: index of the tile in the dataset's manifest.
        cfg: sliding-window settings.
    """
    grid = dataset.grids[tile_index]
    margin = cfg.margin if cfg.margin is not None else max(8, receptive_field(model) // 2)
    windows = list(tile_windows(grid, cfg.window, margin))
    keys = [(tile_index, *_offsets(rw), *_shape(rw)) for rw, _ in windows]
    index_batches = []
    start = 0
    for chunk in _batches(windows, cfg.batch_size):
        index_batches.append(list(range(start, start + len(chunk))))
        start += len(chunk)
    device = torch.device(cfg.device)
    loader = DataLoader(
        _Windows(dataset, keys),
        batch_sampler=index_batches,
        num_workers=cfg.num_workers,
        prefetch_factor=cfg.prefetch_factor if cfg.num_workers > 0 else None,
        pin_memory=device.type == "cuda",
        collate_fn=collate_windows,
    )
    tile_id = dataset.manifest.tiles[tile_index].tile_id
    done = 0
    for batch in tqdm(loader, desc=tile_id, leave=False):
        masks = batch["mask"]
        with torch.inference_mode():
            image = batch["image"].to(device, non_blocking=True)
            del batch  # the inputs are not kept while the outputs are consumed
            log_qs = log_probs(model(image).float(), "logits", cfg.smoothing).cpu()
            del image
        chunk = windows[done : done + len(log_qs)]
        done += len(log_qs)
        for (rw, ww), mask, log_q in zip(chunk, masks, log_qs, strict=True):
            r0, c0 = int(ww.row_off - rw.row_off), int(ww.col_off - rw.col_off)
            rows, cols = slice(r0, r0 + int(ww.height)), slice(c0, c0 + int(ww.width))
            yield ww, log_q[:, rows, cols], mask[rows, cols]


class _Windows(Dataset[dict[str, torch.Tensor]]):
    """The windows of one tile, by position in a list of keys."""

    def __init__(self, dataset: TileWindowDataset, keys: list[WindowKey]) -> None:
        self.dataset = dataset
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.dataset[self.keys[i]]

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor] | SlotBatch:
        """A batch of windows (of one size) read whole."""
        return self.dataset.read_windows([self.keys[i] for i in indices])


__all__ = [
    "WindowConfig",
    "check_window",
    "receptive_field",
    "sliding_window_log_probs",
    "tile_windows",
]
