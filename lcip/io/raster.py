"""Raster I/O shared by every stage: pixel grids, aligned reads and atomic GeoTIFF writes.

A :class:`Grid` is a CRS + affine transform + shape. Every layer of a tile lives on the tile's
grid (the NAIP grid). Sources on other grids (30 m NLCD, a region-wide mosaic, another CRS) are
read onto a tile grid with :func:`read_on_grid`, optionally with a halo of extra pixels.

Written rasters are tiled (256x256), compressed GeoTIFFs (DEFLATE, or ZSTD where asked: see
:data:`COMPRESSIONS`) that appear whole or not at all (written to a temporary file in the same
folder, then renamed; see :mod:`lcip.io.atomic`). With ``cog=True`` they are Cloud Optimized
GeoTIFFs with overviews, written window by window: see :func:`raster_writer`; large rasters
can be written strip by strip while the next strip is computed (:func:`write_row_strips`).
Files are verified when opened (:meth:`Grid.of` reads their last block), so a truncated file is
reported when a stage starts, not hours later.

GDAL's block cache defaults to 5 % of the machine's memory and would grow with the rasters
streamed through it; lcip's readers and writers cap it at :data:`GDAL_CACHE_MB` (see
:func:`streaming_env`) unless ``GDAL_CACHEMAX`` is set in the environment.
"""

from __future__ import annotations

import os
import queue
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from lcip.errors import DataError, GridMismatchError
from lcip.io.atomic import atomic_path, create_temporary

#: Block size of every raster lcip writes.
BLOCK_SIZE = 256

#: GDAL block cache (MiB) while lcip streams rasters (see :func:`streaming_env`).
GDAL_CACHE_MB = 64

#: Compressions of the (non-COG) GeoTIFFs lcip writes (``compress`` of :func:`raster_writer`),
#: as GDAL creation options; both lossless, with a predictor (floating point for float
#: rasters). ``deflate`` (the default) is readable everywhere; ``zstd`` (level 1, GDAL >= 2.3)
#: compresses a float32 prior about 4x faster and decodes it about 2.5x faster, to the same
#: size (``scripts/bench_prior.py``), and is what prior rasters use.
COMPRESSIONS: dict[str, dict[str, Any]] = {
    "deflate": {"compress": "deflate"},
    "zstd": {"compress": "zstd", "zstd_level": 1},
}


def streaming_env() -> rasterio.Env:
    """A rasterio environment whose GDAL block cache is capped at :data:`GDAL_CACHE_MB`.

    Windowed reads and writes then stay within a memory bound whatever the raster size (GDAL's
    default cache is 5 % of the machine's memory). A ``GDAL_CACHEMAX`` set in the environment
    is respected.

    Returns:
        the environment, to be used as a context manager.
    """
    options = {} if "GDAL_CACHEMAX" in os.environ else {"GDAL_CACHEMAX": GDAL_CACHE_MB}
    return rasterio.Env(**options)


