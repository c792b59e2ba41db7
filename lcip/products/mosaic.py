"""Seamless mosaics of per-tile rasters: a GDAL VRT over the tiles, and on request one COG.

Prediction tiles live on their own grids, possibly in different UTM zones. A mosaic has one
grid (:func:`mosaic_grid`): one CRS (the one most tiles have, or a given one), the resolution
and pixel alignment of the first tile in that CRS, and the union of the tiles' extents.

- A tile already on that grid (same CRS and resolution, whole-pixel offset) is referenced by
  the VRT as it is.
- Any other tile is warped once (nearest neighbour, so classes stay classes and probabilities
  still sum to one) onto the part of the mosaic grid it covers, as a COG under
  ``warped/<layer>/<tile>.tif``, which the VRT references instead.

The VRT is plain GDAL XML written here (no GDAL Python bindings are needed): one
``ComplexSource`` per tile and band with the tiles' nodata value, so a tile's nodata never
covers another tile's data; where tiles overlap, the first tile of the manifest wins. The
class band carries the scheme's colour table (``ColorInterp`` Palette), so QGIS shows the
classes in their colours; probability bands carry the class names.

:func:`write_mosaic_cog` copies a VRT into one Cloud Optimized GeoTIFF (overviews: mode for
classes, average for probabilities) window by window, through :func:`lcip.io.raster.raster_writer`.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from lcip.classes import IGNORE_INDEX, ClassScheme, colormap
from lcip.errors import ConfigError
from lcip.io.atomic import write_text
from lcip.io.provenance import PROVENANCE_TAG, is_up_to_date
from lcip.io.raster import BLOCK_SIZE, Grid, open_raster, raster_writer
from lcip.products.records import Recorder

#: Size (rows, columns) of the windows rasters are copied in: multiples of BLOCK_SIZE, so that
#: every window writes whole blocks, and small enough that memory stays bounded (a 4-band
#: float32 window is 32 MiB) whatever the width of a mosaic.
CHUNK = (2 * BLOCK_SIZE, 16 * BLOCK_SIZE)

_GDAL_TYPES = {
    "uint8": "Byte",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}


@dataclass(frozen=True)
class LayerKind:
    """How the rasters of one product layer are made: bands, type, nodata, names, colours.

    Args:
        count: number of bands.
        dtype: data type name (``uint8``, ``float32``).
        nodata: nodata value (NaN for probabilities).
        band_names: band descriptions (class names of probability bands).
        colors: colour table of band 1 (index -> RGBA), for class rasters.
    """

    count: int
    dtype: str
    nodata: float
    band_names: tuple[str, ...] = ()
    colors: Mapping[int, tuple[int, int, int, int]] | None = None


def class_kind(scheme: ClassScheme) -> LayerKind:
    """A class raster: one uint8 band, nodata 255, the scheme's colour table."""
    return LayerKind(1, "uint8", IGNORE_INDEX, (), colormap(scheme.colors))


def prob_kind(scheme: ClassScheme) -> LayerKind:
    """A probability raster: one float32 band per class (named), NaN nodata."""
    return LayerKind(scheme.num_classes, "float32", math.nan, tuple(scheme.classes))


def confidence_kind(measure: str) -> LayerKind:
    """A confidence raster: one float32 band named after the measure, NaN nodata."""
    return LayerKind(1, "float32", math.nan, (measure,))


@dataclass(frozen=True)
class Placed:
    """A raster placed in a mosaic: its file, size and destination window on the mosaic grid.

    Args:
        path: the raster file (on the mosaic grid's CRS, resolution and alignment).
        width: its width in pixels.
        height: its height in pixels.
        window: where it lies on the mosaic grid.
    """

    path: Path
    width: int
    height: int
    window: Window


def parse_crs(value: str | CRS, setting: str = "map.crs") -> CRS:
    """A CRS from a user setting (``EPSG:32618``, WKT, PROJ string).

    Raises:
        ConfigError: ``<setting>=<value>: not a CRS (<reason>)``.
    """
    if isinstance(value, CRS):
        return value
    try:
        return CRS.from_user_input(value)
    except CRSError as exc:
        raise ConfigError(f"{setting}={value!r}: not a CRS ({exc})") from None


def majority_crs(grids: Sequence[Grid]) -> CRS:
    """The CRS most grids have (ties: the first seen)."""
    if not grids:
        raise ValueError("majority_crs needs at least one grid")
    counts = Counter(g.crs.to_wkt() for g in grids)
    best = max(counts.values())
    return next(g.crs for g in grids if counts[g.crs.to_wkt()] == best)


