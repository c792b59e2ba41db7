"""Datasets: aligned pixel windows of imagery, prior and labels read from per-tile rasters.

Samples are addressed by pixel window, ``(tile index, row, col)``, not by geographic query:
every layer of a tile shares the tile's grid (checked when the dataset is opened), so a
window is a plain windowed read from each layer's file. File handles are opened lazily once
per worker process and kept open.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import torch
from rasterio.windows import Window
from torch import Tensor
from torch.utils.data import Dataset

from lcip.classes import IGNORE_INDEX, ClassScheme
from lcip.errors import DataError
from lcip.manifest import Manifest
from lcip.raster import Grid, check_same_grid, open_raster, valid_imagery

#: A sample key: (tile index, row offset, column offset, height, width).
WindowKey = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class LayerSpec:
    """Which manifest layers a dataset reads.

    Args:
        image: imagery layer (uint8 NAIP, scaled to [0, 1]).
        prior: prior layer (float32, one band per class, NaN = nodata); None to skip.
        label: high-resolution label layer (raw codes mapped with the class scheme); None to skip.
        extra: further layers stacked onto the image as input bands (e.g. vector layers of the
            learned prior, values used as stored).
    """

    image: str = "naip"
    prior: str | None = "prior"
    label: str | None = "lc"
    extra: tuple[str, ...] = ()


class TileWindowDataset(Dataset[dict[str, Tensor]]):
    """Windows of fixed size from the tiles of a manifest.

    Each sample is a dict with ``image`` (float32, bands x h x w, zeros where invalid),
    ``tile`` (int64 scalar: the tile's index in the manifest), and when configured ``prior``
    (float32, C x h x w, zeros where invalid), ``mask`` (bool, h x w) and ``label`` (int64,
    h x w, :data:`IGNORE_INDEX` where unlabelled).

    A pixel is valid (``mask``) when it lies inside the tile, its imagery holds data (see
    :func:`lcip.raster.valid_imagery`: not NaN, not the raster's nodata value, and not all-zero
    when the raster declares no nodata and ``zero_is_nodata``), its extra layers are finite
    and, when a prior is read, its prior is finite. Invalid pixels take no part in losses,
    denominators or metrics.

    Args:
        manifest: the tiles to read.
        layers: which layers to read.
        scheme: class scheme mapping raw label codes to classes.
        image_scale: divisor applied to the imagery (255 for uint8 NAIP, 1 for float inputs
            such as the NLCD prior bands the learned prior takes). NaN imagery is invalid.
        cache: hold each layer of a tile in memory after its first read (per worker process).
            Much faster for small regions (demos, tests); leave off for large ones, where
            windowed reads keep memory flat.
        zero_is_nodata: treat all-zero imagery pixels as nodata when the imagery raster
            declares no nodata value (NAIP fills areas outside flight lines with black).
    """

    def __init__(
        self,
        manifest: Manifest,
        layers: LayerSpec,
        scheme: ClassScheme,
        image_scale: float = 255.0,
        cache: bool = False,
        zero_is_nodata: bool = True,
    ) -> None:
        if len(manifest) == 0:
            raise DataError(f"{manifest.path or 'manifest'}: no tiles selected")
        self.manifest = manifest
        self.layers = layers
        self.scheme = scheme
        self.image_scale = image_scale
        names = [n for n in (layers.image, layers.prior, layers.label, *layers.extra) if n]
        manifest.check_files(names)
        self.grids: list[Grid] = []
        for tile in manifest:
            self.grids.append(
                check_same_grid({n: tile.layer(n) for n in names}, f"tile {tile.tile_id}")
            )
        self.image_nodata: list[float | None] = []
        for tile in manifest:
            with open_raster(tile.layer(layers.image)) as src:
                self.image_nodata.append(src.nodata)
        if layers.prior:
            self._check_prior_bands()
        self.zero_is_nodata = zero_is_nodata
        self.cache = cache
        self._handles: dict[tuple[int, str], Any] = {}
        self._arrays: dict[tuple[int, str], npt.NDArray[Any]] = {}
        self._pid = os.getpid()

    def _check_prior_bands(self) -> None:
        assert self.layers.prior is not None
        for tile in self.manifest:
            with open_raster(tile.layer(self.layers.prior)) as src:
                if src.count != self.scheme.num_classes:
                    raise DataError(
                        f"{tile.layer(self.layers.prior)}: prior has {src.count} bands but class "
                        f"scheme '{self.scheme.name}' has {self.scheme.num_classes} classes"
                    )

    @property
    def tile_shapes(self) -> list[tuple[int, int]]:
        """(height, width) of each tile."""
        return [g.shape for g in self.grids]

    def _src(self, tile_index: int, layer: str) -> Any:
        if os.getpid() != self._pid:  # forked into a worker: do not share handles
            self._handles = {}
            self._arrays = {}
            self._pid = os.getpid()
        key = (tile_index, layer)
        if key not in self._handles:
            self._handles[key] = rasterio.open(self.manifest.tiles[tile_index].layer(layer))
        return self._handles[key]

    def read(
        self, tile_index: int, layer: str, window: Window, fill: float = 0
    ) -> npt.NDArray[Any]:
        """Read a window of one layer of one tile (boundless, ``fill`` outside the tile)."""
        if not self.cache:
            data: npt.NDArray[Any] = self._src(tile_index, layer).read(
                window=window, boundless=True, fill_value=fill
            )
            return data
        key = (tile_index, layer)
        if key not in self._arrays:
            self._arrays[key] = self._src(tile_index, layer).read()
        full = self._arrays[key]
        r0, c0, h, w = (
            int(window.row_off),
            int(window.col_off),
            int(window.height),
            int(window.width),
        )
        H, W = full.shape[1:]
        if r0 >= 0 and c0 >= 0 and r0 + h <= H and c0 + w <= W:
            return full[:, r0 : r0 + h, c0 : c0 + w].copy()
        dtype = np.float32 if (np.isnan(fill) and full.dtype.kind in "iu") else full.dtype
        out = np.full((full.shape[0], h, w), fill, dtype=dtype)
        rs, cs = max(r0, 0), max(c0, 0)
        re, ce = min(r0 + h, H), min(c0 + w, W)
        if re > rs and ce > cs:
            out[:, rs - r0 : re - r0, cs - c0 : ce - c0] = full[:, rs:re, cs:ce]
        return out

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, key: WindowKey) -> dict[str, Tensor]:
        """Read one window ``(tile, row, col, height, width)`` (boundless past the tile edge)."""
        tile_index, row, col, h, w = key
        window = Window(col, row, w, h)
        raw = self.read(tile_index, self.layers.image, window, fill=np.nan)
        valid = self._inside(tile_index, row, col, h, w)
        valid &= valid_imagery(raw, self.image_nodata[tile_index], self.zero_is_nodata)
        image = raw.astype(np.float32)
        image /= self.image_scale
        if self.layers.extra:
            extra = [self.read(tile_index, n, window).astype(np.float32) for n in self.layers.extra]
            image = np.concatenate([image, *extra], axis=0)
        valid &= np.isfinite(image).all(axis=0)
        image[:, ~valid] = 0.0
        sample: dict[str, Tensor] = {
            "image": torch.from_numpy(image),
            "tile": torch.tensor(tile_index, dtype=torch.int64),
        }
        if self.layers.prior:
            prior = self.read(tile_index, self.layers.prior, window, fill=np.nan).astype(np.float32)
            valid &= np.isfinite(prior).all(axis=0)
            prior[:, ~valid] = 0.0
            sample["prior"] = torch.from_numpy(prior)
        if self.layers.label:
            raw_label = self.read(tile_index, self.layers.label, window)[0]
            label = self.scheme.map_labels(raw_label).astype(np.int64)
            sample["label"] = torch.from_numpy(label)
        sample["mask"] = torch.from_numpy(valid)
        return sample

    def _inside(self, tile_index: int, row: int, col: int, h: int, w: int) -> npt.NDArray[np.bool_]:
        """Which pixels of a window lie inside the tile."""
        height, width = self.grids[tile_index].shape
        rows = np.arange(row, row + h)
        cols = np.arange(col, col + w)
        inside: npt.NDArray[np.bool_] = ((rows >= 0) & (rows < height))[:, None] & (
            (cols >= 0) & (cols < width)
        )[None, :]
        return inside


def collate_windows(samples: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Stack window samples into a batch (all windows have the same size)."""
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


__all__ = ["IGNORE_INDEX", "LayerSpec", "TileWindowDataset", "WindowKey", "collate_windows"]
