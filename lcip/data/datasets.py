"""Datasets: aligned pixel windows of imagery, prior and labels read from per-tile rasters.

Samples are addressed by pixel window, ``(tile index, row, col)``, not by geographic query:
every layer of a tile shares the tile's grid (checked when the dataset is opened), so a
window is a plain windowed read from each layer's file. File handles are opened lazily once
per worker process and kept open.

The keys of a sample (a batch holds the same, stacked along a leading batch axis; what the
losses, tasks, collapse guard and prediction read):

* ``image``: float32, bands x h x w: the imagery (scaled) with any extra layers stacked on as
  further bands; zeros where invalid.
* ``tile``: int64 scalar, the tile's index in the dataset's manifest.
* ``valid``: bool, h x w: the pixels that take part in losses, denominators and metrics
  (True = valid; see :class:`TileWindowDataset`). Unlike TorchGeo's ``mask``, which is a
  label, this is lcip's nodata mask, hence its own name.
* ``prior`` (when :attr:`LayerSpec.prior` is set): float32, C x h x w, the prior
  probabilities; zeros where invalid.
* ``label`` (when :attr:`LayerSpec.label` is set): int64, h x w, class indices of the class
  scheme, :data:`~lcip.classes.IGNORE_INDEX` where unlabelled.
* ``nlcd`` and ``block`` (when :attr:`LayerSpec.nlcd` is set): int64, h x w, NLCD class
  indices (0..16, 0 = nodata) and the ids of the 30 m NLCD blocks within the window (see
  :meth:`TileWindowDataset.nlcd_blocks`), for label super-resolution.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import torch
from rasterio.windows import Window
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from lcip.classes import IGNORE_INDEX, ClassScheme
from lcip.data.batch_slots import BatchSlots, Layout, SlotBatch, batch_memory, empty_tensor
from lcip.errors import DataError
from lcip.io.manifest import Manifest
from lcip.io.raster import Grid, check_same_grid, open_raster, valid_imagery

#: A sample key: (tile index, row offset, column offset, height, width).
WindowKey = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class LayerSpec:
    """Which manifest layers a dataset (or :class:`~lcip.data.datamodules.TileDataModule`) reads.

    Args:
        image: imagery layer (uint8 NAIP, scaled to [0, 1]).
        prior: prior layer (float32, one band per class, NaN = nodata); None to skip.
        label: high-resolution label layer (raw codes mapped with the class scheme); None to skip.
        extra: further layers stacked onto the image as input bands (e.g. vector layers of the
            learned prior, values used as stored).
        nlcd: NLCD layer (any grid) for label super-resolution: when set, samples carry
            ``nlcd`` and ``block`` (see :meth:`TileWindowDataset.nlcd_blocks`); None to skip.
        nlcd_encoding: how the NLCD layer stores classes (``codes`` or ``index``).
    """

    image: str = "naip"
    prior: str | None = "prior"
    label: str | None = "lc"
    extra: tuple[str, ...] = ()
    nlcd: str | None = None
    nlcd_encoding: str = "codes"

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", tuple(self.extra))  # a list given stays hashable


class TileWindowDataset(Dataset[dict[str, Tensor]]):
    """Windows of fixed size from the tiles of a manifest.

    Each sample is a dict of the keys listed in :mod:`lcip.data.datasets` (``image``,
    ``tile``, ``valid``, and as the layers say ``prior``, ``label``, ``nlcd`` and ``block``).

    A pixel is valid (``valid``) when it lies inside the tile, its imagery holds data (see
    :func:`lcip.io.raster.valid_imagery`: not NaN, not the raster's nodata value, and not all-zero
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
        whole_batches: a loader's worker reads each batch whole (:meth:`read_windows`: no
            per-sample tensors, no collation copy) instead of sample by sample; the loader
            must then collate with :func:`collate_windows`, which passes such batches on.
    """

    def __init__(
        self,
        manifest: Manifest,
        layers: LayerSpec,
        scheme: ClassScheme,
        image_scale: float = 255.0,
        cache: bool = False,
        zero_is_nodata: bool = True,
        whole_batches: bool = False,
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
        self.whole_batches = whole_batches
        self.cache = cache
        self._handles: dict[tuple[int, str], Any] = {}
        #: Per (tile, layer): a memory map or the cached array; None: read through GDAL.
        self._arrays: dict[tuple[int, str], npt.NDArray[Any] | None] = {}
        self._pid = os.getpid()
        #: Reusable shared batch buffers, set by the loader that owns them (see
        #: :meth:`read_windows`); None: every batch gets new memory.
        self.slots: BatchSlots | None = None

    def _check_prior_bands(self) -> None:
        assert self.layers.prior is not None
        for tile in self.manifest:
            with open_raster(tile.layer(self.layers.prior)) as src:
                if src.count != self.scheme.num_classes:
                    raise DataError(
                        f"{tile.layer(self.layers.prior)}: prior has {src.count} bands but class "
                        f"scheme '{self.scheme.name}' has {self.scheme.num_classes} classes"
                    )

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without open files or cached arrays (spawned workers reopen their own)."""
        state = dict(self.__dict__)
        state["_handles"], state["_arrays"] = {}, {}
        state.pop("_scratch_arrays", None)
        return state

    @property
    def tile_shapes(self) -> list[tuple[int, int]]:
        """(height, width) of each tile."""
        return [g.shape for g in self.grids]

    def _src(self, tile_index: int, layer: str) -> Any:
        if os.getpid() != self._pid:  # forked into a worker: do not share handles
            self._handles = {}
            self._arrays = {}
            self.__dict__.pop("_scratch_arrays", None)
            self._pid = os.getpid()
        key = (tile_index, layer)
        if key not in self._handles:
            self._handles[key] = rasterio.open(self.manifest.tiles[tile_index].layer(layer))
        return self._handles[key]

    def read(
        self, tile_index: int, layer: str, window: Window, fill: float = 0
    ) -> npt.NDArray[Any]:
        """Read a window of one layer of one tile (``fill`` outside the tile).

        Returns an array of the layer's dtype, or float32 when ``fill`` is NaN, the layer is
        integer and the window reaches past the tile (see :meth:`read_into`).
        """
        src = self._src(tile_index, layer)
        r0, c0, h, w = _window_box(window)
        dtype = np.dtype(src.dtypes[0])
        inside = r0 >= 0 and c0 >= 0 and r0 + h <= src.height and c0 + w <= src.width
        if np.isnan(fill) and dtype.kind in "iu" and not inside:
            dtype = np.dtype(np.float32)
        out = np.empty((src.count, h, w), dtype=dtype)
        self.read_into(tile_index, layer, window, out, fill)
        return out

    def read_into(
        self,
        tile_index: int,
        layer: str,
        window: Window,
        out: npt.NDArray[Any],
        fill: float = 0,
    ) -> None:
        """Read a window of the first ``out.shape[0]`` bands of a layer into ``out``.

        The part of the window inside the tile is a plain windowed read (or a slice of the
        cached array), cast to ``out``'s dtype; the rest of ``out`` is set to ``fill``.
        Rasterio's ``boundless=True`` reads are not used: each one builds and opens a VRT,
        which bypasses GDAL's block cache and re-decodes every block it touches (about 40x
        slower for training crops; see BENCHMARKS.md). A file whose pixels are one contiguous
        uncompressed array (see :func:`memory_map`, e.g. the training copies of
        :mod:`lcip.data.training_copy`) is sliced through a memory map instead of GDAL.

        Args:
            tile_index: the tile.
            layer: the layer.
            window: the window, which may reach past the tile.
            out: ``(bands, window height, window width)`` destination.
            fill: value outside the tile.
        """
        src = self._src(tile_index, layer)
        r0, c0, h, w = _window_box(window)
        bands = out.shape[0]
        rs, cs = max(r0, 0), max(c0, 0)
        re, ce = min(r0 + h, src.height), min(c0 + w, src.width)
        key = (tile_index, layer)
        if key not in self._arrays:
            self._arrays[key] = memory_map(src)
            if self._arrays[key] is None and self.cache:
                self._arrays[key] = src.read()
        full = self._arrays[key]
        if (rs, cs, re, ce) != (r0, c0, r0 + h, c0 + w):
            out[...] = fill
        if re <= rs or ce <= cs:
            return
        dst = out[:, rs - r0 : re - r0, cs - c0 : ce - c0]
        if full is not None:
            np.copyto(dst, full[:bands, rs:re, cs:ce], casting="unsafe")
        else:
            part = src.read(list(range(1, bands + 1)), window=Window(cs, rs, ce - cs, re - rs))
            np.copyto(dst, part, casting="unsafe")

    def _read_windows_into(
        self,
        keys: Sequence[WindowKey],
        windows: Sequence[Window],
        layer: str,
        out: npt.NDArray[Any],
        fill: float = 0,
    ) -> None:
        """:meth:`read_into` for each window, into ``out[i]`` (``out``: one array per key)."""
        for i, (key, window) in enumerate(zip(keys, windows, strict=True)):
            self.read_into(key[0], layer, window, out[i], fill)

    def _band_count(self, layer: str) -> int:
        counts = self.__dict__.setdefault("_bands", {})
        if layer not in counts:
            found = set()
            for tile in self.manifest:
                with open_raster(tile.layer(layer)) as src:
                    found.add(src.count)
            if len(found) != 1:
                raise DataError(f"layer '{layer}': tiles differ in band count {sorted(found)}")
            counts[layer] = found.pop()
        return int(counts[layer])

    def batch_layout(self, count: int, height: int, width: int) -> Layout:
        """Key -> (dtype, shape) of a batch of ``count`` windows of ``height`` x ``width``."""
        spec = self.layers
        channels = sum(self._band_count(n) for n in (spec.image, *spec.extra))
        plane = (count, height, width)
        layout: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {
            "image": (torch.float32, (count, channels, height, width)),
            "tile": (torch.int64, (count,)),
        }
        if spec.prior:
            layout["prior"] = (torch.float32, (count, self.scheme.num_classes, height, width))
        if spec.label:
            layout["label"] = (torch.int64, plane)
        layout["valid"] = (torch.bool, plane)
        if spec.nlcd:
            layout["nlcd"] = (torch.int64, plane)
            layout["block"] = (torch.int64, plane)
        return layout

    def read_batch(self, keys: Sequence[WindowKey], out: Mapping[str, npt.NDArray[Any]]) -> None:
        """Read windows of one size into the arrays of a batch (see :meth:`batch_layout`).

        This is where a sample's contents are defined (see the class docstring); single
        samples (:meth:`__getitem__`) are batches of one.

        Args:
            keys: the windows ``(tile, row, col, height, width)``, all of one size.
            out: arrays of a batch layout with at least ``len(keys)`` samples; the first
                ``len(keys)`` are written.
        """
        n, (h, w) = len(keys), keys[0][3:]
        if any(k[3:] != (h, w) for k in keys):
            raise ValueError(
                f"windows of different sizes in one batch: {sorted({k[3:] for k in keys})}"
            )
        spec = self.layers
        bands = self._band_count(spec.image)
        image, valid = out["image"][:n], out["valid"][:n]
        windows = [Window(c, r, w, h) for _, r, c, _, _ in keys]
        self._read_windows_into(keys, windows, spec.image, image[:, :bands], fill=np.nan)
        out["tile"][:n] = [k[0] for k in keys]
        nodata = [self.image_nodata[k[0]] for k in keys]
        if len({_nodata_key(v) for v in nodata}) == 1:
            valid[...] = valid_imagery(image[:, :bands], nodata[0], self.zero_is_nodata)
        else:
            for i in range(n):
                valid[i] = valid_imagery(image[i, :bands], nodata[i], self.zero_is_nodata)
        for i, (t, r, c, _, _) in enumerate(keys):
            if not self._window_inside(t, r, c, h, w):
                valid[i] &= self._inside(t, r, c, h, w)
        np.divide(image[:, :bands], self.image_scale, out=image[:, :bands])
        first = bands
        for name in spec.extra:
            last = first + self._band_count(name)
            self._read_windows_into(keys, windows, name, image[:, first:last])
            first = last
        valid &= np.isfinite(image).all(axis=1)
        np.copyto(image, 0.0, where=~valid[:, None])
        if spec.prior:
            prior = out["prior"][:n]
            self._read_windows_into(keys, windows, spec.prior, prior, fill=np.nan)
            valid &= np.isfinite(prior).all(axis=1)
            np.copyto(prior, 0.0, where=~valid[:, None])
        if spec.label:
            raw = self._scratch("label", (n, 1, h, w), np.int32)
            self._read_windows_into(keys, windows, spec.label, raw)
            out["label"][:n] = self.scheme.map_labels(raw[:, 0])
        if spec.nlcd:
            for i, (key, window) in enumerate(zip(keys, windows, strict=True)):
                blocks = self.nlcd_blocks(key[0], window)
                out["nlcd"][i] = blocks["nlcd"].numpy()
                out["block"][i] = blocks["block"].numpy()

    def _scratch(self, name: str, shape: tuple[int, ...], dtype: type) -> npt.NDArray[Any]:
        """A reusable work array of this process (fresh large arrays cost page faults)."""
        buffers = self.__dict__.setdefault("_scratch_arrays", {})
        if (name, shape) not in buffers:
            buffers[(name, shape)] = np.empty(shape, dtype=dtype)
        array: npt.NDArray[Any] = buffers[(name, shape)]
        return array

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, key: WindowKey) -> dict[str, Tensor]:
        """Read one window ``(tile, row, col, height, width)`` (boundless past the tile edge)."""
        layout = self.batch_layout(1, key[3], key[4])
        arrays: dict[str, npt.NDArray[Any]] = {
            k: np.empty(shape, dtype=_NUMPY[dtype]) for k, (dtype, shape) in layout.items()
        }
        self.read_batch([key], arrays)
        return {k: torch.from_numpy(a.reshape(a.shape[1:])) for k, a in arrays.items()}

    def __getitems__(
        self, keys: list[WindowKey]
    ) -> list[dict[str, Tensor]] | dict[str, Tensor] | SlotBatch:
        """What a loader's worker fetches for a batch.

        The samples (PyTorch's contract, for any ``collate_fn``), or with ``whole_batches`` the
        batch read whole (:meth:`read_windows`; collate it with :func:`collate_windows`).
        """
        if not self.whole_batches:  # PyTorch's contract: samples, for any collate_fn
            return [self[key] for key in keys]
        return self.read_windows(keys)

    def read_windows(self, keys: Sequence[WindowKey]) -> dict[str, Tensor] | SlotBatch:
        """Read a batch of windows of one size, as stacking their samples would give it.

        With :attr:`slots` set (by :class:`lcip.data.datamodules.ResumableDataLoader`), the batch
        is written into a free slot of reusable shared memory and only the slot's number is
        returned; otherwise into new tensors (in shared memory inside a loader worker, as
        PyTorch's default collation does, so they are not copied again on their way to the
        main process).
        """
        batch, message = batch_memory(
            self.batch_layout(len(keys), keys[0][3], keys[0][4]), self.slots
        )
        self.read_batch(keys, {k: v.numpy() for k, v in batch.items()})
        return message or batch

    def nlcd_blocks(self, tile_index: int, window: Window) -> dict[str, Tensor]:
        """NLCD indices (``nlcd``, 0..16, 0 = nodata) and 30 m block ids (``block``) of a window.

        Block ids number the NLCD blocks of the tile's lattice (:mod:`lcip.priors.blocks`,
        detected once per tile) that the window overlaps, row-major from 0.
        """
        from lcip.classes import nlcd_to_index
        from lcip.priors.blocks import tile_layout
        from lcip.priors.nlcd import index_to_index, read_nlcd_index

        assert self.layers.nlcd is not None
        path, encoding = (
            self.manifest.tiles[tile_index].layer(self.layers.nlcd),
            self.layers.nlcd_encoding,
        )
        layouts = self.__dict__.setdefault("_layouts", {})  # tile -> (layout, on tile grid)
        if tile_index not in layouts:
            on_grid = Grid.of(path).same_as(self.grids[tile_index])
            layouts[tile_index] = (tile_layout(path, self.grids[tile_index], encoding), on_grid)
        layout, on_grid = layouts[tile_index]
        grid = self.grids[tile_index].window(window)
        if on_grid:  # a windowed (or cached) read, like every other layer
            codes = self.read(tile_index, self.layers.nlcd, window)[0]
            nodata = self._src(tile_index, self.layers.nlcd).nodata
            if nodata is not None and np.isfinite(nodata) and nodata != 0:
                codes = np.where(codes == nodata, 0, codes)
            nlcd = (index_to_index if encoding == "index" else nlcd_to_index)(codes, str(path))
        else:  # e.g. a region-wide 30 m raster: read onto the window's grid
            nlcd = read_nlcd_index(path, grid, encoding=encoding)
        nlcd = nlcd.astype(np.int64)
        row, col, h, w = int(window.row_off), int(window.col_off), grid.height, grid.width
        nlcd[~self._inside(tile_index, row, col, h, w)] = 0
        block = layout.ids(row, col, h, w)
        return {"nlcd": torch.from_numpy(nlcd), "block": torch.from_numpy(block)}

    def _inside(self, tile_index: int, row: int, col: int, h: int, w: int) -> npt.NDArray[np.bool_]:
        """Which pixels of a window lie inside the tile."""
        height, width = self.grids[tile_index].shape
        rows = np.arange(row, row + h)
        cols = np.arange(col, col + w)
        inside: npt.NDArray[np.bool_] = ((rows >= 0) & (rows < height))[:, None] & (
            (cols >= 0) & (cols < width)
        )[None, :]
        return inside

    def _window_inside(self, tile_index: int, row: int, col: int, h: int, w: int) -> bool:
        height, width = self.grids[tile_index].shape
        return row >= 0 and col >= 0 and row + h <= height and col + w <= width