def chunk_windows(grid: Grid, chunk: tuple[int, int] = CHUNK) -> Iterator[Window]:
    """Windows of at most ``chunk`` (rows, columns) covering a grid, row by row."""
    rows, cols = chunk
    for row in range(0, grid.height, rows):
        for col in range(0, grid.width, cols):
            yield Window(col, row, min(cols, grid.width - col), min(rows, grid.height - row))


def _bounds_in(grid: Grid, crs: CRS) -> tuple[float, float, float, float]:
    """A grid's bounds in ``crs`` (edges densified, so a reprojected extent is covered)."""
    if grid.crs == crs:
        return grid.bounds
    left, bottom, right, top = transform_bounds(grid.crs, crs, *grid.bounds, densify_pts=51)
    return (left, bottom, right, top)


def _snap_down(value: float, anchor: float, step: float) -> float:
    k = (value - anchor) / step
    n = round(k) if abs(k - round(k)) < 1e-6 else math.floor(k)
    return anchor + n * step


def _snap_up(value: float, anchor: float, step: float) -> float:
    k = (value - anchor) / step
    n = round(k) if abs(k - round(k)) < 1e-6 else math.ceil(k)
    return anchor + n * step


def _grid_over(
    bounds: tuple[float, float, float, float], crs: CRS, res: tuple[float, float], anchor: Any
) -> Grid:
    """The grid of resolution ``res`` aligned on ``anchor`` (x, y) that covers ``bounds``."""
    rx, ry = res
    ax, ay = anchor
    left, bottom, right, top = bounds
    left, right = _snap_down(left, ax, rx), _snap_up(right, ax, rx)
    bottom, top = _snap_down(bottom, ay, ry), _snap_up(top, ay, ry)
    width = max(1, round((right - left) / rx))
    height = max(1, round((top - bottom) / ry))
    return Grid(crs, Affine(rx, 0.0, left, 0.0, -ry, top), height, width)


def mosaic_grid(grids: Sequence[Grid], crs: CRS | None = None) -> Grid:
    """The one grid of a mosaic of tiles.

    Args:
        grids: the tiles' grids, in manifest order.
        crs: the mosaic's CRS (None: :func:`majority_crs`).

    Returns:
        a north-up grid in ``crs`` with the resolution and pixel alignment of the first tile
        in that CRS (if none is: the first tile's resolution, aligned on whole multiples of
        it), covering every tile.
    """
    if not grids:
        raise ValueError("mosaic_grid needs at least one grid")
    crs = crs or majority_crs(grids)
    ref = next((g for g in grids if g.crs == crs and g.transform.b == g.transform.d == 0), None)
    res = ref.res if ref is not None else grids[0].res
    anchor = (ref.transform.c, ref.transform.f) if ref is not None else (0.0, 0.0)
    boxes = np.array([_bounds_in(g, crs) for g in grids])
    union = (boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max())
    return _grid_over(tuple(float(v) for v in union), crs, res, anchor)  # type: ignore[arg-type]


def placement(grid: Grid, tile: Grid) -> Window | None:
    """The window of ``grid`` a tile fills when it is pixel-aligned with it, else None.

    Aligned means: same CRS, no rotation, the same resolution and a whole-pixel offset, with
    the tile inside the grid.
    """
    g, t = grid.transform, tile.transform
    if tile.crs != grid.crs or t.b != 0 or t.d != 0:
        return None
    if not (np.isclose(g.a, t.a, rtol=1e-9) and np.isclose(g.e, t.e, rtol=1e-9)):
        return None
    col, row = (t.c - g.c) / g.a, (t.f - g.f) / g.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    col, row = round(col), round(row)
    if col < 0 or row < 0 or col + tile.width > grid.width or row + tile.height > grid.height:
        return None
    return Window(col, row, tile.width, tile.height)


def warped_grid(grid: Grid, tile: Grid) -> Grid:
    """The part of the mosaic grid that covers a tile (for a tile that must be warped)."""
    anchor = (grid.transform.c, grid.transform.f)
    return _grid_over(_bounds_in(tile, grid.crs), grid.crs, grid.res, anchor)


def grid_params(grid: Grid) -> dict[str, Any]:
    """A grid as provenance parameters (CRS, transform, shape)."""
    return {
        "crs": grid.crs.to_string(),
        "transform": [float(v) for v in tuple(grid.transform)[:6]],
        "shape": [grid.height, grid.width],
    }


