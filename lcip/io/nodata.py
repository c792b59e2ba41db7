"""Tiles whose imagery holds no data: found cheaply, and reported before training starts.

A tile whose imagery is nodata everywhere (a NAIP scene outside the flight lines, a failed
download written as zeros) adds nothing to training: every crop drawn from it is invalid and
takes no part in the loss. Prediction skips such a tile with a warning; training warns about
it when its data module sets up (:func:`warn_empty_imagery`), naming the tile and its file.

A pixel holds data by the rule prediction and training use (:func:`lcip.io.raster.valid_imagery`:
not NaN, not the raster's nodata value, and not all-zero when the raster declares none and
``zero_is_nodata``). A tile is checked cheaply: a few probe windows, or its overview where it
has one, show valid pixels at once for any ordinary tile; only a tile where they show none is
read whole (strip by strip, stopping at the first valid pixel), so the answer is exact.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rasterio.enums import Resampling
from rasterio.windows import Window

from lcip.io.manifest import Manifest
from lcip.io.raster import BLOCK_SIZE, Grid, open_raster, strip_windows, valid_imagery

log = logging.getLogger(__name__)

#: Side (pixels) of each probe window read first.
PROBE_SIZE = 64

#: Where probe windows are centred, as (row, column) fractions of the tile.
PROBE_CENTRES: tuple[tuple[float, float], ...] = (
    (0.5, 0.5),
    (0.25, 0.25),
    (0.25, 0.75),
    (0.75, 0.25),
    (0.75, 0.75),
)

#: Rows per strip when a tile is read whole.
STRIP_ROWS = 4 * BLOCK_SIZE


def _probes(height: int, width: int) -> Iterator[Window]:
    """The probe windows of a ``height`` x ``width`` raster (clipped to it)."""
    h, w = min(PROBE_SIZE, height), min(PROBE_SIZE, width)
    for fr, fc in PROBE_CENTRES:
        row = min(max(int(fr * height) - h // 2, 0), height - h)
        col = min(max(int(fc * width) - w // 2, 0), width - w)
        yield Window(col, row, w, h)


def _overview_read(src: Any) -> Any | None:
    """The raster at its coarsest overview (nearest), or None when it has no overview."""
    factors = src.overviews(1)
    if not factors:
        return None
    f = max(factors)
    shape = (src.count, math.ceil(src.height / f), math.ceil(src.width / f))
    return src.read(out_shape=shape, resampling=Resampling.nearest)


def has_valid_imagery(path: str | Path, zero_is_nodata: bool = True) -> bool:
    """Whether an imagery raster holds at least one valid pixel (see the module docstring).

    Args:
        path: the imagery raster.
        zero_is_nodata: all-zero pixels are nodata when the raster declares no nodata value
            (as :class:`~lcip.data.datasets.TileWindowDataset` and prediction treat them).

    Returns:
        False when every pixel is nodata.

    Raises:
        DataError: if the file is missing or cannot be read as a raster.
    """
    with open_raster(path) as src:
        nodata = src.nodata

        def any_valid(data: Any) -> bool:
            return bool(valid_imagery(data, nodata, zero_is_nodata).any())

        overview = _overview_read(src)
        if overview is not None and any_valid(overview):
            return True
        if any(any_valid(src.read(window=w)) for w in _probes(src.height, src.width)):
            return True
        grid = Grid(src.crs, src.transform, src.height, src.width)
        return any(any_valid(src.read(window=w)) for w in strip_windows(grid, STRIP_ROWS))


def empty_imagery_tiles(manifest: Manifest, layer: str, zero_is_nodata: bool = True) -> list[str]:
    """The tiles of a manifest whose imagery holds no valid pixel.

    Args:
        manifest: the tiles.
        layer: the imagery layer.
        zero_is_nodata: as :func:`has_valid_imagery`.

    Returns:
        their tile ids, in manifest order.

    Raises:
        ManifestError: if a tile has no such layer.
        DataError: if a file is missing or cannot be read as a raster.
    """
    return [t.tile_id for t in manifest if not has_valid_imagery(t.layer(layer), zero_is_nodata)]


def warn_empty_imagery(manifest: Manifest, layer: str, zero_is_nodata: bool = True) -> list[str]:
    """Warn, one line per tile, about training tiles whose imagery holds no valid pixel.

    Args:
        manifest: the training tiles.
        layer: the imagery layer.
        zero_is_nodata: as :func:`has_valid_imagery`.

    Returns:
        the ids of the tiles warned about.
    """
    empty = empty_imagery_tiles(manifest, layer, zero_is_nodata)
    for tile_id in empty:
        log.warning(
            "tile %s: imagery %s holds no valid pixel (nodata everywhere): its crops take no "
            "part in training; drop the tile from the training splits or re-acquire it",
            tile_id,
            manifest.tile(tile_id).layer(layer),
        )
    return empty


__all__ = [
    "PROBE_CENTRES",
    "PROBE_SIZE",
    "STRIP_ROWS",
    "empty_imagery_tiles",
    "has_valid_imagery",
    "warn_empty_imagery",
]