@dataclass(frozen=True)
class Grid:
    """A pixel grid: CRS, affine transform and shape (rows, cols).

    Args:
        crs: coordinate reference system.
        transform: affine transform from pixel (col, row) to CRS coordinates.
        height: number of rows.
        width: number of columns.
    """

    crs: CRS
    transform: Affine
    height: int
    width: int

    @classmethod
    def of(cls, path: str | Path) -> Grid:
        """Read the grid of a raster file, checking that the file is whole.

        The last block of every band is read, which catches files truncated by an interrupted
        copy or a full disk when a stage opens its layers (see :func:`check_whole`).

        Args:
            path: raster file.

        Returns:
            the raster's grid.

        Raises:
            DataError: if the file is missing, not a raster, truncated or corrupt.
        """
        with open_raster(path) as src:
            check_whole(src, path)
            return cls(src.crs, src.transform, src.height, src.width)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return (self.height, self.width)

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.width, self.height)
        return (min(left, right), min(bottom, top), max(left, right), max(bottom, top))

    def expand(self, halo: int) -> Grid:
        """The grid grown by ``halo`` pixels on every side (same CRS and resolution).

        Args:
            halo: number of pixels to add on each side.

        Returns:
            the larger grid.
        """
        return Grid(
            self.crs,
            self.transform @ Affine.translation(-halo, -halo),
            self.height + 2 * halo,
            self.width + 2 * halo,
        )

    def window(self, window: Window) -> Grid:
        """The sub-grid covered by a pixel window of this grid.

        Args:
            window: pixel window.

        Returns:
            the sub-grid.
        """
        return Grid(
            self.crs,
            self.transform @ Affine.translation(window.col_off, window.row_off),
            int(window.height),
            int(window.width),
        )

    def same_as(self, other: Grid, tol: float = 1e-6) -> bool:
        """Whether two grids match (CRS, shape, and transform within ``tol`` of a pixel).

        Args:
            other: grid to compare with.
            tol: tolerance as a fraction of the pixel size.

        Returns:
            True when the grids are the same.
        """
        if self.shape != other.shape or self.crs != other.crs:
            return False
        scale = max(self.res)
        return bool(
            np.allclose(
                np.asarray(self.transform)[:6],
                np.asarray(other.transform)[:6],
                rtol=0,
                atol=tol * scale,
            )
        )

    def describe(self) -> str:
        """Short human-readable description used in error messages."""
        left, _, _, top = self.bounds
        return (
            f"{self.crs.to_string() if self.crs else 'no CRS'} {self.width}x{self.height} px "
            f"res {self.res[0]:g} at ({left:.2f}, {top:.2f})"
        )

    def difference(self, other: Grid, tol: float = 1e-6) -> str:
        """How this grid differs from ``other``, in words (for one-line error messages).

        Args:
            other: the grid this one should be on.
            tol: tolerance as a fraction of ``other``'s pixel size (as :meth:`same_as`).

        Returns:
            e.g. ``origin shifted by (3, -2) m`` or ``CRS EPSG:32617, not EPSG:32618``; parts
            joined by ``, ``; ``same grid`` when they match.
        """
        parts: list[str] = []
        if self.crs != other.crs:
            parts.append(f"CRS {_crs_name(self.crs)}, not {_crs_name(other.crs)}")
        mine, theirs = np.asarray(self.transform)[:6], np.asarray(other.transform)[:6]
        atol = tol * max(other.res)
        units = _units(other.crs)
        if not np.allclose(mine[[0, 1, 3, 4]], theirs[[0, 1, 3, 4]], rtol=0, atol=atol):
            parts.append(
                f"pixel size ({self.transform.a:g}, {self.transform.e:g}) {units}, not "
                f"({other.transform.a:g}, {other.transform.e:g})"
            )
        shift = mine[[2, 5]] - theirs[[2, 5]]
        if not parts and not np.allclose(shift, 0, rtol=0, atol=atol):
            parts.append(f"origin shifted by ({shift[0]:.6g}, {shift[1]:.6g}) {units}")
        if self.shape != other.shape:
            parts.append(f"{self.width}x{self.height} px, not {other.width}x{other.height}")
        return ", ".join(parts) or "same grid"


def _crs_name(crs: CRS | None) -> str:
    """A CRS as ``EPSG:<code>`` where it has one (else its WKT's name), or ``no CRS``."""
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else str(crs.to_dict().get("proj") or crs.to_string()[:40])


def _units(crs: CRS | None) -> str:
    """The linear unit of a CRS for messages: ``m`` for metres, else its name."""
    if crs is None:
        return "units"
    unit = str(crs.linear_units or "units")
    return "m" if unit in ("metre", "meter", "m") else unit