def warp_tile(
    src_path: Path, dst: Path, grid: Grid, kind: LayerKind, tags: Mapping[str, str]
) -> Path:
    """Warp a tile raster onto ``grid`` (nearest neighbour) as a COG, window by window.

    Args:
        src_path: the tile raster.
        dst: the COG to write (atomically).
        grid: the target grid.
        kind: the layer's bands, type, nodata, names and colours.
        tags: the COG's tags (its provenance).

    Returns:
        ``dst``.
    """
    with (
        open_raster(src_path) as src,
        WarpedVRT(
            src,
            crs=grid.crs,
            transform=grid.transform,
            width=grid.width,
            height=grid.height,
            resampling=Resampling.nearest,
            src_nodata=kind.nodata,
            nodata=kind.nodata,
        ) as vrt,
        _cog_writer(dst, grid, kind, tags) as out,
    ):
        for window in chunk_windows(grid):
            out.write(vrt.read(window=window).astype(kind.dtype, copy=False), window=window)
    return dst


def _cog_writer(dst: Path, grid: Grid, kind: LayerKind, tags: Mapping[str, str]) -> Any:
    """A COG writer of a product of ``kind`` on ``grid`` (its bands, nodata and colours)."""
    return raster_writer(
        dst,
        grid,
        kind.count,
        kind.dtype,
        nodata=kind.nodata,
        tags=tags,
        band_names=list(kind.band_names) or None,
        colormap=kind.colors,
        cog=True,
    )


def _nodata_text(value: float) -> str:
    return "nan" if math.isnan(value) else repr(int(value) if float(value).is_integer() else value)


def _source_name(vrt_path: Path, source: Path) -> tuple[str, str]:
    """(relativeToVRT flag, file name) of a VRT source: relative when possible."""
    try:
        return "1", os.path.relpath(source.resolve(), vrt_path.resolve().parent)
    except ValueError:  # another drive (Windows)
        return "0", str(source.resolve())


def vrt_xml(
    vrt_path: Path, grid: Grid, kind: LayerKind, sources: Sequence[Placed], tags: Mapping[str, str]
) -> str:
    """The GDAL VRT XML of a mosaic.

    Args:
        vrt_path: where the VRT will be (source paths are written relative to its folder).
        grid: the mosaic grid.
        kind: bands, type, nodata, band names and colour table.
        sources: the placed rasters, in priority order (the first wins where they overlap).
        tags: dataset metadata (e.g. the provenance).

    Returns:
        the XML text.
    """
    root = ET.Element("VRTDataset", rasterXSize=str(grid.width), rasterYSize=str(grid.height))
    ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = grid.crs.to_wkt()
    t = grid.transform
    ET.SubElement(root, "GeoTransform").text = ", ".join(
        repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e)
    )
    metadata = ET.SubElement(root, "Metadata")
    for key, value in tags.items():
        ET.SubElement(metadata, "MDI", key=key).text = value
    dtype = _GDAL_TYPES[kind.dtype]
    nodata = _nodata_text(kind.nodata)
    for band in range(1, kind.count + 1):
        node = ET.SubElement(root, "VRTRasterBand", dataType=dtype, band=str(band))
        if kind.band_names:
            ET.SubElement(node, "Description").text = kind.band_names[band - 1]
        ET.SubElement(node, "NoDataValue").text = nodata
        if kind.colors is not None and band == 1:
            ET.SubElement(node, "ColorInterp").text = "Palette"
            table = ET.SubElement(node, "ColorTable")
            for i in range(256):
                r, g, b, a = kind.colors.get(i, (0, 0, 0, 0))
                ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4=str(a))
        # GDAL draws sources in order, each over the last: the first tile goes last to win.
        for placed in reversed(sources):
            src = ET.SubElement(node, "ComplexSource")
            relative, name = _source_name(vrt_path, placed.path)
            ET.SubElement(src, "SourceFilename", relativeToVRT=relative).text = name
            ET.SubElement(src, "SourceBand").text = str(band)
            ET.SubElement(
                src,
                "SourceProperties",
                RasterXSize=str(placed.width),
                RasterYSize=str(placed.height),
                DataType=dtype,
            )
            ET.SubElement(
                src,
                "SrcRect",
                xOff="0",
                yOff="0",
                xSize=str(placed.width),
                ySize=str(placed.height),
            )
            w = placed.window
            ET.SubElement(
                src,
                "DstRect",
                xOff=str(int(w.col_off)),
                yOff=str(int(w.row_off)),
                xSize=str(int(w.width)),
                ySize=str(int(w.height)),
            )
            ET.SubElement(src, "NODATA").text = nodata
    ET.indent(root, space=" ")
    return ET.tostring(root, encoding="unicode") + "\n"


