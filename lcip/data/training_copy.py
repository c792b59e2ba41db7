"""Training-ready copies of tile layers: uncompressed GeoTIFFs that can be memory-mapped.

Random training crops read a few blocks of every layer of a tile. From the DEFLATE GeoTIFFs the
pipeline writes (256 px blocks), every crop whose blocks are not in GDAL's block cache decodes
up to four blocks per layer: on a region larger than the cache (a state) that decode is the
loader's whole cost, about 10x slower than a cached read (see BENCHMARKS.md). The copies are
uncompressed, striped and band-interleaved, so each band is one contiguous array in the file:
:class:`lcip.data.datasets.TileWindowDataset` slices them through a memory map (no GDAL call, no
decode; the OS page cache holds what fits). They take the layers' raw size on disk (NAIP
uint8 x 4 + prior float32 x C + labels uint8: about 21 bytes per pixel for 4 classes) and are
still ordinary GeoTIFFs (same grid, tags, nodata).

A copy records the source file's fingerprint (:mod:`lcip.io.provenance`) and is reused while
that is unchanged: a stale copy is remade, never read. Writes are atomic, and a process
building copies holds a lock on the copy folder (``<out_dir>/.lock``): when every DDP rank or
SLURM task of a run asks for the same copies, one builds them and the others wait, then find
them up to date.

The training stage makes the copy by default (``data.training_copy``, a folder under
``paths.root``): :func:`bounded_training_copy` says in one line how much disk it takes before
making it, and reads the originals instead, with a one-line warning, when the copy would exceed
``data.training_copy_max_gb`` or the disk's free space (less a margin).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from lcip.io.atomic import atomic_path, file_lock
from lcip.io.manifest import Manifest
from lcip.io.provenance import PROVENANCE_TAG, is_up_to_date, provenance
from lcip.io.raster import Grid

log = logging.getLogger(__name__)

#: Rows written per strip of blocks while copying (bounded memory).
ROWS = 1024

#: Free disk space (bytes) a training copy always leaves on its file system.
FREE_MARGIN = 2 * 2**30

#: Fraction of the free disk space a training copy may take at most.
FREE_FRACTION = 0.5

_LAYOUT = {"layout": "training-mmap"}


def _record(src_path: Path) -> str:
    """The provenance a copy of ``src_path`` records (layout + the source's fingerprint)."""
    return provenance(_LAYOUT, {"source": src_path})


def raw_size(path: Path) -> int:
    """Bytes of a raster's pixels uncompressed (what its training copy takes on disk)."""
    with rasterio.open(path) as src:
        return int(src.width * src.height * sum(np.dtype(d).itemsize for d in src.dtypes))


def copy_layer(src_path: Path, dst_path: Path) -> Path:
    """Copy one raster to the training layout unless an up-to-date copy exists.

    Args:
        src_path: source GeoTIFF.
        dst_path: destination.

    Returns:
        ``dst_path``.
    """
    record = _record(src_path)
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


@dataclass(frozen=True)
class CopyPlan:
    """What a training copy takes: its total size and the part still to be written.

    Args:
        total_bytes: the whole copy (every layer of every tile), uncompressed.
        missing_bytes: the layer files that are missing or stale (to be written now).
        missing_files: how many layer files are missing or stale.
    """

    total_bytes: int
    missing_bytes: int
    missing_files: int


def plan_copy(manifest: Manifest, layers: Sequence[str], out_dir: Path) -> CopyPlan:
    """Size a training copy, checking which of its files are already up to date.

    Args:
        manifest: the tiles.
        layers: the layers to copy.
        out_dir: folder of the copies.

    Returns:
        the plan.
    """
    total = missing = files = 0
    for layer in layers:
        for tile in manifest:
            src = tile.layer(layer)
            size = raw_size(src)
            total += size
            dst = Path(out_dir) / layer / f"{tile.tile_id}.tif"
            if not dst.exists() or not is_up_to_date(dst, _record(src), Grid.of(src), None):
                missing += size
                files += 1
    return CopyPlan(total, missing, files)


def _gb(size: float) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"


def _free_bytes(folder: Path) -> int:
    """Free bytes on the file system of ``folder`` (or of its nearest existing parent)."""
    probe = Path(folder).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return int(shutil.disk_usage(probe).free)


def bounded_training_copy(
    manifest: Manifest,
    layers: Sequence[str],
    out_dir: Path,
    max_gb: float | None = None,
    *,
    free_margin: int = FREE_MARGIN,
) -> Manifest:
    """The training copy (:func:`training_copy`) if it fits its bounds, else the originals.

    Says in one line (INFO) how much disk the copy takes before writing anything. The copy is
    not made, and the originals are read instead (one WARNING line naming the setting), when
    the whole copy would exceed ``max_gb`` or the part still to write would exceed
    :data:`FREE_FRACTION` of the free disk space less :data:`FREE_MARGIN`.

    Args:
        manifest: the tiles.
        layers: the layers to copy.
        out_dir: folder of the copies (``data.training_copy``).
        max_gb: the largest copy allowed, in GB (``data.training_copy_max_gb``); None: no
            bound besides the free disk space.
        free_margin: bytes of free disk space the copy always leaves.

    Returns:
        the manifest reading the copies, or ``manifest`` itself when the copy is not made.
    """
    out_dir = Path(out_dir)
    plan = plan_copy(manifest, layers, out_dir)
    fallback = "reading the original files instead (slower once the region exceeds GDAL's "
    fallback += "block cache; data.training_copy=null reads them without this message)"
    if max_gb is not None and plan.total_bytes > max_gb * 1e9:
        log.warning(
            "data.training_copy: the copy of %d training tiles would take %s, more than "
            "data.training_copy_max_gb=%g; %s",
            len(manifest),
            _gb(plan.total_bytes),
            max_gb,
            fallback,
        )
        return manifest
    if plan.missing_bytes:
        free = _free_bytes(out_dir)
        allowed = max(0.0, FREE_FRACTION * (free - free_margin))
        if plan.missing_bytes > allowed:
            log.warning(
                "data.training_copy: the copy needs %s more in %s, but only %s is free there "
                "(a copy takes at most half of the free space, leaving %s); %s",
                _gb(plan.missing_bytes),
                out_dir,
                _gb(free),
                _gb(free_margin),
                fallback,
            )
            return manifest
        log.info(
            "data.training_copy: writing %d layer files (%s; the whole copy %s, %s free) into "
            "%s once: uncompressed, memory-mapped training reads; reused while the sources "
            "are unchanged",
            plan.missing_files,
            _gb(plan.missing_bytes),
            _gb(plan.total_bytes),
            _gb(free),
            out_dir,
        )
    else:
        log.info("data.training_copy: reading the up-to-date copy in %s", out_dir)
    return training_copy(manifest, layers, out_dir)


__all__ = [
    "FREE_FRACTION",
    "FREE_MARGIN",
    "ROWS",
    "CopyPlan",
    "bounded_training_copy",
    "copy_layer",
    "plan_copy",
    "raw_size",
    "training_copy",
]
