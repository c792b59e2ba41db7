"""Published priors: a prior distributed with a data set, converted to lcip's prior format.

The Chesapeake CVPR and EnviroAtlas releases ship the paper's priors as uint8 rasters
(0..255, one band per class in the scheme's order, all bands 0 where there is no prior). The
``published`` recipe reads such a manifest layer (``prior.layer``) on each tile's imagery
grid and writes it as every lcip prior is written (:func:`lcip.priors.build.write_prior`):

.. code-block:: text

    p_l    = value_l / scale                                  (scale: 255 for uint8 files)
    out_l  = (p_l + eps) / sum_k (p_k + eps)                  (eps: prior.smoothing)

on valid pixels, NaN elsewhere. A pixel is invalid where every band is 0, where every band
equals the file's nodata value, or where a band is not finite. Negative values are refused.
No cooccurrence matrix is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lcip.errors import ConfigError, DataError
from lcip.io.manifest import Manifest, Tile
from lcip.io.raster import Grid, check_same_grid, open_raster, read_on_grid
from lcip.priors.build import PriorJob


def published_prior(
    path: Path, grid: Grid, num_classes: int, *, scale: float = 255.0, smoothing: float = 1e-4
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Convert a published prior raster into an lcip prior on a grid.

    Args:
        path: the published prior (one band per class).
        grid: the tile grid (outside the raster: invalid).
        num_classes: the scheme's number of classes; the file must have as many bands.
        scale: the value meaning probability 1 (255 for uint8 files).
        smoothing: additive smoothing ``eps`` before renormalizing.

    Returns:
        (prior, valid): float32 (C, H, W) summing to 1 over classes on valid pixels and 0
        elsewhere; bool (H, W).

    Raises:
        DataError: one line naming the file, for a band count other than ``num_classes``,
            negative values, or a missing or unreadable file.
    """
    with open_raster(path) as src:
        count, nodata = src.count, src.nodata
    if count != num_classes:
        raise DataError(
            f"{path}: published prior has {count} band(s), but the class scheme has "
            f"{num_classes} classes"
        )
    data = read_on_grid(path, grid, fill=0, dtype="float32")
    valid = np.isfinite(data).all(axis=0)
    if nodata is not None and np.isfinite(nodata) and nodata != 0:
        valid &= ~(data == np.float32(nodata)).all(axis=0)
    np.nan_to_num(data, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    valid &= (data != 0).any(axis=0)
    if (data[:, valid] < 0).any():
        raise DataError(f"{path}: published prior has negative values")
    data *= np.float32(1.0 / scale)
    data += np.float32(smoothing)
    total = data.sum(axis=0)
    valid &= total > 0
    np.divide(data, total, out=data, where=valid)
    data *= valid
    return data, valid


@dataclass(frozen=True)
class PublishedPriorJob(PriorJob):
    """Convert a tile's published prior layer (``layer``) into an lcip prior raster."""

    layer: str = "paper_prior"
    scale: float = 255.0
    smoothing: float = 1e-4
    recipe: str = "published"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"prior.scale={self.scale}: must be a positive number")
        if not (math.isfinite(self.smoothing) and self.smoothing >= 0):
            raise ConfigError(f"prior.smoothing={self.smoothing}: must be >= 0")

    def sources(self, tile: Tile) -> list[str]:
        """The published prior file."""
        return [str(tile.layer(self.layer))]

    def inputs(self, tile: Tile) -> dict[str, Path | None]:
        """The imagery (grid) and the published prior files."""
        return {**super().inputs(tile), "published": tile.layer(self.layer)}

    def compute(self, tile: Tile, grid: Grid) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
        """The converted prior of the tile (which must be on the tile's imagery grid).

        Raises:
            GridMismatchError: one line naming the tile and both files, if the published
                prior is not on the imagery's grid (a 1 m prior is never resampled silently).
        """
        assert self.scheme is not None
        layers = {
            self.image_layer: tile.layer(self.image_layer),
            self.layer: tile.layer(self.layer),
        }
        check_same_grid(layers, f"tile {tile.tile_id}")
        return published_prior(
            tile.layer(self.layer),
            grid,
            self.scheme.num_classes,
            scale=self.scale,
            smoothing=self.smoothing,
        )


def check_layer(manifest: Manifest, layer: str) -> None:
    """Check that every tile of a manifest has the published prior layer.

    Raises:
        ConfigError: one line naming ``prior.layer``, the tiles lacking it and the manifest.
    """
    missing = [t.tile_id for t in manifest if layer not in t.layers]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ConfigError(
            f"prior.layer={layer}: {len(missing)} tile(s) of {manifest.path or 'the manifest'} "
            f"have no '{layer}' layer ({shown}; layers: {manifest.layer_names})"
        )


__all__ = ["PublishedPriorJob", "check_layer", "published_prior"]