@contextmanager
def open_raster(path: str | Path) -> Iterator[Any]:
    """Open a raster for reading, turning a missing or corrupt file into a one-line error.

    Args:
        path: raster file.

    Yields:
        the open rasterio dataset.

    Raises:
        DataError: if the file is missing or cannot be read as a raster.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    try:
        src = rasterio.open(path)
    except RasterioIOError as exc:
        raise DataError(f"{path}: cannot be read as a raster ({exc})") from None
    try:
        yield src
    finally:
        src.close()


def check_whole(src: Any, path: str | Path) -> None:
    """Check that an open raster's last block reads (a truncated file fails there).

    GDAL stores the bottom-right block of the last band last (the COG layout always; GeoTIFFs
    written whole or row by row too), so a file cut short cannot read it.

    Args:
        src: the open rasterio dataset.
        path: its file, for the message.

    Raises:
        DataError: ``<path>: truncated or corrupt raster (<reason>)``.
    """
    try:
        src.read(window=Window(src.width - 1, src.height - 1, 1, 1))
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        raise DataError(f"{path}: truncated or corrupt raster ({reason})") from None


def check_same_grid(paths: Mapping[str, str | Path], context: str = "tile") -> Grid:
    """Check that several rasters share one grid (and that each is whole, see :meth:`Grid.of`).

    Args:
        paths: layer name -> raster file.
        context: what the layers belong to (e.g. the tile id), for the error message.

    Returns:
        the common grid.

    Transforms are compared to within 1e-6 of a pixel (float noise of a reprojection or a
    CSV round trip is no misalignment).

    Raises:
        GridMismatchError: one line naming the first layer whose grid differs from the first
            one's, both files and how they differ (see :meth:`Grid.difference`).
        DataError: if a file is missing, not a raster, truncated or corrupt.
    """
    items = list(paths.items())
    if not items:
        raise ValueError("check_same_grid needs at least one layer")
    ref_name, ref_path = items[0]
    ref = Grid.of(ref_path)
    for name, path in items[1:]:
        grid = Grid.of(path)
        if not grid.same_as(ref):
            raise GridMismatchError(
                f"{path}: layer '{name}' of {context} is on grid {grid.describe()}, not on the "
                f"grid of '{ref_name}' ({ref_path}): {grid.difference(ref)}; re-align it onto "
                f"that grid (e.g. lcip.io.align.align_raster)"
            )
    return ref


def read_on_grid(
    path: str | Path,
    grid: Grid,
    *,
    bands: int | list[int] | None = None,
    resampling: Resampling = Resampling.nearest,
    fill: float | None = None,
    dtype: str | None = None,
) -> npt.NDArray[Any]:
    """Read a raster onto a target grid (reprojecting / resampling if needed).

    When the source already has the grid's CRS and resolution and is pixel-aligned with it,
    this is a plain windowed read (with ``boundless`` filling outside the source); otherwise it
    goes through a :class:`rasterio.vrt.WarpedVRT` with the given resampling.

    Args:
        path: source raster.
        grid: target grid.
        bands: 1-based band index or list of indices; None reads all bands.
        resampling: resampling method when warping (nearest for categorical data).
        fill: value for pixels outside the source; defaults to the source nodata or 0.
        dtype: output dtype; defaults to the source dtype.

    Returns:
        array of shape (bands, height, width), or (height, width) when ``bands`` is an int.
    """
    with open_raster(path) as src:
        return read_src_on_grid(
            src, grid, bands=bands, resampling=resampling, fill=fill, dtype=dtype, name=str(path)
        )


def read_src_on_grid(
    src: Any,
    grid: Grid,
    *,
    bands: int | list[int] | None = None,
    resampling: Resampling = Resampling.nearest,
    fill: float | None = None,
    dtype: str | None = None,
    name: str = "raster",
) -> npt.NDArray[Any]:
    """:func:`read_on_grid` for an already open dataset (e.g. a remote one, opened by GDAL).

    Args:
        src: the open rasterio dataset.
        grid: target grid.
        bands: as :func:`read_on_grid`.
        resampling: as :func:`read_on_grid`.
        fill: as :func:`read_on_grid`.
        dtype: as :func:`read_on_grid`.
        name: the source's name in error messages.

    Returns:
        as :func:`read_on_grid`.
    """
    nodata = src.nodata if fill is None else fill
    fill_value = 0 if nodata is None else nodata
    out_dtype = dtype or src.dtypes[0]
    band_arg: Any = bands if bands is not None else list(range(1, src.count + 1))
    if src.crs is None:
        raise DataError(f"{name}: raster has no CRS")
    aligned = _window_in(Grid(src.crs, src.transform, src.height, src.width), grid)
    if aligned is not None:
        data = src.read(band_arg, window=aligned, boundless=True, fill_value=fill_value)
    else:
        with WarpedVRT(
            src,
            crs=grid.crs,
            transform=grid.transform,
            width=grid.width,
            height=grid.height,
            resampling=resampling,
            nodata=fill_value,
        ) as vrt:
            data = vrt.read(band_arg)
    return data.astype(out_dtype, copy=False)


def _window_in(src: Grid, target: Grid) -> Window | None:
    """The window of ``src`` equal to ``target`` if the grids are pixel-aligned, else None."""
    if src.crs != target.crs:
        return None
    s, t = src.transform, target.transform
    if s.b != 0 or s.d != 0 or t.b != 0 or t.d != 0:
        return None
    if not (np.isclose(s.a, t.a, rtol=1e-9) and np.isclose(s.e, t.e, rtol=1e-9)):
        return None
    col = (t.c - s.c) / s.a
    row = (t.f - s.f) / s.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return Window(round(col), round(row), target.width, target.height)


def _gtiff_profile(
    grid: Grid, count: int, dtype: str, nodata: float | None, compress: str = "deflate"
) -> dict[str, Any]:
    """Creation options of a tiled, compressed GeoTIFF (see :data:`COMPRESSIONS`)."""
    if compress not in COMPRESSIONS:
        raise ValueError(f"compress={compress!r}: use one of {sorted(COMPRESSIONS)}")
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": count,
        "dtype": dtype,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        **COMPRESSIONS[compress],
        "predictor": 3 if np.dtype(dtype).kind == "f" else 2,
        "interleave": "pixel" if count <= 4 else "band",
        "BIGTIFF": "IF_SAFER",
    }
    if grid.width >= BLOCK_SIZE and grid.height >= BLOCK_SIZE:
        profile.update(tiled=True, blockxsize=BLOCK_SIZE, blockysize=BLOCK_SIZE)
    return profile


def _scratch_profile(grid: Grid, count: int, dtype: str, nodata: float | None) -> dict[str, Any]:
    """Creation options of the uncompressed, tiled GeoTIFF a COG is copied from.

    Uncompressed, so that windowed writes land in place whatever their alignment and cost no
    compression twice.
    """
    profile = _gtiff_profile(grid, count, dtype, nodata)
    del profile["predictor"]
    profile.update(compress="none", tiled=True, blockxsize=BLOCK_SIZE, blockysize=BLOCK_SIZE)
    return profile


def _overview_resampling(dtype: str) -> Resampling:
    """Default overview resampling: ``average`` for float rasters, ``mode`` for integer ones.

    Probabilities average meaningfully; class codes do not, their most frequent value does.
    """
    return Resampling.average if np.dtype(dtype).kind == "f" else Resampling.mode


def _cog_options(dtype: str, overview_resampling: Resampling | None = None) -> dict[str, Any]:
    """Creation options of GDAL's COG driver for the rasters lcip writes.

    Args:
        dtype: data type name.
        overview_resampling: resampling of the overviews (None: :func:`_overview_resampling`).

    Returns:
        options for :func:`rasterio.shutil.copy` with ``driver="COG"``: 256 px tiles, DEFLATE
        with a predictor, overviews down to one tile, BigTIFF when needed.
    """
    resampling = overview_resampling or _overview_resampling(dtype)
    return {
        "BLOCKSIZE": BLOCK_SIZE,
        "COMPRESS": "DEFLATE",
        "PREDICTOR": "YES",
        "OVERVIEWS": "AUTO",
        "OVERVIEW_RESAMPLING": resampling.name.upper(),
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "ALL_CPUS",
    }


@contextmanager
def _open_for_writing(
    path: Path,
    profile: Mapping[str, Any],
    tags: Mapping[str, Any] | None,
    band_names: list[str] | None,
    colormap: Mapping[int, tuple[int, int, int, int]] | None,
) -> Iterator[Any]:
    """Open a GeoTIFF for writing with its tags, band descriptions and colour table set."""
    with rasterio.open(path, "w", **profile) as dst:
        if tags:
            dst.update_tags(**{k: str(v) for k, v in tags.items()})
        for i, name in enumerate(band_names or [], start=1):
            dst.set_band_description(i, name)
        if colormap is not None:
            dst.write_colormap(1, dict(colormap))
        yield dst


@contextmanager
def raster_writer(
    path: str | Path,
    grid: Grid,
    count: int,
    dtype: str,
    *,
    nodata: float | None = None,
    tags: Mapping[str, Any] | None = None,
    band_names: list[str] | None = None,
    colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
    cog: bool = False,
    overview_resampling: Resampling | None = None,
    compress: str = "deflate",
) -> Iterator[Any]:
    """Open a tiled, compressed GeoTIFF for (windowed) writing; it appears whole or not at all.

    The file is written under a temporary name in the destination folder (mode
    ``0o666 & ~umask``, see :mod:`lcip.io.atomic`) and renamed into place when the ``with`` block
    exits without error; on error the temporary files are removed and an existing destination
    is left untouched.

    With ``cog=True`` the destination is a Cloud Optimized GeoTIFF (GDAL's COG layout, 256 px
    tiles, overviews): the yielded dataset is an uncompressed tiled scratch GeoTIFF next to the
    destination, written window by window (windows aligned to :data:`BLOCK_SIZE` write whole
    blocks), then copied through GDAL's COG driver. Memory stays bounded by the windows written
    and the GDAL block cache (:func:`streaming_env`), whatever the raster size; the scratch
    file needs the raster's uncompressed size on disk until the copy is done.

    Args:
        path: destination file; parent folders are created.
        grid: the raster's grid.
        count: number of bands.
        dtype: data type name (``uint8``, ``float32``, ...).
        nodata: nodata value to record.
        tags: dataset-level metadata tags (values are converted to strings).
        band_names: band descriptions (e.g. class names).
        colormap: colour table for band 1 (uint8 class rasters), for QGIS.
        cog: write a Cloud Optimized GeoTIFF.
        overview_resampling: resampling of a COG's overviews (None: average for float
            rasters, mode for integer ones).
        compress: compression of a GeoTIFF that is not a COG, a key of
            :data:`COMPRESSIONS` (COGs are DEFLATE-compressed).

    Yields:
        the rasterio dataset open for writing.
    """
    path = Path(path)
    with streaming_env(), atomic_path(path) as tmp:
        if not cog:
            profile = _gtiff_profile(grid, count, dtype, nodata, compress)
            with _open_for_writing(tmp, profile, tags, band_names, colormap) as dst:
                yield dst
            return
        scratch = create_temporary(path, ".scratch.tif")
        try:
            profile = _scratch_profile(grid, count, dtype, nodata)
            with _open_for_writing(scratch, profile, tags, band_names, colormap) as dst:
                yield dst
            rasterio.shutil.copy(
                scratch, tmp, driver="COG", **_cog_options(dtype, overview_resampling)
            )
        finally:
            scratch.unlink(missing_ok=True)


def write_raster(
    path: str | Path,
    data: npt.NDArray[Any],
    grid: Grid,
    *,
    nodata: float | None = None,
    tags: Mapping[str, Any] | None = None,
    band_names: list[str] | None = None,
    colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
    cog: bool = False,
    compress: str = "deflate",
) -> Path:
    """Write a whole array as a tiled, compressed GeoTIFF atomically (see :func:`raster_writer`).

    Args:
        path: destination file; parent folders are created.
        data: array (bands, height, width) or (height, width).
        grid: the grid the data is on; its shape must match the data.
        nodata: nodata value to record.
        tags: dataset-level metadata tags (values are converted to strings).
        band_names: band descriptions (e.g. class names).
        colormap: colour table for band 1 (uint8 class rasters), for QGIS.
        cog: write a Cloud Optimized GeoTIFF (default overview resampling).
        compress: compression of a GeoTIFF that is not a COG (see :data:`COMPRESSIONS`).

    Returns:
        the destination path.
    """
    arr = data[None] if data.ndim == 2 else data
    if arr.shape[1:] != grid.shape:
        raise ValueError(f"{path}: data shape {arr.shape[1:]} does not match grid {grid.shape}")
    with raster_writer(
        path,
        grid,
        arr.shape[0],
        arr.dtype.name,
        nodata=nodata,
        tags=tags,
        band_names=band_names,
        colormap=colormap,
        cog=cog,
        compress=compress,
    ) as dst:
        dst.write(arr)
    return Path(path)


def write_row_strips(
    dst: Any, strips: Iterable[tuple[int, npt.NDArray[Any]]], *, background: bool = True
) -> int:
    """Write full-width strips of rows into an open raster, compressing while the next is made.

    Each item of ``strips`` is ``(first row, (bands, rows, width) array)``. With
    ``background``, a writer thread writes (and GDAL compresses) one strip while the caller's
    iterator computes the next: GDAL releases the GIL while it compresses, so the two overlap on
    two cores. The queue holds one strip, so an iterator that reuses its arrays needs three of
    them (the one being written, the one queued, the one being filled). An error in either
    thread stops both and is raised here.

    Args:
        dst: rasterio dataset open for writing (e.g. from :func:`raster_writer`).
        strips: the strips, top to bottom (strips of whole blocks compress as they are written).
        background: write in a thread (False: write each strip in the calling thread).

    Returns:
        the number of strips written.
    """
    width = dst.width

    def write(row: int, data: npt.NDArray[Any]) -> None:
        dst.write(data, window=Window(0, row, width, data.shape[1]))

    if not background:
        count = 0
        for row, data in strips:
            write(row, data)
            count += 1
        return count
    pending: queue.Queue[tuple[int, npt.NDArray[Any]] | None] = queue.Queue(maxsize=1)
    failed: list[BaseException] = []

    def writer() -> None:
        while (item := pending.get()) is not None:
            if not failed:
                try:
                    write(*item)
                except BaseException as exc:  # re-raised in the calling thread
                    failed.append(exc)

    thread = threading.Thread(target=writer, name="lcip-raster-writer", daemon=True)
    thread.start()
    count = 0
    try:
        for item in strips:
            if failed:
                break
            pending.put(item)
            count += 1
    finally:
        pending.put(None)
        thread.join()
    if failed:
        raise failed[0]
    return count


def strip_windows(grid: Grid, rows: int) -> Iterator[Window]:
    """Full-width strips of ``rows`` rows covering a grid, top to bottom (the last may be short).

    Args:
        grid: the grid.
        rows: rows per strip, a positive multiple of :data:`BLOCK_SIZE` so that strips read
            whole blocks.

    Yields:
        the strips' windows.
    """
    if rows <= 0 or rows % BLOCK_SIZE:
        raise ValueError(f"strip of {rows} rows: must be a positive multiple of {BLOCK_SIZE}")
    for row in range(0, grid.height, rows):
        yield Window(0, row, grid.width, min(rows, grid.height - row))


def is_valid_raster(path: str | Path, grid: Grid | None = None, count: int | None = None) -> bool:
    """Whether a file is a readable raster (on ``grid`` with ``count`` bands, if given).

    Used by idempotent stages to skip outputs that already exist and are whole.

    Args:
        path: raster file.
        grid: expected grid, or None to accept any.
        count: expected band count, or None to accept any.

    Returns:
        True when the file exists, opens and matches.
    """
    path = Path(path)
    if not path.exists():
        return False
    try:
        with warnings.catch_warnings():  # a broken file's missing georeferencing: just False
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
        with src:
            if grid is not None and not Grid(src.crs, src.transform, src.height, src.width).same_as(
                grid
            ):
                return False
            if count is not None and src.count != count:
                return False
            check_whole(src, path)
    except Exception:
        return False
    return True


def valid_imagery(
    data: npt.NDArray[Any], nodata: float | None = None, zero_is_nodata: bool = True
) -> npt.NDArray[np.bool_]:
    """Which pixels of an imagery window hold data.

    A pixel is invalid when any band is NaN, when every band equals the raster's ``nodata``
    value, or, for rasters with no nodata value and ``zero_is_nodata``, when every band is 0
    (NAIP mosaics fill areas outside the flight lines with black).

    Args:
        data: (bands, height, width) imagery, or a batch of it (..., bands, height, width).
        nodata: the raster's nodata value (None if it has none).
        zero_is_nodata: treat all-zero pixels as nodata when ``nodata`` is None.

    Returns:
        bool (..., height, width), True where the pixel holds data.
    """
    valid: npt.NDArray[np.bool_] = (
        ~np.isnan(data).any(axis=-3)
        if data.dtype.kind == "f"
        else (np.ones(data.shape[:-3] + data.shape[-2:], dtype=bool))
    )
    if nodata is not None and not np.isnan(nodata):
        valid &= ~(data == nodata).all(axis=-3)
    elif nodata is None and zero_is_nodata:
        valid &= (data != 0).any(axis=-3)
    return valid
