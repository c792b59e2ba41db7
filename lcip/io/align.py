"""Aligning rasters from other sources onto a tile grid: imagery resampled, labels reprojected.

Recent NAIP is 0.6 m, older NAIP 1 m; 1 m labels may come in another CRS (e.g. the
Chesapeake Conservancy land cover in USA Contiguous Albers). lcip works on 1 m grids in the
imagery's UTM zone:

- :func:`snapped_grid` is the grid at a given resolution that covers a footprint, with its
  origin on a multiple of the resolution (so neighbouring tiles share pixel edges);
- :func:`utm_crs` is the UTM zone (NAD83 in the conterminous US, WGS 84 elsewhere) of a
  footprint's centre;
- :func:`align_raster` writes a raster onto a grid: bilinear for imagery (or any continuous
  data), nearest for categorical data (class codes and nodata kept as they are), as a COG with
  the source recorded in its provenance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds

import lcip
from lcip.errors import ConfigError
from lcip.io.provenance import PROVENANCE_TAG, provenance
from lcip.io.raster import Grid, open_raster, read_on_grid, write_raster

#: Resampling by kind of data.
RESAMPLING: Mapping[str, Resampling] = {
    "imagery": Resampling.bilinear,
    "categorical": Resampling.nearest,
}


def snapped_grid(
    crs: Any, bounds: tuple[float, float, float, float], resolution: float = 1.0
) -> Grid:
    """The north-up grid at ``resolution`` covering ``bounds``, origin snapped to its multiples.

    Args:
        crs: the grid's CRS (anything :class:`rasterio.crs.CRS` accepts).
        bounds: (left, bottom, right, top) in ``crs``.
        resolution: pixel size in CRS units (metres for UTM).

    Returns:
        the grid.

    Raises:
        ConfigError: for a non-positive resolution or empty bounds.
    """
    if not resolution > 0:
        raise ConfigError(f"resolution={resolution}: must be positive")
    left, bottom, right, top = bounds
    if not (right > left and top > bottom):
        raise ConfigError(f"bounds {bounds}: empty footprint")
    x0 = math.floor(left / resolution + 1e-9) * resolution
    y0 = math.ceil(top / resolution - 1e-9) * resolution
    width = math.ceil((right - x0) / resolution - 1e-9)
    height = math.ceil((y0 - bottom) / resolution - 1e-9)
    transform = Affine(resolution, 0.0, x0, 0.0, -resolution, y0)
    return Grid(CRS.from_user_input(crs), transform, height, width)


def utm_crs(crs: Any, bounds: tuple[float, float, float, float]) -> CRS:
    """The UTM CRS of the footprint's centre: NAD83 (EPSG:269xx) in the US, else WGS 84.

    Args:
        crs: the footprint's CRS.
        bounds: (left, bottom, right, top) in ``crs``.

    Returns:
        the UTM CRS.
    """
    to_lonlat = Transformer.from_crs(ProjCRS.from_user_input(crs), 4326, always_xy=True)
    lon, lat = to_lonlat.transform((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)
    zone = int((lon + 180) // 6) + 1
    if lat >= 0 and 10 <= zone <= 19 and 24 <= lat <= 50:  # the conterminous US: NAD83
        return CRS.from_epsg(26900 + zone)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def grid_for(path: str | Path, crs: Any | None = None, resolution: float = 1.0) -> Grid:
    """The snapped grid covering a raster's footprint, in ``crs`` (default: the raster's).

    Args:
        path: the raster.
        crs: target CRS; None keeps the raster's.
        resolution: pixel size of the grid.

    Returns:
        the grid.
    """
    src = Grid.of(path)
    target = src.crs if crs is None else CRS.from_user_input(crs)
    bounds = src.bounds if target == src.crs else transform_bounds(src.crs, target, *src.bounds)
    return snapped_grid(target, bounds, resolution)


def align_raster(
    src: str | Path,
    dst: str | Path,
    grid: Grid,
    kind: Literal["imagery", "categorical"],
    *,
    tags: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``src`` onto ``grid`` as a COG (atomic): bilinear imagery or nearest classes.

    Pixels outside the source are nodata (the source's nodata value, else 0). The output
    records the source's fingerprint and the resampling in its provenance tag.

    Args:
        src: source raster (any CRS and resolution).
        dst: output file.
        grid: target grid.
        kind: ``imagery`` (bilinear) or ``categorical`` (nearest: codes and nodata kept).
        tags: extra tags.

    Returns:
        the output path.

    Raises:
        ConfigError: for an unknown kind.
    """
    if kind not in RESAMPLING:
        raise ConfigError(f"kind={kind!r}: one of {sorted(RESAMPLING)}")
    with open_raster(src) as s:
        nodata, names = s.nodata, s.descriptions
    data = read_on_grid(src, grid, resampling=RESAMPLING[kind])
    params = {"kind": kind, "resampling": RESAMPLING[kind].name, "grid": grid.describe()}
    return write_raster(
        dst,
        data,
        grid,
        nodata=nodata if nodata is not None else (0 if kind == "categorical" else None),
        tags={
            **(tags or {}),
            PROVENANCE_TAG: provenance(params, {"source": src}),
            "lcip_version": lcip.__version__,
        },
        band_names=list(names) if any(names) else None,
        cog=True,
    )


__all__ = ["RESAMPLING", "align_raster", "grid_for", "snapped_grid", "utm_crs"]
