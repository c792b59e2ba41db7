"""The 30 m NLCD blocks of a 1 m tile grid: their size, their offset and per-pixel block ids.

NLCD is 30 m data. Read onto a 1 m tile grid (from a 30 m raster, or stored on the tile grid
as the Chesapeake release does) it is piecewise constant on 30 x 30 px blocks whose corner
is anywhere relative to the tile's corner. Label super-resolution
(:class:`lcip.losses.LSRLoss`) and its statistics (:mod:`lcip.priors.cooccurrence`) need those
blocks.

The block size is ``30 m / pixel size`` (NLCD's resolution is fixed). The offset ("phase")
is detected from the map itself: at every row ``y`` count the columns where the class
changes between rows ``y - 1`` and ``y``; folding these counts modulo the block size gives a
peak at the block boundaries' phase (likewise for columns). This is exact on a native 30 m
grid read at 1 m, and still finds the dominant boundary phase where NLCD was reprojected
onto the tile grid (slightly rotated, jagged blocks); there a lattice cell can hold two NLCD
classes, which is why the LSR loss groups pixels by (block, NLCD class). A map without any
class change (one class everywhere) has phase 0, which is as good as any. (On the Chesapeake
release's NLCD, reprojected onto the 1 m UTM grid, the detected lattice cells of the WV sample
patches hold a single NLCD class for 90-96 % of their pixels: the rest form smaller units.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rasterio.windows import Window

from lcip.io.raster import Grid

#: NLCD's resolution in metres.
NLCD_RES_M = 30.0
#: Detection uses at most this many pixels per axis (a window centred on the tile).
DETECT_PX = 2048


def _phase(changes: npt.NDArray[np.int64], period: int) -> int:
    """Phase of the boundary positions ``1..n`` weighted by ``changes`` (argmax of the fold)."""
    if period <= 1 or changes.sum() == 0:
        return 0
    positions = np.arange(1, len(changes) + 1)
    folded = np.bincount(positions % period, weights=changes, minlength=period)
    return int(np.argmax(folded))


@dataclass(frozen=True)
class BlockLayout:
    """A lattice of blocks on a tile grid: ``period`` px blocks starting at ``phase`` (rows, cols).

    Args:
        period: (rows, cols) block size in pixels.
        phase: (rows, cols) offset in 0..period-1 of a block boundary from the tile's corner.
    """

    period: tuple[int, int]
    phase: tuple[int, int]

    @classmethod
    def detect(cls, nlcd: npt.NDArray[Any], grid: Grid) -> BlockLayout:
        """The NLCD block layout of a tile, from its NLCD map on the tile grid.

        Args:
            nlcd: (H, W) NLCD map (codes or indices) on ``grid``; only class changes matter.
            grid: the tile grid (its pixel size gives the block size).

        Returns:
            the layout.
        """
        res_x, res_y = grid.res
        period = (max(1, round(NLCD_RES_M / res_y)), max(1, round(NLCD_RES_M / res_x)))
        h, w = nlcd.shape
        r0, c0 = max(0, (h - DETECT_PX) // 2), max(0, (w - DETECT_PX) // 2)
        sub = nlcd[r0 : r0 + DETECT_PX, c0 : c0 + DETECT_PX]
        rows = (sub[1:] != sub[:-1]).sum(axis=1)
        cols = (sub[:, 1:] != sub[:, :-1]).sum(axis=0)
        phase = (
            (_phase(rows, period[0]) + r0) % period[0],
            (_phase(cols, period[1]) + c0) % period[1],
        )
        return cls(period, phase)

    def ids(self, row: int, col: int, height: int, width: int) -> npt.NDArray[np.int64]:
        """Block ids (0, 1, ... row-major within the window) of a window of the tile.

        Args:
            row: first row of the window (tile pixels; may be negative).
            col: first column.
            height: window height.
            width: window width.

        Returns:
            (height, width) int64 ids; pixels of the same block share an id.
        """
        by = (np.arange(row, row + height) - self.phase[0]) // self.period[0]
        bx = (np.arange(col, col + width) - self.phase[1]) // self.period[1]
        by -= by[0] if height else 0
        bx -= bx[0] if width else 0
        ncols = int(bx[-1]) + 1 if width else 1
        out: npt.NDArray[np.int64] = by[:, None] * ncols + bx[None, :]
        return out


def tile_layout(nlcd_path: str | Path, grid: Grid, encoding: str = "codes") -> BlockLayout:
    """The block layout of a tile, detected on (at most) its central ``DETECT_PX`` square.

    Args:
        nlcd_path: the tile's NLCD raster (any grid; read onto ``grid`` with nearest).
        grid: the tile grid.
        encoding: how the raster stores NLCD (``codes`` or ``index``).

    Returns:
        the layout, in the tile's pixel coordinates.
    """
    from lcip.priors.nlcd import read_nlcd_index

    r0, c0 = max(0, (grid.height - DETECT_PX) // 2), max(0, (grid.width - DETECT_PX) // 2)
    window = Window(c0, r0, min(grid.width, DETECT_PX), min(grid.height, DETECT_PX))
    sub = grid.window(window)
    layout = BlockLayout.detect(read_nlcd_index(nlcd_path, sub, encoding=encoding), sub)
    phase = ((layout.phase[0] + r0) % layout.period[0], (layout.phase[1] + c0) % layout.period[1])
    return BlockLayout(layout.period, phase)


__all__ = ["DETECT_PX", "NLCD_RES_M", "BlockLayout", "tile_layout"]
