"""Class areas (hectares and percent) per tile, for the whole area and per zone polygon.

Areas are computed on each tile's own class raster, in the tile's own CRS (a UTM zone, where
a pixel is a true square of ground), with exactextract's exact fractional coverage: a pixel
cut by a zone boundary counts for the fraction of it inside the polygon. Zones are reprojected
to each tile's CRS; a zone spanning several tiles sums its parts.

Where tiles overlap, the overlap belongs to the first tile of the manifest (as in the mosaic,
:mod:`lcip.products.mosaic`): each tile counts only its *own footprint*, so the whole area's
class areas sum to the mapped area, with nothing counted twice.

Areas count *valid* (mapped) pixels only; ``pct`` columns are percent of the mapped area of the
tile, the whole area or the zone, so a row's classes sum to 100.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import rasterio
from rasterio.crs import CRS
from shapely import make_valid, segmentize
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from lcip.classes import ClassScheme
from lcip.errors import ConfigError, DataError
from lcip.io.atomic import create_temporary, write_text
from lcip.io.raster import Grid

#: Square metres per hectare.
M2_PER_HA = 10_000.0

_ROW = "_lcip_row"


def slug(name: str) -> str:
    """A class name as a column name: ``tree canopy`` -> ``tree_canopy``."""
    return re.sub(r"\W+", "_", name).strip("_").lower() or "class"


def pixel_area_m2(grid: Grid) -> float:
    """The ground area of one pixel of a grid in a projected CRS, in square metres.

    Raises:
        DataError: for a geographic CRS (pixels are not of one area).
    """
    if not grid.crs.is_projected:
        raise DataError(f"class areas need a projected CRS, got {grid.crs.to_string()}")
    _, factor = grid.crs.linear_units_factor
    t = grid.transform
    return float(abs(t.a * t.e - t.b * t.d) * factor**2)


def own_footprints(grids: Mapping[str, Grid]) -> dict[str, BaseGeometry]:
    """Each tile's own footprint, in its own CRS: its extent less that of the tiles before it.

    Args:
        grids: tile id -> grid, in manifest order.

    Returns:
        tile id -> polygon (the tile's whole extent where it overlaps no earlier tile).
    """
    if not grids:
        return {}
    common = next(iter(grids.values())).crs
    out: dict[str, BaseGeometry] = {}
    taken: BaseGeometry | None = None
    for tile_id, grid in grids.items():
        extent = box(*grid.bounds)
        in_common = _to_crs(extent, grid.crs, common)
        if taken is not None and in_common.intersection(taken).area > 0:
            own = _to_crs(in_common.difference(taken), common, grid.crs).intersection(extent)
        else:
            own = extent
        out[tile_id] = own
        taken = in_common if taken is None else unary_union([taken, in_common])
    return out


def _to_crs(geom: BaseGeometry, src: CRS, dst: CRS) -> BaseGeometry:
    """A geometry in another CRS (edges densified first, so they bend as they should)."""
    if src == dst:
        return geom
    step = max(geom.length / 400, 1e-9) if geom.length else 1.0
    series = gpd.GeoSeries([segmentize(geom, step)], crs=src).to_crs(dst)
    return make_valid(series.iloc[0])


def class_areas(
    raster: Path, zones: Sequence[BaseGeometry | None], num_classes: int
) -> npt.NDArray[np.float64]:
    """Class areas of a class raster within polygons, by exact fractional pixel coverage.

    Args:
        raster: a class raster (uint8 class indices, nodata 255) in a projected CRS.
        zones: polygons in the raster's CRS (None or empty: no area).
        num_classes: the scheme's number of classes.

    Returns:
        square metres, shape (len(zones), num_classes).

    Raises:
        DataError: if the raster holds a value that is neither a class nor nodata.
    """
    from exactextract import exact_extract
    from exactextract.raster import RasterioRasterSource

    out = np.zeros((len(zones), num_classes), dtype=np.float64)
    keep = [i for i, z in enumerate(zones) if z is not None and not z.is_empty and z.area > 0]
    if not keep:
        return out
    grid = Grid.of(raster)
    frame = gpd.GeoDataFrame(
        {_ROW: np.asarray(keep, dtype=np.int64)}, geometry=[zones[i] for i in keep], crs=grid.crs
    )
    px = pixel_area_m2(grid)
    with rasterio.open(raster) as src:
        stats = exact_extract(
            RasterioRasterSource(src),
            frame,
            ["unique", "frac", "count"],
            include_cols=[_ROW],
            output="pandas",
        )
    for row, values, fracs, count in zip(
        stats[_ROW], stats["unique"], stats["frac"], stats["count"], strict=True
    ):
        for value, frac in zip(np.asarray(values), np.asarray(fracs), strict=True):
            if not 0 <= int(value) < num_classes:
                raise DataError(
                    f"{raster}: value {int(value)} is neither a class (0..{num_classes - 1}) "
                    "nor nodata"
                )
            out[int(row), int(value)] += float(count) * float(frac) * px
    return out


def areas_table(
    index: tuple[str, Sequence[str]], areas_m2: npt.NDArray[np.float64], scheme: ClassScheme
) -> pd.DataFrame:
    """A wide area table: the index column, ``mapped_ha``, ``<class>_ha``, ``<class>_pct``.

    Args:
        index: (column name, values), one value per row.
        areas_m2: square metres, (rows, classes).
        scheme: the class scheme (column names).

    Returns:
        the table (hectares to 6 decimals, percent to 4; percent empty where nothing is
        mapped).
    """
    name, values = index
    mapped = areas_m2.sum(axis=1)
    table: dict[str, object] = {name: list(values), "mapped_ha": (mapped / M2_PER_HA).round(6)}
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.where(mapped[:, None] > 0, 100 * areas_m2 / mapped[:, None], np.nan)
    for c, cls in enumerate(scheme.classes):
        table[f"{slug(cls)}_ha"] = (areas_m2[:, c] / M2_PER_HA).round(6)
    for c, cls in enumerate(scheme.classes):
        table[f"{slug(cls)}_pct"] = pct[:, c].round(4)
    return pd.DataFrame(table)


def total_table(areas_m2: npt.NDArray[np.float64], scheme: ClassScheme) -> pd.DataFrame:
    """The whole area's table: one row per class (``class``, ``ha``, ``pct``) and ``all``."""
    per_class = areas_m2.sum(axis=0)
    mapped = per_class.sum()
    pct = 100 * per_class / mapped if mapped > 0 else np.full_like(per_class, np.nan)
    return pd.DataFrame(
        {
            "class": [*scheme.classes, "all"],
            "ha": np.append(per_class, mapped) / M2_PER_HA,
            "pct": np.append(pct, 100.0 if mapped > 0 else np.nan),
        }
    ).round({"ha": 6, "pct": 4})


def read_zones(path: Path, id_field: str | None) -> gpd.GeoDataFrame:
    """Read a zones layer (any vector format GDAL reads) and check its id field.

    Raises:
        ConfigError: no ``map.zones_id`` given, or the field is not in the layer.
        DataError: the file is missing or unreadable, has no CRS or no polygon.
    """
    path = Path(path)
    if not id_field:
        raise ConfigError(f"map.zones={path}: set map.zones_id to the field naming each zone")
    if not path.exists():
        raise DataError(f"{path}: zones file does not exist (map.zones)")
    try:
        zones = gpd.read_file(path)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot be read as a vector layer ({reason})") from None
    if id_field not in zones.columns:
        fields = [c for c in zones.columns if c != zones.geometry.name]
        raise ConfigError(f"map.zones_id={id_field!r}: no such field in {path} (fields: {fields})")
    if zones.crs is None:
        raise DataError(f"{path}: zones layer has no CRS")
    polygons = zones.geometry.geom_type.isin(["Polygon", "MultiPolygon"])
    if not polygons.any():
        raise DataError(f"{path}: zones layer has no polygon")
    zones = zones[polygons].reset_index(drop=True)
    zones[zones.geometry.name] = zones.geometry.make_valid()
    return zones


@dataclass(frozen=True)
class Areas:
    """Class areas of a map, in square metres.

    Args:
        tiles: (tiles, classes), each tile's own footprint.
        zones: (zones, classes), or None without zones.
        footprints: tile id -> own footprint polygon, in the tile's CRS.
        crs: tile id -> the tile's CRS.
    """

    tiles: npt.NDArray[np.float64]
    zones: npt.NDArray[np.float64] | None
    footprints: Mapping[str, BaseGeometry]
    crs: Mapping[str, CRS]


def compute_areas(
    class_tiles: Mapping[str, Path], num_classes: int, zones: gpd.GeoDataFrame | None = None
) -> Areas:
    """Class areas per tile (own footprint) and per zone, summed over tiles.

    Args:
        class_tiles: tile id -> class raster, in manifest order.
        num_classes: number of classes.
        zones: zone polygons (any CRS), or None.

    Returns:
        the areas.
    """
    grids = {t: Grid.of(p) for t, p in class_tiles.items()}
    own = own_footprints(grids)
    per_tile = np.zeros((len(grids), num_classes))
    per_zone = None if zones is None else np.zeros((len(zones), num_classes))
    for i, (tile_id, path) in enumerate(class_tiles.items()):
        grid = grids[tile_id]
        per_tile[i] = class_areas(path, [own[tile_id]], num_classes)[0]
        if zones is None or per_zone is None:
            continue
        local = zones.geometry.to_crs(grid.crs)
        parts = [g.intersection(own[tile_id]) if g is not None else None for g in local]
        if any(p is not None and not p.is_empty for p in parts):
            per_zone += class_areas(path, parts, num_classes)
    return Areas(per_tile, per_zone, own, {t: g.crs for t, g in grids.items()})


def footprints_frame(areas: Areas, crs: CRS) -> gpd.GeoDataFrame:
    """The tiles' own footprints as polygons in one CRS (for the GeoPackage)."""
    geoms = [_to_crs(g, areas.crs[t], crs) for t, g in areas.footprints.items()]
    return gpd.GeoDataFrame({"tile_id": list(areas.footprints)}, geometry=geoms, crs=crs)


def write_csv(path: Path, table: pd.DataFrame) -> Path:
    """Write a table as CSV atomically."""
    return write_text(path, table.to_csv(index=False, lineterminator="\n"))


def write_gpkg(path: Path, layers: Mapping[str, pd.DataFrame]) -> Path:
    """Write tables (GeoDataFrames become spatial layers) into one GeoPackage atomically."""
    import pyogrio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temporary(path, ".tmp.gpkg")
    try:
        tmp.unlink()  # GDAL creates the GeoPackage itself
        for name, frame in layers.items():
            pyogrio.write_dataframe(frame, tmp, layer=name, driver="GPKG")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


__all__ = [
    "M2_PER_HA",
    "Areas",
    "areas_table",
    "class_areas",
    "compute_areas",
    "footprints_frame",
    "own_footprints",
    "pixel_area_m2",
    "read_zones",
    "slug",
    "total_table",
    "write_csv",
    "write_gpkg",
]
