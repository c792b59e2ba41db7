"""Training-ready copies of tile layers: uncompressed GeoTIFFs that can be memory-mapped.

Random training crops read a few blocks of every layer of a tile. From the DEFLATE GeoTIFFs the
pipeline writes (256 px blocks), every crop whose blocks are not in GDAL's block cache decodes
up to four blocks per layer: on a region larger than the cache (a state) that decode is the
loader's whole cost, about 10x slower than a cached read (see BENCHMARKS.md). The copies are
uncompressed, striped and band-interleaved, so each band is one contiguous array in the file:
:class:`lcip.datasets.TileWindowDataset` slices them through a memory map (no GDAL call, no
decode; the OS page cache holds what fits). They take the layers' raw size on disk (NAIP
uint8 x 4 + prior float32 x C + labels uint8: about 21 bytes per pixel for 4 classes) and are
still ordinary GeoTIFFs (same grid, tags, nodata).

A copy records the source file's fingerprint (:mod:`lcip.provenance`) and is reused while
that is unchanged. Writes are atomic, and a process building copies holds a lock on the copy
folder (``<out_dir>/.lock``): when every DDP rank or SLURM task of a run asks for the same
copies, one builds them and the others wait, then find them up to date.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import rasterio
from rasterio.windows import Window

from lcip.atomic import atomic_path, file_lock
from lcip.manifest import Manifest
from lcip.provenance import PROVENANCE_TAG, is_up_to_date, provenance
from lcip.raster import Grid

#: Rows written per strip of blocks while copying (bounded memory).
ROWS = 1024


def copy_layer(src_path: Path, dst_path: Path) -> Path:
    """Copy one raster to the training layout unless an up-to-date copy exists.

    Args:
        src_path: source GeoTIFF.
        dst_path: destination.

    Returns:
        ``dst_path``.
    """
    record = provenance({"layout": "training-mmap"}, {"source": src_path})
    with rasterio.open(src_path) as src:
        if is_up_to_date(dst_path, record, Grid.of(src_path), src.count):
            return dst_path
        profile = src.profile
        profile.update(
            driver="GTiff",
            compress=None,
            tiled=False,
            interleave="band",
            BIGTIFF="IF_SAFER",
        )
        for key in ("predictor", "blockxsize", "blockysize"):
            profile.pop(key, None)
        dst_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dst_path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
            dst.update_tags(**{**src.tags(), PROVENANCE_TAG: record})
            for band in range(1, src.count + 1):  # in file order: each band contiguous
                for row in range(0, src.height, ROWS):
                    window = Window(0, row, src.width, min(ROWS, src.height - row))
                    dst.write(src.read(band, window=window), band, window=window)
    return dst_path


def training_copy(manifest: Manifest, layers: Sequence[str], out_dir: Path) -> Manifest:
    """The manifest with ``layers`` replaced by training-layout copies under ``out_dir``.

    Args:
        manifest: the tiles.
        layers: the layers to copy (imagery, prior, labels, extra inputs).
        out_dir: folder of the copies (``<out_dir>/<layer>/<tile_id>.tif``).

    Returns:
        the manifest reading the copies.
    """
    with file_lock(Path(out_dir) / ".lock"):
        for layer in layers:
            paths = {
                t.tile_id: copy_layer(t.layer(layer), Path(out_dir) / layer / f"{t.tile_id}.tif")
                for t in manifest
            }
            manifest = manifest.with_layer(layer, paths)
    return manifest


__all__ = ["ROWS", "copy_layer", "training_copy"]