def write_vrt(
    path: Path, grid: Grid, kind: LayerKind, sources: Sequence[Placed], tags: Mapping[str, str]
) -> Path:
    """Write a mosaic VRT atomically (see :func:`vrt_xml`)."""
    return write_text(path, vrt_xml(path, grid, kind, sources, tags))


def write_mosaic_cog(
    vrt: Path, dst: Path, grid: Grid, kind: LayerKind, tags: Mapping[str, str]
) -> Path:
    """Copy a mosaic VRT into one COG with overviews, window by window (memory stays bounded).

    Args:
        vrt: the mosaic VRT.
        dst: the COG to write (atomically).
        grid: the VRT's grid.
        kind: bands, type, nodata, names and colours.
        tags: the COG's tags (its own provenance).

    Returns:
        ``dst``.
    """
    with (
        open_raster(vrt) as src,
        _cog_writer(dst, grid, kind, tags) as out,
    ):
        for window in chunk_windows(grid):
            out.write(src.read(window=window), window=window)
    return dst


def mosaic_layer(
    name: str,
    tiles: Mapping[str, Path],
    grid: Grid,
    kind: LayerKind,
    out_dir: Path,
    recorder: Recorder,
    *,
    cog: bool = False,
    force: bool = False,
    extra_tags: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """The VRT (and, with ``cog``, the COG) of one layer over all tiles, rebuilt only if stale.

    Args:
        name: the product's name: files ``<out_dir>/<name>.vrt`` and ``<out_dir>/<name>.tif``;
            warped tiles go to ``<out_dir>/warped/<name>/<tile>.tif``.
        tiles: tile id -> raster, in priority order.
        grid: the mosaic grid (:func:`mosaic_grid`).
        kind: bands, type, nodata, names and colours.
        out_dir: the products folder.
        recorder: provenance records (fingerprints cached across products).
        cog: also write the mosaicked COG.
        force: rewrite even what is up to date.
        extra_tags: readable tags added to every file written (e.g. the lcip version).

    Returns:
        ``{"vrt": ...}`` and, with ``cog``, ``{"cog": ...}``.
    """
    placed: list[Placed] = []
    for tile_id, path in tiles.items():
        tile_grid = Grid.of(path)
        window = placement(grid, tile_grid)
        if window is not None:
            placed.append(Placed(Path(path), tile_grid.width, tile_grid.height, window))
            continue
        sub = warped_grid(grid, tile_grid)
        warped = out_dir / "warped" / name / f"{tile_id}.tif"
        record = recorder.record(
            {"product": f"{name} tile warped to the mosaic grid", "grid": grid_params(sub)},
            {"source": Path(path)},
        )
        if force or not is_up_to_date(warped, record, sub, kind.count):
            tags = {**(extra_tags or {}), PROVENANCE_TAG: record, "tile_id": tile_id}
            warp_tile(Path(path), warped, sub, kind, tags)
            recorder.forget(warped)
        window = placement(grid, sub)
        assert window is not None, "a warped tile's grid is a part of the mosaic grid"
        placed.append(Placed(warped, sub.width, sub.height, window))
    vrt = out_dir / f"{name}.vrt"
    record = recorder.record(
        {"product": f"{name} mosaic (VRT)", "grid": grid_params(grid), "tiles": list(tiles)},
        {f"{t}": p.path for t, p in zip(tiles, placed, strict=True)},
    )
    if force or not is_up_to_date(vrt, record, grid, kind.count):
        write_vrt(vrt, grid, kind, placed, {**(extra_tags or {}), PROVENANCE_TAG: record})
        recorder.forget(vrt)
    out = {"vrt": vrt}
    if cog:
        tif = out_dir / f"{name}.tif"
        record = recorder.record({"product": f"{name} mosaic (COG)"}, {"vrt": vrt})
        if force or not is_up_to_date(tif, record, grid, kind.count):
            write_mosaic_cog(vrt, tif, grid, kind, {**(extra_tags or {}), PROVENANCE_TAG: record})
            recorder.forget(tif)
        out["cog"] = tif
    return out


__all__ = [
    "CHUNK",
    "LayerKind",
    "Placed",
    "chunk_windows",
    "class_kind",
    "confidence_kind",
    "grid_params",
    "majority_crs",
    "mosaic_grid",
    "mosaic_layer",
    "parse_crs",
    "placement",
    "prob_kind",
    "vrt_xml",
    "warp_tile",
    "warped_grid",
    "write_mosaic_cog",
    "write_vrt",
]