#: NumPy dtype of each torch dtype a batch holds.
_NUMPY: dict[torch.dtype, type] = {
    torch.float32: np.float32,
    torch.int64: np.int64,
    torch.bool: np.bool_,
}


def _window_box(window: Window) -> tuple[int, int, int, int]:
    """Row offset, column offset, height and width of a window, as ints."""
    return int(window.row_off), int(window.col_off), int(window.height), int(window.width)


def _nodata_key(value: float | None) -> object:
    """A hashable stand-in for a nodata value under which NaN equals NaN."""
    return "nan" if value is not None and np.isnan(value) else value


def memory_map(src: Any) -> npt.NDArray[Any] | None:
    """A raster's pixels as a read-only ``(bands, rows, cols)`` memory map, when possible.

    Possible for an uncompressed, striped (not tiled) GeoTIFF whose bands are stored one after
    the other (band interleaved, or one band) in one contiguous run of bytes, as GDAL writes
    such a file in one go. A crop is then a strided copy out of the page cache: no GDAL call,
    no decode.

    Args:
        src: an open rasterio dataset.

    Returns:
        the memory map, or None for any other layout.
    """
    count, height, width = src.count, src.height, src.width
    rows, cols = src.block_shapes[0]
    if src.driver != "GTiff" or src.compression is not None or cols != width:
        return None
    if len(set(src.dtypes)) != 1 or (count > 1 and src.interleaving.name != "band"):
        return None
    dtype = np.dtype(src.dtypes[0])
    strips = -(-height // rows)
    row_bytes = width * dtype.itemsize

    def offset(band: int, strip: int) -> int:
        value = src.get_tag_item(f"BLOCK_OFFSET_0_{strip}", "TIFF", bidx=band)
        return int(value) if value else -1

    start = offset(1, 0)
    last = start + (count - 1) * height * row_bytes + (strips - 1) * rows * row_bytes
    if (
        start <= 0
        or offset(count, strips - 1) != last
        or offset(1, strips - 1) != (start + (strips - 1) * rows * row_bytes)
    ):
        return None
    with open(src.name, "rb") as f:
        order = {b"II": "<", b"MM": ">"}.get(f.read(2))
    if order is None:
        return None
    return np.memmap(
        src.name,
        dtype=dtype.newbyteorder(order),
        mode="r",
        offset=start,
        shape=(count, height, width),
    )


def collate_windows(
    samples: Sequence[dict[str, Tensor]] | dict[str, Tensor] | SlotBatch,
) -> dict[str, Tensor] | SlotBatch:
    """Stack window samples into a batch (all windows have the same size).

    A batch read whole by :meth:`TileWindowDataset.read_windows` (a dict of tensors, or the
    slot it was written into) is returned as it is. A list of samples is stacked with a
    single-threaded ``numpy.stack``: ``torch.stack`` of CPU tensors goes through torch's
    intra-op thread pool, whose barrier waits cost 0.1-0.5 s per batch on a busy machine
    (measured with 2 threads on a shared 2-core VM; see BENCHMARKS.md). In a loader worker the
    batch is stacked straight into shared memory, as PyTorch's default collation does, so it
    is not copied again on its way to the main process.
    """
    if isinstance(samples, (dict, SlotBatch)):
        return samples
    shared = get_worker_info() is not None
    batch: dict[str, Tensor] = {}
    for key, first in samples[0].items():
        out = empty_tensor(first.dtype, (len(samples), *first.shape), shared)
        np.stack([s[key].numpy() for s in samples], out=out.numpy())
        batch[key] = out
    return batch


__all__ = [
    "IGNORE_INDEX",
    "LayerSpec",
    "TileWindowDataset",
    "WindowKey",
    "collate_windows",
    "memory_map",
]
