"""A seeded generator of synthetic regions: 1 m truth, NAIP-like imagery, NLCD and vectors.

The generated region stands in for a real NAIP/NLCD/OSM region in tests, demos and
benchmarks, with no download needed. It is laid out like the real data lcip consumes:

- ``naip/<tile>.tif``: 4-band uint8 imagery (R, G, B, NIR) at 1 m, rendered from the truth;
- ``lc/<tile>.tif``: 1 m truth in Chesapeake ``lc`` codes (1 water, 2 tree canopy, 3 low
  vegetation, 4 barren, 5 impervious other, 6 impervious road);
- ``nlcd/<tile>.tif``: NLCD codes on the tile grid (the 30 m raster upsampled, nearest);
- ``nlcd_30m.tif``: region-wide NLCD at 30 m, covering the region plus a margin, on a 30 m
  grid that is *not* aligned with the tile edges (30 m blocks are cut by tile edges);
- ``nlcd_30m_clean.tif``: the same before the simulated NLCD errors (for tests and studies;
  not listed in the manifest);
- ``osm.xml``: OSM XML in EPSG:4326 with roads (``highway=*``), the river (``waterway=river``
  line and a ``natural=water`` + ``water=river`` area) and ponds (``natural=water``);
- ``buildings.geojson``: building footprints in EPSG:4326, with ~10 % dropped and the rest
  shifted by ~1-2 m, like real footprint data;
- ``manifest.csv``: one row per tile with the layers ``naip``, ``lc``, ``nlcd``, ``nlcd_30m``,
  ``osm``, ``buildings``;
- ``region.json``: the configuration and summary statistics.

The truth is generated once over the whole region plus margin (so structure is continuous
across tile edges): a town with an urban-to-rural gradient (paved core, street grid, houses
along streets, parking lots, street and yard trees), main roads, a meandering river with sand
bars, riparian trees and a marsh, ponds, forest patches (deciduous, evergreen or mixed per
patch), a patchwork of fields (pasture, crops, grassland, shrub) with hedgerows, construction
sites and bare patches. The imagery gives every object its own colour, adds texture (crowns,
crop rows, gable roofs), cast shadows, haze and sensor noise, so that colour alone does not
identify the class: spatial context is needed.

NLCD codes follow the NLCD definitions, applied to each 30 m block's composition:

1. water >= 75 % -> 11 (open water);
2. impervious (codes 5 + 6) >= 80 / 50 / 20 % -> 24 / 23 / 22 (developed high / medium / low);
3. near the river or a marsh (within 2 blocks of a block holding river or marsh water),
   10 % <= water < 75 % and vegetation >= 20 % -> 90 (woody wetlands) if tree canopy >= low
   vegetation, else 95 (emergent herbaceous wetlands);
4. impervious >= 5 %, or low vegetation dominating in town (urban intensity >= 0.4)
   -> 21 (developed, open space);
5. barren is the largest cover and vegetation < 15 % -> 31 (barren land);
6. tree canopy >= low vegetation -> the majority forest type of the block's trees
   (41 deciduous, 42 evergreen, 43 mixed; street and yard trees count as 41);
7. otherwise the majority type of the block's low vegetation: 81 pasture/hay, 82 cultivated
   crops, 71 grassland/herbaceous or 52 shrub/scrub (chosen per field).

Then ``nlcd_error_rate`` of the blocks get a plausible wrong code (a neighbouring class, see
:data:`NLCD_CONFUSIONS`), as real NLCD has classification errors.

Everything is deterministic given the seed. Example::

    from lcip.synthetic import RegionConfig, generate_region
    manifest_path = generate_region(RegionConfig(seed=1), Path("data/synthetic"))
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
import numpy.typing as npt
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.features import rasterize
from scipy import ndimage
from shapely.geometry import LineString, MultiLineString, MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from lcip import __version__
from lcip.atomic import write_text
from lcip.classes import NLCD_CODES, NLCD_COLORS
from lcip.errors import ConfigError
from lcip.manifest import Manifest, Tile
from lcip.raster import Grid, write_raster

__all__ = [
    "LC_CODES",
    "LC_COLORS",
    "LC_NAMES",
    "NLCD_CONFUSIONS",
    "RegionConfig",
    "RegionLayout",
    "SyntheticRegion",
    "Way",
    "block_fractions",
    "default_splits",
    "generate_region",
    "lc_colormap",
    "nlcd_colormap",
    "nlcd_rules",
    "region_layout",
    "synthesize",
    "write_region",
]

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

# --------------------------------------------------------------------------------------------
# Classes
# --------------------------------------------------------------------------------------------

#: Chesapeake ``lc`` codes: 0 nodata, 1 water, 2 tree canopy, 3 low vegetation, 4 barren,
#: 5 impervious (other), 6 impervious (road).
LC_CODES: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
#: Names of :data:`LC_CODES`.
LC_NAMES: tuple[str, ...] = (
    "nodata",
    "water",
    "tree canopy",
    "low vegetation",
    "barren",
    "impervious (other)",
    "impervious (road)",
)
#: Colours of :data:`LC_CODES` (those of TorchGeo's ChesapeakeCVPR, roads dark grey).
LC_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (0, 197, 255),
    (38, 115, 0),
    (163, 255, 115),
    (255, 170, 0),
    (156, 156, 156),
    (78, 78, 78),
)
WATER, TREE, LOWVEG, BARREN, IMPERVIOUS, ROAD = 1, 2, 3, 4, 5, 6

#: Plausible NLCD confusions: true code -> codes a wrong NLCD label is drawn from.
NLCD_CONFUSIONS: dict[int, tuple[int, ...]] = {
    11: (90, 95, 21),
    21: (22, 81, 71, 41),
    22: (21, 23),
    23: (22, 24),
    24: (23,),
    31: (21, 71, 82),
    41: (43, 42, 90, 21),
    42: (43, 41),
    43: (41, 42),
    52: (71, 41),
    71: (81, 52),
    81: (82, 71, 21),
    82: (81,),
    90: (41, 95),
    95: (90, 81, 11),
}

_FOREST_P = (0.65, 0.15, 0.20)
_FIELD_TYPES = (81, 82, 71, 52)
_FIELD_P = (0.42, 0.33, 0.15, 0.10)
#: Vegetation NLCD codes an object can stand for (index = column of the block counts).
_VEG_CODES = (41, 42, 43, 81, 82, 71, 52)
_NLCD_BLOCK = 30


def lc_colormap() -> dict[int, tuple[int, int, int, int]]:
    """Colour table for Chesapeake ``lc`` rasters (code -> RGBA)."""
    return {c: (*rgb, 255 if c else 0) for c, rgb in zip(LC_CODES, LC_COLORS, strict=True)}


def nlcd_colormap() -> dict[int, tuple[int, int, int, int]]:
    """Colour table for NLCD code rasters (code -> RGBA, the official NLCD legend)."""
    return {c: (*rgb, 255 if c else 0) for c, rgb in zip(NLCD_CODES, NLCD_COLORS, strict=True)}


# --------------------------------------------------------------------------------------------
# Configuration and layout
# --------------------------------------------------------------------------------------------


def default_splits(n_tiles: int) -> list[str]:
    """The default split of ``n_tiles`` tiles (in row-major tile order).

    The last ``n_test = max(2, round(n / 3))`` tiles are ``test``, the ``n_val = max(1,
    round(n / 6))`` tiles before them ``val``, the rest ``train``; small regions shrink the
    test and val counts so that at least one tile is ``train`` (1 tile: train; 2: train, test;
    3: train, val, test). For 3 x 2 tiles: r0c0 r0c1 r0c2 train, r1c0 val, r1c1 r1c2 test.

    Args:
        n_tiles: number of tiles.

    Returns:
        one split name per tile.
    """
    if n_tiles < 1:
        raise ConfigError(f"a region needs at least one tile, got {n_tiles}")
    n_test = max(2, round(n_tiles / 3)) if n_tiles >= 4 else min(1, n_tiles - 1)
    n_val = max(1, round(n_tiles / 6)) if n_tiles >= 3 else 0
    n_train = n_tiles - n_test - n_val
    return ["train"] * n_train + ["val"] * n_val + ["test"] * n_test


@dataclass(frozen=True)
class RegionConfig:
    """Settings of a synthetic region.

    Args:
        name: region name (recorded in tags and ``region.json``).
        seed: random seed; the same seed gives identical outputs.
        crs: projected CRS of the tiles (metres), e.g. a UTM zone.
        origin: (x, y) of the region's upper-left corner in ``crs``.
        tiles_x: number of tile columns.
        tiles_y: number of tile rows.
        tile_size: tile width and height in pixels (1 m pixels).
        splits: split per tile: a sequence (row-major tile order), or a mapping from tile
            index (row-major) or tile id (``r0c1``) to split covering every tile; None uses
            :func:`default_splits`.
        margin_m: truth and NLCD extend at least this far (m) beyond the region on every side.
        nlcd_offset_m: (x, y) offset in metres (0..29) of the 30 m NLCD grid relative to the
            region's origin; non-zero offsets make the 30 m blocks cut at tile edges.
        town_radius_m: mean radius of the developed area; None uses 0.32 * sqrt(region area),
            at least 160 m.
        texture: scale of the within-class variation of the imagery (0 = flat per object).
        sensor_noise: standard deviation of the per-pixel sensor noise (digital numbers).
        shadow_strength: fraction of light removed in cast shadows (0 = no shadows).
        nlcd_error_rate: fraction of 30 m blocks given a plausible wrong NLCD code.
        footprint_drop_rate: fraction of buildings missing from ``buildings.geojson``.
        footprint_jitter_m: typical shift (m) of the building footprints.
        osm_jitter_m: typical shift (m) of the OSM nodes.
    """

    name: str = "synthetic"
    seed: int = 0
    crs: str = "EPSG:32618"
    origin: tuple[float, float] = (400000.0, 4300000.0)
    tiles_x: int = 3
    tiles_y: int = 2
    tile_size: int = 512
    splits: Sequence[str] | Mapping[int | str, str] | None = None
    margin_m: int = 150
    nlcd_offset_m: tuple[int, int] = (13, 17)
    town_radius_m: float | None = None
    texture: float = 1.0
    sensor_noise: float = 3.0
    shadow_strength: float = 0.55
    nlcd_error_rate: float = 0.07
    footprint_drop_rate: float = 0.10
    footprint_jitter_m: float = 1.5
    osm_jitter_m: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin", (float(self.origin[0]), float(self.origin[1])))
        # plain containers (e.g. not OmegaConf ones from a Hydra config)
        if isinstance(self.splits, Mapping):
            object.__setattr__(self, "splits", {k: str(v) for k, v in self.splits.items()})
        elif self.splits is not None and not isinstance(self.splits, str):
            object.__setattr__(self, "splits", tuple(str(v) for v in self.splits))
        object.__setattr__(
            self, "nlcd_offset_m", (int(self.nlcd_offset_m[0]), int(self.nlcd_offset_m[1]))
        )
        if self.tiles_x < 1 or self.tiles_y < 1:
            raise ConfigError(f"region {self.name}: tiles_x and tiles_y must be >= 1")
        if self.tile_size < 32:
            raise ConfigError(f"region {self.name}: tile_size must be >= 32, got {self.tile_size}")
        if self.margin_m < 0:
            raise ConfigError(f"region {self.name}: margin_m must be >= 0, got {self.margin_m}")
        if not all(0 <= o < _NLCD_BLOCK for o in self.nlcd_offset_m):
            raise ConfigError(
                f"region {self.name}: nlcd_offset_m must be in 0..29, got {self.nlcd_offset_m}"
            )
        for key in ("nlcd_error_rate", "footprint_drop_rate", "shadow_strength"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"region {self.name}: {key} must be in [0, 1]")
        for key in ("texture", "sensor_noise", "footprint_jitter_m", "osm_jitter_m"):
            if getattr(self, key) < 0:
                raise ConfigError(f"region {self.name}: {key} must be >= 0")
        if self.town_radius_m is not None and self.town_radius_m <= 0:
            raise ConfigError(f"region {self.name}: town_radius_m must be > 0")
        try:
            crs = CRS.from_user_input(self.crs)
        except CRSError as exc:
            raise ConfigError(f"region {self.name}: invalid crs {self.crs!r} ({exc})") from None
        if not crs.is_projected:
            raise ConfigError(f"region {self.name}: crs {self.crs} must be projected (metres)")
        self.tile_splits()  # validate

    @property
    def n_tiles(self) -> int:
        """Number of tiles."""
        return self.tiles_x * self.tiles_y

    def tile_ids(self) -> list[str]:
        """Tile ids in row-major order (``r<row>c<col>``)."""
        return [f"r{r}c{c}" for r in range(self.tiles_y) for c in range(self.tiles_x)]

    def tile_splits(self) -> list[str]:
        """The split of every tile, in row-major order.

        Raises:
            ConfigError: if ``splits`` does not cover every tile exactly.
        """
        ids = self.tile_ids()
        if self.splits is None:
            return default_splits(len(ids))
        if isinstance(self.splits, Mapping):
            out = []
            for i, tid in enumerate(ids):
                split = self.splits.get(i, self.splits.get(tid))
                if split is None:
                    raise ConfigError(
                        f"region {self.name}: splits names no split for tile {tid} (index {i})"
                    )
                out.append(str(split))
            unknown = set(self.splits) - set(ids) - set(range(len(ids)))
            if unknown:
                raise ConfigError(
                    f"region {self.name}: splits names unknown tiles {sorted(map(str, unknown))}"
                )
            return out
        if isinstance(self.splits, str) or len(self.splits) != len(ids):
            raise ConfigError(
                f"region {self.name}: splits must list {len(ids)} splits "
                f"(one per tile), got {self.splits!r}"
            )
        return [str(s) for s in self.splits]


@dataclass(frozen=True)
class RegionLayout:
    """The grids of a synthetic region.

    Args:
        region: the 1 m grid of the whole region (all tiles).
        canvas: the 1 m grid the truth is generated on (region plus margin; a whole number
            of 30 m blocks).
        nlcd: the 30 m NLCD grid (same extent as ``canvas``).
        row_off: first row of the region in the canvas.
        col_off: first column of the region in the canvas.
        tiles: tile id -> 1 m tile grid.
    """

    region: Grid
    canvas: Grid
    nlcd: Grid
    row_off: int
    col_off: int
    tiles: dict[str, Grid]

    def tile_window(self, tile_id: str) -> tuple[slice, slice]:
        """Canvas rows and columns of a tile."""
        t = self.tiles[tile_id].transform
        c0 = round(t.c - self.canvas.transform.c)
        r0 = round(self.canvas.transform.f - t.f)
        g = self.tiles[tile_id]
        return slice(r0, r0 + g.height), slice(c0, c0 + g.width)


def region_layout(cfg: RegionConfig) -> RegionLayout:
    """The grids (region, canvas, NLCD, tiles) of a configuration.

    Args:
        cfg: region configuration.

    Returns:
        the layout.
    """
    crs = CRS.from_user_input(cfg.crs)
    x0, y0 = cfg.origin
    ts = cfg.tile_size
    width, height = cfg.tiles_x * ts, cfg.tiles_y * ts
    pad = _NLCD_BLOCK * math.ceil(cfg.margin_m / _NLCD_BLOCK)
    col_off = pad + cfg.nlcd_offset_m[0]
    row_off = pad + cfg.nlcd_offset_m[1]
    cw = _NLCD_BLOCK * math.ceil((col_off + width + cfg.margin_m) / _NLCD_BLOCK)
    ch = _NLCD_BLOCK * math.ceil((row_off + height + cfg.margin_m) / _NLCD_BLOCK)
    cx0, cy0 = x0 - col_off, y0 + row_off
    tiles = {
        f"r{r}c{c}": Grid(crs, Affine(1.0, 0.0, x0 + c * ts, 0.0, -1.0, y0 - r * ts), ts, ts)
        for r in range(cfg.tiles_y)
        for c in range(cfg.tiles_x)
    }
    return RegionLayout(
        region=Grid(crs, Affine(1.0, 0.0, x0, 0.0, -1.0, y0), height, width),
        canvas=Grid(crs, Affine(1.0, 0.0, cx0, 0.0, -1.0, cy0), ch, cw),
        nlcd=Grid(
            crs,
            Affine(float(_NLCD_BLOCK), 0.0, cx0, 0.0, -float(_NLCD_BLOCK), cy0),
            ch // _NLCD_BLOCK,
            cw // _NLCD_BLOCK,
        ),
        row_off=row_off,
        col_off=col_off,
        tiles=tiles,
    )


# --------------------------------------------------------------------------------------------
# Random fields
# --------------------------------------------------------------------------------------------


def _interp_axis(z: F32, f: int, start: int, stop: int, axis: int) -> F32:
    """Samples ``start:stop`` of the linear interpolation of ``z`` along ``axis``.

    Coarse cell i is centred at fine coordinate (i - 0.5) * f, so fine sample p lies at coarse
    position (p + 0.5) / f + 0.5. Samples with the same phase p mod f share their weights,
    so each phase is one strided slice operation.
    """
    zt = np.moveaxis(z, axis, 0)
    n = stop - start
    out = np.empty((n, *zt.shape[1:]), np.float32)
    for j in range(f):
        p0 = start + (j - start) % f
        if p0 >= stop:
            continue
        m = len(range(p0, stop, f))
        pos = (j + 0.5) / f + 0.5
        k = (p0 - j) // f + math.floor(pos)
        t = np.float32(pos - math.floor(pos))
        dst = out[p0 - start :: f]
        if t == 0:
            dst[...] = zt[k : k + m]
        else:
            np.multiply(zt[k : k + m], 1 - t, out=dst)
            dst += zt[k + 1 : k + 1 + m] * t
    return np.moveaxis(out, 0, axis)


def _white(rng: np.random.Generator, shape: tuple[int, ...]) -> F32:
    """White noise with zero mean and unit variance (triangular distribution).

    The sum of two random bytes: an order of magnitude cheaper than normal deviates, close
    enough to Gaussian for sensor noise, and Gaussian anyway once smoothed.
    """
    n = math.prod(shape)
    b = np.frombuffer(rng.bytes(2 * n), np.uint8).reshape(2, n)
    z = b[0].astype(np.float32)
    z += b[1]
    z -= np.float32(255.0)
    z *= np.float32(1.0 / math.sqrt(2 * (256**2 - 1) / 12))
    return z.reshape(shape)


@dataclass(frozen=True)
class _Coarse:
    """A smooth field stored on a coarse grid (factor ``f``), upsampled bilinearly on demand."""

    z: F32
    f: int

    def window(self, rows: slice, cols: slice) -> F32:
        """The upsampled field on fine rows ``rows`` and columns ``cols``."""
        # columns first, on the small coarse array, then rows (contiguous slices)
        r0 = rows.start // self.f
        r1 = min(self.z.shape[0], (rows.stop - 1) // self.f + 3)
        a = np.ascontiguousarray(_interp_axis(self.z[r0:r1], self.f, cols.start, cols.stop, 1))
        return _interp_axis(a, self.f, rows.start - r0 * self.f, rows.stop - r0 * self.f, 0)


def _coarse_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> _Coarse:
    """Gaussian-smoothed white noise (unit standard deviation) on a coarse grid.

    The grid is coarse enough that ``sigma`` spans about 1.5 coarse cells.
    """
    f = max(1, int(sigma / 1.5))
    z = _white(rng, (shape[0] // f + 3, shape[1] // f + 3))
    z = ndimage.gaussian_filter(z, sigma / f, mode="wrap", truncate=3.0)
    z /= max(float(z.std()), 1e-6)
    return _Coarse(z, f)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> F32:
    """Gaussian-smoothed white noise with unit standard deviation on a grid of ``shape``.

    Fields with ``sigma`` > 2.5 px are smoothed on a coarser grid and bilinearly upsampled.
    """
    if sigma > 2.5:
        return _coarse_noise(rng, shape, sigma).window(slice(0, shape[0]), slice(0, shape[1]))
    return _gauss_unit(_white(rng, shape), sigma)


def _gauss_unit(white: F32, sigma: float) -> F32:
    """Gaussian filter of white noise, scaled to unit standard deviation.

    The scale comes from the kernel (not the data), so that windows of one noise field are
    filtered identically.
    """
    radius = int(3.0 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    out = ndimage.gaussian_filter(white, sigma, mode="reflect", truncate=3.0)
    out *= np.float32(1.0 / float((k**2).sum()))
    return out


def _smooth1d(rng: np.random.Generator, n: int, sigma: float) -> F64:
    """Smoothed 1-D white noise with unit standard deviation."""
    z = ndimage.gaussian_filter1d(rng.standard_normal(n + 1), max(sigma, 0.5), mode="reflect")
    return np.asarray(z[:n] / max(float(z.std()), 1e-9), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Geometry helpers (canvas pixel coordinates: x = column, y = row, 1 unit = 1 m)
# --------------------------------------------------------------------------------------------


def _curvy_path(
    rng: np.random.Generator,
    centre: tuple[float, float],
    heading: F64 | float,
    half_len: float,
    step: float,
    wiggle: float,
    sigma_m: float,
    straight_m: float = 0.0,
) -> F64:
    """A smooth path through ``centre``: heading + smoothed noise, integrated both ways.

    Returns:
        (n, 2) array of x, y.
    """
    n = max(int(half_len / step), 2)
    s = np.arange(-n, n + 1) * step
    dev = _smooth1d(rng, s.size, sigma_m / step) * wiggle
    if straight_m > 0:
        dev *= np.clip((np.abs(s) - straight_m) / straight_m, 0.0, 1.0)
    h = heading + dev
    x = np.cumsum(np.cos(h) * step)
    y = np.cumsum(np.sin(h) * step)
    return np.stack([x - x[n] + centre[0], y - y[n] + centre[1]], axis=1)


def _parts(geom: BaseGeometry) -> list[Any]:
    """The single parts of a (multi-part) geometry."""
    if geom.is_empty:
        return []
    if isinstance(geom, (MultiLineString, MultiPolygon)) or geom.geom_type == "GeometryCollection":
        return [p for g in geom.geoms for p in _parts(g)]
    return [geom]


def _blob(
    rng: np.random.Generator, cx: float, cy: float, radius: float, rough: float = 0.15
) -> Polygon:
    """An irregular round polygon (polar radius with a few random harmonics)."""
    th = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    r = np.ones_like(th)
    for k in range(2, 6):
        r += rng.normal(0, rough / math.sqrt(k - 1)) * np.cos(k * th + rng.uniform(0, 2 * np.pi))
    r = radius * np.clip(r, 0.4, 1.8)
    return Polygon(np.stack([cx + r * np.cos(th), cy + r * np.sin(th)], axis=1))


def _ellipse(cx: float, cy: float, a: float, b: float, angle: float) -> Polygon:
    th = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    x, y = a * np.cos(th), b * np.sin(th)
    ca, sa = math.cos(angle), math.sin(angle)
    return Polygon(np.stack([cx + x * ca - y * sa, cy + x * sa + y * ca], axis=1))


def _rectangles(cx: F64, cy: F64, w: F64, d: F64, angle: F64) -> npt.NDArray[np.object_]:
    """Rotated rectangles (w along ``angle``, d across) as an array of polygons."""
    ca, sa = np.cos(angle), np.sin(angle)
    ux, uy = ca * w / 2, sa * w / 2
    vx, vy = -sa * d / 2, ca * d / 2
    xs = np.stack([cx - ux - vx, cx + ux - vx, cx + ux + vx, cx - ux + vx], axis=1)
    ys = np.stack([cy - uy - vy, cy + uy - vy, cy + uy + vy, cy - uy + vy], axis=1)
    return np.asarray(shapely.polygons(np.stack([xs, ys], axis=2)))


def _greedy_disjoint(
    geoms: npt.NDArray[np.object_], order: npt.NDArray[np.intp], gap: float
) -> Bool:
    """Keep geometries in ``order`` unless they come within ``gap`` of one already kept."""
    keep = np.zeros(len(geoms), bool)
    if len(geoms) == 0:
        return keep
    tree = shapely.STRtree(geoms)
    pairs = tree.query(shapely.buffer(geoms, gap / 2, join_style="mitre"), predicate="intersects")
    i, j = pairs
    sel = i != j
    i, j = i[sel], j[sel]
    srt = np.argsort(i, kind="stable")
    i, j = i[srt], j[srt]
    starts = np.searchsorted(i, np.arange(len(geoms) + 1))
    blocked = np.zeros(len(geoms), bool)
    for k in order:
        if not blocked[k]:
            keep[k] = True
            blocked[j[starts[k] : starts[k + 1]]] = True
    return keep


Win = tuple[slice, slice]


class _NoiseBank:
    """Smooth noise fields of the canvas, stored coarse and upsampled window by window.

    Variant k of a field is the field flipped (k % 4: none, up-down, left-right, both) and, for
    k >= 4, negated: cheap, effectively independent patterns for unrelated features.
    """

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int]) -> None:
        self.rng, self.shape = rng, shape
        self.fields: dict[float, _Coarse] = {}

    def get(self, sigma: float, variant: int = 0, win: Win | None = None) -> F32:
        if sigma not in self.fields:
            self.fields[sigma] = _coarse_noise(self.rng, self.shape, sigma)
        h, w = self.shape
        rows, cols = win if win is not None else (slice(0, h), slice(0, w))
        flip_r, flip_c = variant % 4 in (1, 3), variant % 4 in (2, 3)
        if flip_r:
            rows = slice(h - rows.stop, h - rows.start)
        if flip_c:
            cols = slice(w - cols.stop, w - cols.start)
        z = self.fields[sigma].window(rows, cols)
        return z[:: -1 if flip_r else 1, :: -1 if flip_c else 1]

    def above(self, sigma: float, variant: int, t: float, win: Win | None = None) -> Bool:
        z = self.get(sigma, variant, win)
        return z > np.float32(t) if variant < 4 else z < np.float32(-t)


def _row_chunks(win: Win, step: int = 512) -> Iterator[tuple[Win, Win]]:
    """Split a window into bands of rows: (window of the band, band within ``win``)."""
    rows, cols = win
    for r in range(rows.start, rows.stop, step):
        r1 = min(rows.stop, r + step)
        yield (slice(r, r1), cols), (slice(r - rows.start, r1 - rows.start), slice(None))


def _by_rows(win: Win, fn: Callable[[Win], Bool]) -> Bool:
    """A boolean mask of ``win`` computed band by band (bounded temporaries)."""
    out = np.empty((win[0].stop - win[0].start, win[1].stop - win[1].start), bool)
    for band, local in _row_chunks(win):
        out[local] = fn(band)
    return out


def _sub(mask: Bool, mask_win: Win, win: Win) -> Bool:
    """The part of ``mask`` (given on ``mask_win``) inside ``win``; False outside it."""
    out = np.zeros((win[0].stop - win[0].start, win[1].stop - win[1].start), bool)
    r0, r1 = max(win[0].start, mask_win[0].start), min(win[0].stop, mask_win[0].stop)
    c0, c1 = max(win[1].start, mask_win[1].start), min(win[1].stop, mask_win[1].stop)
    if r0 < r1 and c0 < c1:
        out[r0 - win[0].start : r1 - win[0].start, c0 - win[1].start : c1 - win[1].start] = mask[
            r0 - mask_win[0].start : r1 - mask_win[0].start,
            c0 - mask_win[1].start : c1 - mask_win[1].start,
        ]
    return out


class _Painter:
    """The canvas truth (``lc``) and object ids (``obj``), painted with rasterized shapes.

    Shapes are rasterized within their joint bounding window only, which keeps painting many
    small objects cheap on a large canvas.
    """

    def __init__(self, shape: tuple[int, int], code: int, obj: I32) -> None:
        self.shape = shape
        self.lc = np.full(shape, code, np.uint8)
        self.obj = obj.astype(np.int32, copy=False)

    def window(self, bounds: Sequence[float]) -> Win | None:
        minx, miny, maxx, maxy = (float(b) for b in bounds)
        if not all(math.isfinite(b) for b in (minx, miny, maxx, maxy)):
            return None
        c0, r0 = max(0, math.floor(minx)), max(0, math.floor(miny))
        c1, r1 = min(self.shape[1], math.ceil(maxx)), min(self.shape[0], math.ceil(maxy))
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def rasterize(
        self, geoms: Sequence[BaseGeometry], values: Iterable[int]
    ) -> tuple[Win | None, I32]:
        """Rasterize shapes with values (later ones win) on their bounding window."""
        pairs = [
            (g, int(v))
            for g, v in zip(geoms, values, strict=True)
            if g is not None and not g.is_empty
        ]
        if not pairs:
            return None, np.zeros((0, 0), np.int32)
        win = self.window(shapely.total_bounds(np.asarray([g for g, _ in pairs], dtype=object)))
        if win is None:
            return None, np.zeros((0, 0), np.int32)
        out = rasterize(
            pairs,
            out_shape=(win[0].stop - win[0].start, win[1].stop - win[1].start),
            transform=Affine.translation(win[1].start, win[0].start),
            fill=0,
            dtype="int32",
        )
        return win, np.asarray(out, np.int32)

    def burn(
        self,
        geoms: Sequence[BaseGeometry],
        ids: npt.ArrayLike,
        code: int,
        allowed: Sequence[int] | None = None,
        where: Callable[[Win], Bool] | None = None,
    ) -> None:
        """Paint shapes: class ``code`` and object ``ids[i]`` inside shape i.

        Args:
            geoms: shapes (canvas pixel coordinates).
            ids: object id of each shape.
            code: lc code to paint.
            allowed: only repaint pixels whose current code is one of these.
            where: extra condition, a function of the window giving a mask.
        """
        win, idx = self.rasterize(geoms, range(1, len(geoms) + 1))
        if win is None:
            return
        sel = idx > 0
        lcw, objw = self.lc[win], self.obj[win]
        if allowed is not None:
            ok = np.zeros_like(sel)
            for a in allowed:
                ok |= lcw == a
            sel &= ok
        if where is not None:
            sel &= where(win)
        lcw[sel] = code
        objw[sel] = np.asarray(ids, np.int64)[idx[sel] - 1]


def _field_ids(rng: np.random.Generator, shape: tuple[int, int], angle: float) -> tuple[I32, int]:
    """A patchwork of rectangular fields: columns of random widths, each cut into rows.

    Returns:
        field id per pixel and the number of field ids.
    """
    f_angle = angle + float(rng.normal(0, 0.2))
    ca, sa = np.float32(math.cos(f_angle)), np.float32(math.sin(f_angle))
    h, w = shape
    cx = np.array([0, w, 0, w], np.float64)
    cy = np.array([0, 0, h, h], np.float64)
    x_min = float((cx * ca + cy * sa).min()) - 2
    x_ext = float((cx * ca + cy * sa).max()) - x_min + 4
    y_min = float((-cx * sa + cy * ca).min()) - 2
    y_ext = float((-cx * sa + cy * ca).max()) - y_min + 4
    edges = np.concatenate([[0.0], np.cumsum(rng.uniform(110, 280, int(x_ext / 110) + 2))])
    n_cols = edges.size
    col_of = np.searchsorted(edges, np.arange(int(x_ext) + 2) + 0.5, side="right") - 1
    col_of = col_of.astype(np.int32)
    row_h = rng.uniform(80, 250, n_cols).astype(np.float32)
    row_off = (rng.uniform(0, 250, n_cols) - y_min).astype(np.float32)
    n_rows = int(y_ext / 80) + 5
    xx = (np.arange(w, dtype=np.float32) + np.float32(0.5))[None, :]
    fid = np.empty(shape, np.int32)
    for band, _ in _row_chunks((slice(0, h), slice(0, w))):
        yy = (np.arange(band[0].start, band[0].stop, dtype=np.float32) + np.float32(0.5))[:, None]
        col = col_of[(xx * ca + yy * sa - np.float32(x_min)).astype(np.int32)]
        yr = yy * ca - xx * sa
        yr += row_off[col]
        yr /= row_h[col]
        out = fid[band]
        np.multiply(col, np.int32(n_rows), out=out)
        out += yr.astype(np.int32)
    return fid, n_cols * n_rows


# --------------------------------------------------------------------------------------------
# Scene construction
# --------------------------------------------------------------------------------------------


@dataclass
class Way:
    """A road or waterway line of the synthetic region (canvas pixel coordinates).

    Args:
        coords: (n, 2) x, y vertices.
        tags: OSM tags.
        width: paved width in metres (0 for waterways).
    """

    coords: F64
    tags: dict[str, str]
    width: float = 0.0


@dataclass
class SyntheticRegion:
    """A generated region in memory (see :func:`synthesize`).

    Args:
        config: the configuration.
        layout: the grids.
        lc: 1 m truth on the canvas (uint8 Chesapeake codes).
        naip: imagery on the region grid, (4, H, W) uint8.
        nlcd: NLCD codes on the 30 m grid, with simulated errors.
        nlcd_clean: NLCD codes from the definitions, before the errors.
        ways: roads and the river centreline.
        water_areas: (polygon, OSM tags) of the river area and the ponds.
        buildings: building polygons (canvas pixel coordinates).
        building_heights: heights in metres.
        stats: summary statistics.

    Canvas pixel coordinates are (x, y) = (column, row) on ``layout.canvas`` (1 unit = 1 m);
    in the CRS they are (canvas.transform.c + x, canvas.transform.f - y).
    """

    config: RegionConfig
    layout: RegionLayout
    lc: U8
    naip: U8
    nlcd: U8
    nlcd_clean: U8
    ways: list[Way]
    water_areas: list[tuple[Polygon, dict[str, str]]]
    buildings: list[Polygon]
    building_heights: F64
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def region_lc(self) -> U8:
        """The truth on the region grid (all tiles, without the margin)."""
        lay = self.layout
        return self.lc[
            lay.row_off : lay.row_off + lay.region.height,
            lay.col_off : lay.col_off + lay.region.width,
        ]


def _rngs(seed: int) -> list[np.random.Generator]:
    """Independent generators for the stages (changing one stage leaves the others alone)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(10)]


class _Stopwatch:
    """Logs the time of each generation stage at DEBUG level."""

    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.cpu = time.process_time()

    def __call__(self, stage: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        log.debug("synthetic: %-12s %.2f s (cpu %.2f s)", stage, now - self.t, cpu - self.cpu)
        self.t, self.cpu = now, cpu


class _Objects:
    """Registry of painted objects: colour (R, G, B, NIR), height, NLCD vegetation type."""

    def __init__(self) -> None:
        self.colors: list[F64] = [np.array([[100.0, 100.0, 100.0, 100.0]])]
        self.heights: list[F64] = [np.zeros(1)]
        self.veg: list[npt.NDArray[np.int8]] = [np.full(1, -1, np.int8)]
        self.count = 1

    def add(
        self, colors: npt.ArrayLike, heights: npt.ArrayLike = 0.0, veg: int | npt.ArrayLike = -1
    ) -> I64:
        cols = np.atleast_2d(np.asarray(colors, dtype=np.float64))
        n = cols.shape[0]
        ids = np.arange(self.count, self.count + n, dtype=np.int64)
        self.colors.append(cols)
        self.heights.append(np.broadcast_to(np.asarray(heights, np.float64), (n,)).copy())
        self.veg.append(np.broadcast_to(np.asarray(veg, np.int8), (n,)).copy())
        self.count += n
        return ids

    def tables(self) -> tuple[F32, F32, npt.NDArray[np.int8]]:
        return (
            np.concatenate(self.colors).astype(np.float32),
            np.concatenate(self.heights).astype(np.float32),
            np.concatenate(self.veg),
        )


def _jitter_colors(
    rng: np.random.Generator, base: npt.ArrayLike, n: int, bright: float, band: float, nir: float
) -> F64:
    """N colours around ``base`` ((4,) or (n, 4)): a brightness factor plus per-band jitter."""
    b = np.broadcast_to(np.asarray(base, np.float64), (n, 4)) * rng.normal(1.0, bright, (n, 1))
    b[:, :3] += rng.normal(0, band, (n, 3))
    b[:, 3] += rng.normal(0, nir, n)
    return b


class _Town:
    """The town: centre, irregular radius and the urban intensity u in [0, 1]."""

    def __init__(self, rng: np.random.Generator, cx: float, cy: float, radius: float) -> None:
        self.cx, self.cy, self.radius = cx, cy, radius
        self.k = np.arange(2, 6)
        self.amp = rng.normal(0, 0.12, 4) / np.sqrt(self.k - 1)
        self.phase = rng.uniform(0, 2 * np.pi, 4)
        self.angle = float(rng.uniform(-0.6, 0.6))

    def rad(self, th: npt.NDArray[Any]) -> npt.NDArray[Any]:
        r = 1 + np.sum(
            self.amp[:, None] * np.cos(self.k[:, None] * th.ravel()[None] + self.phase[:, None]), 0
        )
        return np.asarray(self.radius * np.clip(r, 0.5, 1.6)).reshape(th.shape)

    def rho(self, x: npt.NDArray[Any], y: npt.NDArray[Any]) -> npt.NDArray[Any]:
        dx, dy = x - self.cx, y - self.cy
        return np.asarray(np.hypot(dx, dy) / self.rad(np.arctan2(dy, dx)))

    def u_at(self, x: npt.ArrayLike, y: npt.ArrayLike) -> F64:
        rho = self.rho(np.asarray(x, np.float64), np.asarray(y, np.float64))
        return np.asarray(np.clip(1.15 - rho, 0.0, 1.0), np.float64)

    def polygon(self, rho: float) -> Polygon:
        th = np.linspace(0, 2 * np.pi, 180, endpoint=False)
        r = self.rad(th) * rho
        return Polygon(np.stack([self.cx + r * np.cos(th), self.cy + r * np.sin(th)], axis=1))

    def u_map(self, shape: tuple[int, int], f: int = 4) -> F32:
        ys = (np.arange(shape[0] // f + 3) - 0.5) * f
        xs = (np.arange(shape[1] // f + 3) - 0.5) * f
        u = self.u_at(xs[None, :], ys[:, None]).astype(np.float32)
        return _Coarse(u, f).window(slice(0, shape[0]), slice(0, shape[1]))


def _main_roads(
    rng: np.random.Generator, town: _Town, canvas_box: Polygon, area_km2: float
) -> list[Way]:
    """Primary, secondary and tertiary roads crossing the canvas."""
    minx, miny, maxx, maxy = canvas_box.bounds
    half = math.hypot(maxx - minx, maxy - miny) + 200
    ways: list[Way] = []
    specs: list[tuple[str, tuple[float, float], float, float, float]] = []
    for i in range(2):
        heading = town.angle + i * math.pi / 2 + rng.normal(0, 0.08)
        specs.append(
            ("primary", (town.cx, town.cy), heading, rng.uniform(12, 15), 0.6 * town.radius)
        )
    a = rng.uniform(0, 2 * np.pi)
    p = (town.cx + 0.45 * town.radius * math.cos(a), town.cy + 0.45 * town.radius * math.sin(a))
    specs.append(
        (
            "secondary",
            p,
            town.angle + rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.5),
            rng.uniform(9, 12),
            0.2 * town.radius,
        )
    )
    for _ in range(1 + int(area_km2 / 2.5)):
        q = (rng.uniform(minx, maxx), rng.uniform(miny, maxy))
        specs.append(("tertiary", q, rng.uniform(0, np.pi), rng.uniform(6.5, 8.5), 0.0))
    names = {"primary": "State Route", "secondary": "County Road", "tertiary": "Farm Road"}
    for k, (kind, centre, heading, width, straight) in enumerate(specs):
        path = _curvy_path(rng, centre, heading, half, 10.0, 0.35, 300.0, straight)
        for part in _parts(LineString(path).intersection(canvas_box)):
            if part.length > 30:
                tags = {
                    "highway": kind,
                    "name": f"{names[kind]} {k + 1}",
                    "lanes": "2" if kind != "primary" else "4",
                }
                ways.append(Way(np.asarray(part.coords), tags, float(width)))
    return ways


def _river(rng: np.random.Generator, town: _Town, canvas_box: Polygon) -> tuple[Way, Polygon, F64]:
    """A meandering river of varying width.

    Returns:
        the centreline way, the river polygon and the (n, 5) array of centreline samples
        (x, y, heading, curvature, width).
    """
    minx, miny, maxx, maxy = canvas_box.bounds
    half = math.hypot(maxx - minx, maxy - miny) + 300
    alpha = town.angle + rng.choice([-1.0, 1.0]) * rng.uniform(0.35, 1.2)
    side = rng.choice([-1.0, 1.0])
    off = side * rng.uniform(0.55, 1.0) * town.radius
    px, py = town.cx - math.sin(alpha) * off, town.cy + math.cos(alpha) * off
    # the river always crosses the canvas
    px = min(max(px, minx + 0.1 * (maxx - minx)), minx + 0.9 * (maxx - minx))
    py = min(max(py, miny + 0.1 * (maxy - miny)), miny + 0.9 * (maxy - miny))
    step = 4.0
    n = int(half / step)
    s = np.arange(-n, n + 1) * step
    lam, amp = rng.uniform(350, 800), rng.uniform(0.35, 0.6)
    heading = alpha + amp * np.sin(2 * np.pi * s / lam + rng.uniform(0, 2 * np.pi))
    heading += 0.25 * _smooth1d(rng, s.size, 150 / step)
    x = np.cumsum(np.cos(heading) * step)
    y = np.cumsum(np.sin(heading) * step)
    x, y = x - x[n] + px, y - y[n] + py
    width = rng.uniform(22, 38) * np.clip(1 + 0.3 * _smooth1d(rng, s.size, 120 / step), 0.45, 1.8)
    curv = np.gradient(heading, step)
    inside = shapely.contains_xy(canvas_box.buffer(80), x, y)
    keep = np.flatnonzero(inside)
    lo, hi = int(keep.min()), int(keep.max()) + 1
    x, y, heading, curv, width = x[lo:hi], y[lo:hi], heading[lo:hi], curv[lo:hi], width[lo:hi]
    segs = shapely.linestrings(
        np.stack([np.stack([x[:-1], x[1:]], 1), np.stack([y[:-1], y[1:]], 1)], axis=2)
    )
    seg_w = 0.5 * (width[:-1] + width[1:])
    poly = shapely.union_all(shapely.buffer(segs, seg_w / 2, quad_segs=4))
    poly = shapely.simplify(poly.intersection(canvas_box), 0.3)
    centre = LineString(np.stack([x, y], 1)).intersection(canvas_box)
    coords = max(_parts(centre), key=lambda g: g.length).coords
    way = Way(np.asarray(coords), {"waterway": "river", "name": "Synthetic River"})
    return way, poly, np.stack([x, y, heading, curv, width], axis=1)


def _street_grid(
    rng: np.random.Generator, town: _Town, avoid: BaseGeometry, main_buf: BaseGeometry
) -> list[Way]:
    """Residential street grid inside the developed area (shared nodes at crossings)."""
    sx, sy = rng.uniform(80, 120), rng.uniform(55, 85)
    ni, nj = int(1.6 * town.radius / sx) + 1, int(1.6 * town.radius / sy) + 1
    ii, jj = np.meshgrid(np.arange(-ni, ni + 1), np.arange(-nj, nj + 1), indexing="ij")
    a = ii * sx + rng.normal(0, 3, ii.shape)
    b = jj * sy + rng.normal(0, 3, jj.shape)
    ca, sa = math.cos(town.angle), math.sin(town.angle)
    gx = town.cx + 0.5 * sx + a * ca - b * sa
    gy = town.cy + 0.5 * sy + a * sa + b * ca
    inside = shapely.contains_xy(town.polygon(1.0), gx, gy)
    shapely.prepare(avoid)
    shapely.prepare(main_buf)
    ways: list[Way] = []
    street = 0
    for axis in (0, 1):
        lines = range(ii.shape[1]) if axis == 0 else range(ii.shape[0])
        for k in lines:
            if axis == 0:
                xs, ys, ins = gx[:, k], gy[:, k], inside[:, k]
            else:
                xs, ys, ins = gx[k, :], gy[k, :], inside[k, :]
            ok = ins[:-1] & ins[1:] & (rng.random(len(xs) - 1) > 0.07)
            if not ok.any():
                continue
            segs = shapely.linestrings(
                np.stack([np.stack([xs[:-1], xs[1:]], 1), np.stack([ys[:-1], ys[1:]], 1)], 2)
            )
            over = np.zeros(len(segs))
            hit = shapely.intersects(segs, main_buf)
            if hit.any():
                over[hit] = shapely.length(shapely.intersection(segs[hit], main_buf))
                over /= shapely.length(segs)
            ok &= ~shapely.intersects(segs, avoid) & (over < 0.35)
            run: list[int] = []
            for e in range(len(ok) + 1):
                if e < len(ok) and ok[e]:
                    run.append(e)
                    continue
                if run:
                    idx = [*run, run[-1] + 1]
                    street += 1
                    tags = {"highway": "residential", "name": f"Street {street}"}
                    ways.append(
                        Way(np.stack([xs[idx], ys[idx]], 1), tags, float(rng.uniform(6, 8)))
                    )
                    run = []
    return ways


def _frontage(rng: np.random.Generator, ways: Sequence[Way], town: _Town) -> dict[str, F64]:
    """Candidate building / parking-lot rectangles along roads.

    Returns:
        arrays cx, cy, w, d, angle, height, kind (0 house, 1 accessory, 2 parking), zone.
    """
    cols: dict[str, list[F64]] = {
        k: [] for k in ("cx", "cy", "w", "d", "angle", "height", "kind", "zone")
    }
    # per zone (rural, suburban, urban, core): ranges of lot width, building width along the
    # road, depth, setback and height (m), and the probability that a lot is built on
    z_lo = np.array(
        [[60, 10, 8, 12, 5], [17, 9, 8, 6, 5], [20, 12, 10, 2, 7], [28, 20, 18, 0.5, 12]]
    )
    z_hi = np.array(
        [[160, 18, 14, 35, 8], [26, 14, 12, 12, 9], [32, 24, 22, 8, 16], [50, 45, 40, 3, 40]]
    )
    z_p = np.array([0.18, 0.85, 0.9, 0.95])
    for way in ways:
        line = LineString(way.coords)
        length = line.length
        if length < 15:
            continue
        rural_only = way.tags.get("highway") == "tertiary"
        probe = np.arange(0, length, 5.0)
        pts = shapely.line_interpolate_point(line, probe)
        u = town.u_at(shapely.get_x(pts), shapely.get_y(pts))
        zone_of = np.digitize(u, [0.15, 0.65, 0.85])
        if rural_only:
            zone_of[:] = 0
        for side in (-1.0, 1.0):
            pos: list[float] = []
            zl: list[int] = []
            dist = rng.uniform(0, 10)
            while dist < length:
                z = int(zone_of[min(int(dist / 5.0), len(zone_of) - 1)])
                lot = rng.uniform(z_lo[z, 0], z_hi[z, 0])
                if dist + lot / 2 < length:
                    pos.append(dist + lot / 2)
                    zl.append(z)
                dist += lot
            if not pos:
                continue
            p = np.asarray(pos)
            zone = np.asarray(zl)
            keep = rng.random(len(p)) < z_p[zone]
            p, zone = p[keep], zone[keep]
            if not len(p):
                continue
            a_pts = shapely.line_interpolate_point(line, np.clip(p - 1, 0, length))
            b_pts = shapely.line_interpolate_point(line, np.clip(p + 1, 0, length))
            c_pts = shapely.line_interpolate_point(line, p)
            tx = shapely.get_x(b_pts) - shapely.get_x(a_pts)
            ty = shapely.get_y(b_pts) - shapely.get_y(a_pts)
            norm = np.hypot(tx, ty) + 1e-9
            tx, ty = tx / norm, ty / norm
            nx, ny = -ty * side, tx * side
            m = len(p)
            w, d, setback, height = (rng.uniform(z_lo[zone, i], z_hi[zone, i]) for i in range(1, 5))
            kind = np.zeros(m)
            parking = ((zone == 2) & (rng.random(m) < 0.25)) | (
                (zone == 3) & (rng.random(m) < 0.12)
            )
            kind[parking] = 2
            w[parking] = rng.uniform(18, 40, parking.sum())
            d[parking] = rng.uniform(18, 40, parking.sum())
            height[parking] = 0
            angle = np.arctan2(ty, tx) + rng.normal(0, 0.03, m)
            tilt = (zone <= 1) & (rng.random(m) < 0.12)
            angle[tilt] += rng.uniform(-0.5, 0.5, tilt.sum())
            off = way.width / 2 + setback + d / 2
            cx = shapely.get_x(c_pts) + nx * off
            cy = shapely.get_y(c_pts) + ny * off
            for key, val in (
                ("cx", cx),
                ("cy", cy),
                ("w", w),
                ("d", d),
                ("angle", angle),
                ("height", height),
                ("kind", kind),
                ("zone", zone.astype(float)),
            ):
                cols[key].append(val)
            # accessory buildings behind houses (garages, sheds) and farm barns
            acc = (kind == 0) & (zone <= 1) & (rng.random(m) < np.where(zone == 0, 0.6, 0.3))
            if acc.any():
                k = np.flatnonzero(acc)
                aw = np.where(zone[k] == 0, rng.uniform(12, 28, k.size), rng.uniform(4, 7, k.size))
                ad = np.where(zone[k] == 0, rng.uniform(8, 18, k.size), rng.uniform(4, 7, k.size))
                back = off[k] + d[k] / 2 + ad / 2 + rng.uniform(3, 9, k.size)
                lat = rng.uniform(-0.5, 0.5, k.size) * (w[k] + aw) / 2
                ax = shapely.get_x(c_pts)[k] + nx[k] * back + tx[k] * lat
                ay = shapely.get_y(c_pts)[k] + ny[k] * back + ty[k] * lat
                for key, val in (
                    ("cx", ax),
                    ("cy", ay),
                    ("w", aw),
                    ("d", ad),
                    ("angle", angle[k]),
                    ("height", rng.uniform(3, 6, k.size)),
                    ("kind", np.ones(k.size)),
                    ("zone", zone[k].astype(float)),
                ):
                    cols[key].append(val)
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}


def synthesize(cfg: RegionConfig) -> SyntheticRegion:
    """Generate a region in memory (truth, imagery, NLCD, vectors).

    Args:
        cfg: region configuration.

    Returns:
        the generated region.
    """
    tick = _Stopwatch()
    layout = region_layout(cfg)
    ch, cw = layout.canvas.shape
    shape = (ch, cw)
    r_town, r_road, r_water, r_land, r_build, r_tree, r_img, r_nlcd, r_col = _rngs(cfg.seed)[:9]
    canvas_box = box(0, 0, cw, ch)
    W, H = layout.region.width, layout.region.height
    area_km2 = ch * cw / 1e6
    radius = cfg.town_radius_m or max(0.32 * math.sqrt(W * H), 160.0)
    town = _Town(
        r_town,
        layout.col_off + W * r_town.uniform(0.35, 0.65),
        layout.row_off + H * r_town.uniform(0.35, 0.65),
        radius,
    )
    u = town.u_map(shape)
    objs = _Objects()
    tick("town")

    # ---- vectors: roads, river, ponds --------------------------------------------------
    main = _main_roads(r_road, town, canvas_box, area_km2)
    river_way, river_poly, river_samples = _river(r_water, town, canvas_box)
    main_buf = shapely.union_all([LineString(w.coords).buffer(w.width / 2 + 10) for w in main])
    grid = _street_grid(r_road, town, river_poly.buffer(10), main_buf)
    roads = main + grid
    road_lines = [LineString(w.coords) for w in roads]
    road_polys = [
        ln.buffer(w.width / 2, quad_segs=4) for ln, w in zip(road_lines, roads, strict=True)
    ]
    road_tree = shapely.STRtree(road_polys)
    tick("roads")

    ponds: list[Polygon] = []
    n_ponds = 2 + r_water.poisson(1.2 * area_km2)
    cand = r_water.uniform([0, 0], [cw, ch], (200, 2))
    radii = np.exp(r_water.normal(math.log(35), 0.5, 200))
    radii[0] = r_water.uniform(70, 130)  # one lake
    pts = shapely.points(cand)
    free = town.u_at(cand[:, 0], cand[:, 1]) <= 0.5
    shapely.prepare(river_poly)
    free &= ~shapely.dwithin(river_poly, pts, radii * 1.8 + 25)
    free[road_tree.query(pts, predicate="dwithin", distance=radii * 1.8 + 15)[0]] = False
    for kp in np.flatnonzero(free):
        if len(ponds) >= n_ponds:
            break
        blob = _blob(r_water, float(cand[kp, 0]), float(cand[kp, 1]), float(radii[kp]))
        if any(blob.distance(p) < 20 for p in ponds):
            continue
        ponds.append(blob)

    # marsh next to the river, in the countryside
    marshes: list[Polygon] = []
    rx, ry, rh, rc, rw = river_samples.T
    ok = (town.u_at(rx, ry) < 0.08) & shapely.contains_xy(canvas_box.buffer(-40), rx, ry)
    cands = np.flatnonzero(ok)
    for _ in range(1 + int(area_km2 / 6)):
        if cands.size == 0:
            break
        k = int(r_water.choice(cands))
        sgn = r_water.choice([-1.0, 1.0])
        a, b = r_water.uniform(50, 110), r_water.uniform(35, 75)
        off = rw[k] / 2 + b * 0.7
        mx, my = rx[k] - math.sin(rh[k]) * off * sgn, ry[k] + math.cos(rh[k]) * off * sgn
        marshes.append(_ellipse(float(mx), float(my), float(a), float(b), float(rh[k])))
        cands = cands[np.hypot(rx[cands] - rx[k], ry[cands] - ry[k]) > 400]

    tick("ponds")

    # ---- land: fields, forest, hedgerows, barren ---------------------------------------
    noise = _NoiseBank(r_land, shape)
    fid, n_fields = _field_ids(r_land, shape, town.angle)
    ftype = r_land.choice(len(_FIELD_TYPES), n_fields, p=_FIELD_P)
    # pasture, crops (mature crops are dark green with a high NIR, like trees), grassland,
    # shrub
    field_base = np.array(
        [[95, 116, 82, 160], [74, 102, 64, 180], [112, 118, 88, 150], [80, 92, 68, 135]], float
    )
    fcol = _jitter_colors(r_col, field_base[ftype], n_fields, 0.14, 6, 20)
    dry = r_col.random(n_fields) < 0.15  # dry / harvested fields: brownish, low NIR
    fcol[dry] = _jitter_colors(r_col, [135, 125, 100, 125], int(dry.sum()), 0.07, 5, 10)
    field_ids = objs.add(fcol, 0.0, np.asarray(ftype) + 3)
    paint = _Painter(shape, LOWVEG, fid + np.int32(field_ids[0]))
    lc, obj = paint.lc, paint.obj

    full = (slice(0, ch), slice(0, cw))

    def forest_mask(w: Win) -> Bool:
        f = noise.get(40, 0, w)
        f += np.float32(0.45) * noise.get(6, 0, w)
        f += np.float32(0.25) * noise.get(3, 0, w)
        return f > np.float32(0.45 * 1.13) + np.float32(2.2 * 1.13) * u[w]

    forest = _by_rows(full, forest_mask)
    labels, n_lab = ndimage.label(forest)
    ptype = r_land.choice(3, n_lab + 1, p=_FOREST_P).astype(np.int32)
    fbase = np.array([[60, 82, 64, 150], [45, 64, 54, 105], [54, 74, 60, 128]], float)
    forest_ids = objs.add(fbase, [16.0, 18.0, 17.0], [0, 1, 2])
    lut = (ptype + np.int32(forest_ids[0])).astype(np.int32)
    lc[forest] = TREE
    obj[forest] = lut[labels[forest]]
    del labels, forest
    tick("forest")

    # hedgerows along some field boundaries in the countryside
    hedge_flag = r_land.random(n_fields) < 0.35
    bnd = np.zeros(shape, bool)
    np.not_equal(fid[1:], fid[:-1], out=bnd[1:])
    bnd[:, 1:] |= fid[:, 1:] != fid[:, :-1]
    yy, xx = np.nonzero(bnd)
    drop = ~hedge_flag[fid[yy, xx]] | (u[yy, xx] >= 0.15)
    bnd[yy[drop], xx[drop]] = False
    del yy, xx, drop
    bnd = ndimage.maximum_filter(bnd.view(np.uint8), size=4).view(bool)
    bnd &= _by_rows(full, lambda w: noise.above(3, 1, -0.5, w))
    bnd &= lc == LOWVEG
    hedge_id = objs.add(fbase[0] * [1.05, 1.05, 1.05, 1.0], 9.0, 0)[0]
    lc[bnd], obj[bnd] = TREE, hedge_id
    del bnd
    tick("hedges")

    # bare patches in crop fields, construction sites, a dirt lot or two
    barren_ids = objs.add([[128, 116, 96, 112], [188, 178, 152, 160], [168, 158, 142, 148]])
    yy, xx = np.nonzero(_by_rows(full, lambda w: noise.above(6, 1, 2.0, w)))
    ok = (ftype[fid[yy, xx] % n_fields] == 1) & (lc[yy, xx] == LOWVEG) & (u[yy, xx] < 0.15)
    lc[yy[ok], xx[ok]], obj[yy[ok], xx[ok]] = BARREN, barren_ids[0]
    sites: list[Polygon] = []
    for _ in range(300):
        if len(sites) >= 1 + int(area_km2 * 0.6):
            break
        px, py = r_land.uniform(0, cw), r_land.uniform(0, ch)
        if not 0.05 < town.u_at(px, py) < 0.7:
            continue
        site = _rectangles(
            np.array([px]),
            np.array([py]),
            r_land.uniform(45, 110, 1),
            r_land.uniform(40, 80, 1),
            np.array([town.angle]),
        )[0]
        if road_tree.query(site, predicate="intersects").size or site.intersects(river_poly):
            continue
        sites.append(site)
    for _ in range(int(area_km2 / 2.5) + 1):
        px, py = r_land.uniform(0, cw), r_land.uniform(0, ch)
        if town.u_at(px, py) < 0.1:
            sites.append(_blob(r_land, float(px), float(py), float(r_land.uniform(20, 40)), 0.2))
    site_col = _jitter_colors(r_col, [152, 136, 112, 122], len(sites), 0.08, 6, 10)
    site_ids = objs.add(site_col) if sites else np.zeros(0, np.int64)
    paint.burn(sites, site_ids, BARREN, where=lambda w: noise.above(3, 2, -1.7, w))

    # paved town core (plazas, parking), with small green islands
    paved_id = objs.add([[120, 120, 117, 102]])[0]
    cw_ = paint.window(town.polygon(0.35).bounds)
    if cw_ is not None:
        core = (u[cw_] + np.float32(0.05) * noise.get(15, 0, cw_) > 0.88) & noise.above(
            3, 3, -1.6, cw_
        )
        lc[cw_][core], obj[cw_][core] = IMPERVIOUS, paved_id
    tick("barren")

    # ---- water ------------------------------------------------------------------------
    rip_id = objs.add([[58, 84, 62, 140]], 13.0, 0)[0]
    marsh_veg = objs.add([[80, 100, 70, 125], [55, 76, 60, 120]], [0.0, 8.0], [5, 0])
    pond_col = np.stack(
        [
            r_col.uniform(35, 70, len(ponds)),
            r_col.uniform(50, 85, len(ponds)),
            r_col.uniform(50, 72, len(ponds)),
            r_col.uniform(15, 40, len(ponds)),
        ],
        1,
    )
    water_ids = objs.add(np.concatenate([[[44, 62, 66, 24], [48, 62, 52, 34]], pond_col]))
    # one raster: 1 riparian band, 2 river + 3 m, 3 river
    rwin, rzone = paint.rasterize(
        [river_poly.buffer(30, quad_segs=2), river_poly.buffer(3, quad_segs=2), river_poly],
        [1, 2, 3],
    )
    if rwin is not None:
        lcw, objw = lc[rwin], obj[rwin]
        rip = (
            (rzone > 0)
            & (u[rwin] < 0.35)
            & _by_rows(rwin, lambda w: noise.above(6, 2, -0.3, w))
            & (lcw == LOWVEG)
        )
        lcw[rip], objw[rip] = TREE, rip_id
    for m in marshes:
        win, burnt = paint.rasterize([m], [1])
        if win is None:
            continue
        mask = burnt > 0
        wood = mask & noise.above(6, 3, 0.5, win)
        lcw, objw = lc[win], obj[win]
        lcw[mask], objw[mask] = LOWVEG, marsh_veg[0]
        lcw[wood], objw[wood] = TREE, marsh_veg[1]
        pools = mask & noise.above(3, 4, 0.8, win)
        lcw[pools], objw[pools] = WATER, water_ids[1]
    wet_src = lc == WATER  # marsh pools so far
    if rwin is not None:
        river_mask = rzone == 3
        lc[rwin][river_mask], obj[rwin][river_mask] = WATER, water_ids[0]
        wet_src[rwin] |= river_mask
    paint.burn(ponds, water_ids[2:], WATER)
    # sand bars on the inside of bends
    bars: list[Polygon] = []
    rural = (town.u_at(rx, ry) < 0.3) & shapely.contains_xy(canvas_box, rx, ry)
    sm_curv = ndimage.gaussian_filter1d(rc, 5)
    peaks = (
        np.flatnonzero(
            rural[1:-1]
            & (np.abs(sm_curv[1:-1]) >= np.abs(sm_curv[:-2]))
            & (np.abs(sm_curv[1:-1]) >= np.abs(sm_curv[2:]))
            & (np.abs(sm_curv[1:-1]) > 0.004)
        )
        + 1
    )
    for k in peaks[: 2 + int(area_km2)]:
        inner = 1.0 if sm_curv[k] > 0 else -1.0
        across = r_water.uniform(7, 14)
        off = rw[k] / 2 - across * 0.35
        bx, by = rx[k] - math.sin(rh[k]) * off * inner, ry[k] + math.cos(rh[k]) * off * inner
        bars.append(
            _ellipse(
                float(bx), float(by), float(r_water.uniform(18, 40)), float(across), float(rh[k])
            )
        )
    if rwin is not None:
        near_river = rzone >= 2
        paint.burn(
            bars,
            np.full(len(bars), barren_ids[1]),
            BARREN,
            where=lambda w: _sub(near_river, rwin, w),
        )
    tick("water")

    # ---- roads ------------------------------------------------------------------------
    rcol = np.array(
        [
            [82, 84, 88, 72] if w.tags["highway"] == "primary" else [100, 100, 101, 86]
            for w in roads
        ],
        float,
    )
    rcol *= r_col.normal(1.0, 0.09, (len(roads), 1))
    road_ids = objs.add(rcol)
    paint.burn(road_polys, road_ids, ROAD)
    tick("roadpaint")

    # ---- buildings and parking lots ----------------------------------------------------
    fr = _frontage(r_build, roads, town)
    rects = _rectangles(fr["cx"], fr["cy"], fr["w"], fr["d"], fr["angle"])
    bad = ~shapely.contains_xy(canvas_box.buffer(-1), fr["cx"], fr["cy"])
    obstacles = [*road_polys, river_poly.buffer(2), *[p.buffer(2) for p in ponds], *sites, *marshes]
    hit, _ = shapely.STRtree(rects).query(
        np.asarray([g.buffer(1.0) for g in obstacles], dtype=object), predicate="intersects"
    )[::-1]
    bad[hit] = True
    prio = np.where(fr["kind"] == 1, 1.0, 0.0) + r_build.random(len(rects)) * 0.5
    order = np.argsort(prio, kind="stable")
    order = order[~bad[order]]
    keep = _greedy_disjoint(rects, order, 1.5)
    log.debug("buildings: %d candidates, %d blocked, %d kept", len(rects), bad.sum(), keep.sum())
    is_lot = keep & (fr["kind"] == 2)
    is_bld = keep & (fr["kind"] != 2)
    lots = list(rects[is_lot])
    lot_ids = objs.add(_jitter_colors(r_col, [112, 112, 110, 96], len(lots), 0.12, 3, 6))
    paint.burn(lots, lot_ids, IMPERVIOUS)
    buildings = list(rects[is_bld])
    b_height = fr["height"][is_bld]
    roofs = np.array(
        [
            [160, 160, 158, 140],
            [206, 206, 200, 190],
            [76, 78, 82, 70],
            [46, 58, 63, 38],
            [136, 84, 70, 86],
            [166, 148, 124, 124],
            [96, 118, 108, 96],
            [92, 104, 126, 92],
        ],
        float,
    )
    roof_p = np.array([0.22, 0.12, 0.22, 0.12, 0.12, 0.1, 0.05, 0.05])
    rk = r_col.choice(len(roofs), len(buildings), p=roof_p)
    bcol = _jitter_colors(r_col, roofs[rk], len(buildings), 0.08, 4, 6)
    bld_ids = objs.add(bcol, b_height)
    paint.burn(buildings, bld_ids, IMPERVIOUS)
    gable = (
        r_col.random(len(buildings))
        < np.array([0.7, 0.7, 0.3, 0.0])[fr["zone"][is_bld].astype(int)]
    )
    b_info = np.stack([fr["cx"][is_bld], fr["cy"][is_bld], fr["angle"][is_bld], gable], 1)
    tick("buildings")

    # ---- trees: street trees, yard trees, field trees ----------------------------------
    t_street: list[F64] = []
    for way in grid:
        if r_tree.random() > 0.55:
            continue
        line = LineString(way.coords)
        for side in (-1.0, 1.0):
            if r_tree.random() > 0.85:
                continue
            dist = np.cumsum(r_tree.uniform(8, 14, int(line.length / 8) + 1))
            dist = dist[dist < line.length]
            if dist.size == 0:
                continue
            a_p = shapely.line_interpolate_point(line, np.clip(dist - 1, 0, None))
            b_p = shapely.line_interpolate_point(line, dist + 1)
            tx = shapely.get_x(b_p) - shapely.get_x(a_p)
            ty = shapely.get_y(b_p) - shapely.get_y(a_p)
            nrm = np.hypot(tx, ty) + 1e-9
            off = way.width / 2 + r_tree.uniform(1.5, 4.0, dist.size)
            c = shapely.line_interpolate_point(line, dist)
            px = shapely.get_x(c) - ty / nrm * off * side
            py = shapely.get_y(c) + tx / nrm * off * side
            t_street.append(
                np.stack(
                    [px, py, r_tree.uniform(2.5, 4.8, dist.size), r_tree.uniform(8, 16, dist.size)],
                    1,
                )
            )
    n_try = int(ch * cw / 150)
    yx, yy_ = r_tree.uniform(0, cw, n_try), r_tree.uniform(0, ch, n_try)
    uu = town.u_at(yx, yy_)
    dens = np.where((uu > 0.15) & (uu < 0.75), 1.0, 0.0) + 0.015 * (uu <= 0.15)
    ok = r_tree.random(n_try) < dens * 0.4
    yx, yy_ = yx[ok], yy_[ok]
    ok = lc[yy_.astype(int), yx.astype(int)] == LOWVEG
    yx, yy_ = yx[ok], yy_[ok]
    t_yard = np.stack(
        [yx, yy_, r_tree.uniform(2.0, 5.0, yx.size), r_tree.uniform(6, 15, yx.size)], 1
    )
    n_trees = 0
    b_tree = shapely.STRtree(np.asarray(buildings, dtype=object)) if buildings else None
    for arr, allowed in (
        (t_yard, (LOWVEG,)),
        (np.concatenate(t_street) if t_street else np.zeros((0, 4)), (LOWVEG, ROAD)),
    ):
        if arr.shape[0] == 0:
            continue
        disks = shapely.buffer(shapely.points(arr[:, 0], arr[:, 1]), arr[:, 2], quad_segs=3)
        if b_tree is not None:
            okd = np.ones(len(disks), bool)
            okd[b_tree.query(disks, predicate="intersects")[0]] = False
            disks, arr = disks[okd], arr[okd]
        tcol = _jitter_colors(r_col, [62, 86, 64, 152], arr.shape[0], 0.08, 4, 14)
        ids = objs.add(tcol, arr[:, 3], 0)
        paint.burn(list(disks), ids, TREE, allowed=allowed)
        n_trees += arr.shape[0]
    tick("trees")

    # ---- NLCD -------------------------------------------------------------------------
    hb, wb = layout.nlcd.shape
    urban = town.u_at(
        (np.arange(wb) + 0.5)[None, :] * _NLCD_BLOCK, (np.arange(hb) + 0.5)[:, None] * _NLCD_BLOCK
    )
    nlcd_clean = _nlcd_from_truth(lc, obj, objs.tables()[2], urban, wet_src)
    nlcd = _perturb_nlcd(r_nlcd, nlcd_clean, cfg.nlcd_error_rate)
    tick("nlcd")

    # ---- imagery ----------------------------------------------------------------------
    naip = _render(cfg, r_img, layout, lc, obj, objs, fid, ftype, field_ids, u, b_info, bld_ids)
    tick("render")

    # ---- vectors out ------------------------------------------------------------------
    water_areas: list[tuple[Polygon, dict[str, str]]] = [
        (p, {"natural": "water", "water": "river", "name": "Synthetic River"})
        for p in _parts(river_poly)
        if isinstance(p, Polygon)
    ]
    for i, p in enumerate(ponds):
        kind = "lake" if p.area > 12000 else "pond"
        water_areas.append(
            (p, {"natural": "water", "water": kind, "name": f"{kind.title()} {i + 1}"})
        )

    reg = lc[layout.row_off : layout.row_off + H, layout.col_off : layout.col_off + W]
    counts = np.bincount(reg.ravel(), minlength=7)
    stats: dict[str, Any] = {
        "lc_fraction": {LC_NAMES[c]: round(float(counts[c]) / reg.size, 4) for c in range(1, 7)},
        "nlcd_counts": {
            int(c): int(n) for c, n in zip(*np.unique(nlcd, return_counts=True), strict=True)
        },
        "nlcd_perturbed_fraction": round(float((nlcd != nlcd_clean).mean()), 4),
        "buildings": len(buildings),
        "parking_lots": len(lots),
        "roads": len(roads),
        "ponds": len(ponds),
        "barren_sites": len(sites),
        "trees": n_trees,
    }
    return SyntheticRegion(
        config=cfg,
        layout=layout,
        lc=lc,
        naip=naip,
        nlcd=nlcd,
        nlcd_clean=nlcd_clean,
        ways=[*roads, river_way],
        water_areas=water_areas,
        buildings=buildings,
        building_heights=b_height,
        stats=stats,
    )


# --------------------------------------------------------------------------------------------
# NLCD
# --------------------------------------------------------------------------------------------


def _block_index(shape: tuple[int, int], block: int) -> I32:
    """Row-major index of the ``block`` x ``block`` block of every pixel."""
    wb = shape[1] // block
    rows = (np.arange(shape[0], dtype=np.int32) // block) * np.int32(wb)
    cols = np.arange(shape[1], dtype=np.int32) // block
    return rows[:, None] + cols[None, :]


def block_fractions(lc: U8, block: int = _NLCD_BLOCK) -> F64:
    """Per-block class fractions of a label raster.

    Args:
        lc: (H, W) Chesapeake codes 0..6, H and W multiples of ``block``.
        block: block size in pixels.

    Returns:
        (H // block, W // block, 7) fractions of codes 0..6 (over all pixels).
    """
    hb, wb = lc.shape[0] // block, lc.shape[1] // block
    lc = lc[: hb * block, : wb * block]
    key = _block_index(lc.shape, block) * np.int32(7) + np.minimum(lc, 6)
    counts = np.bincount(key.ravel(), minlength=hb * wb * 7)
    return counts.reshape(hb, wb, 7) / float(block * block)


def nlcd_rules(frac: F64, forest_code: U8, field_code: U8, urban: F64, wet_zone: Bool) -> U8:
    """NLCD codes of 30 m blocks from their composition (the rules of the module docstring).

    Args:
        frac: (..., 7) fractions of lc codes 0..6.
        forest_code: majority forest code (41/42/43) of each block's trees.
        field_code: majority code (81/82/71/52) of each block's low vegetation.
        urban: urban intensity of each block (0..1).
        wet_zone: whether each block is near the river or a marsh.

    Returns:
        uint8 NLCD codes.
    """
    water, tree, low, barren = frac[..., 1], frac[..., 2], frac[..., 3], frac[..., 4]
    imp = frac[..., 5] + frac[..., 6]
    veg = tree + low
    valid = frac[..., 0] < 0.5
    conds = [
        ~valid,
        water >= 0.75,
        imp >= 0.8,
        imp >= 0.5,
        imp >= 0.2,
        wet_zone & (water >= 0.1) & (veg >= 0.2),
        (imp >= 0.05) | ((urban >= 0.4) & (low >= tree)),
        (barren >= np.maximum.reduce([water, tree, low, imp])) & (veg < 0.15),
        tree >= low,
    ]
    wet_code = np.where(tree >= low, 90, 95)
    choices: list[npt.ArrayLike] = [0, 11, 24, 23, 22, wet_code, 21, 31, forest_code]
    # the first condition that holds wins: apply them from last to first
    codes = np.asarray(field_code, np.uint8)
    for cond, choice in zip(conds[::-1], choices[::-1], strict=True):
        codes = np.where(cond, choice, codes).astype(np.uint8)
    return codes


def _nlcd_from_truth(
    lc: U8, obj: I32, obj_veg: npt.NDArray[np.int8], urban: F64, wet_src: Bool
) -> U8:
    """NLCD codes of the canvas's 30 m blocks (``urban``: urban intensity per block)."""
    hb, wb = lc.shape[0] // _NLCD_BLOCK, lc.shape[1] // _NLCD_BLOCK
    nv = len(_VEG_CODES)
    counts = np.zeros((hb, wb, 7), np.int64)
    veg_counts = np.zeros((hb, wb, nv + 1), np.int64)
    step = 32  # block rows at a time, to bound the temporaries
    for b0 in range(0, hb, step):
        b1 = min(hb, b0 + step)
        rows = slice(b0 * _NLCD_BLOCK, b1 * _NLCD_BLOCK)
        blk = _block_index((rows.stop - rows.start, lc.shape[1]), _NLCD_BLOCK)
        n = (b1 - b0) * wb
        key = blk * np.int32(7) + lc[rows]
        counts[b0:b1] = np.bincount(key.ravel(), minlength=n * 7).reshape(b1 - b0, wb, 7)
        # vegetation type (forest / field code index) per pixel; others to a dummy last bin
        veg = np.take(obj_veg, obj[rows], mode="clip").astype(np.int32)
        veg[veg < 0] = nv
        key = blk * np.int32(nv + 1) + veg
        veg_counts[b0:b1] = np.bincount(key.ravel(), minlength=n * (nv + 1)).reshape(
            b1 - b0, wb, nv + 1
        )
    frac = counts / float(_NLCD_BLOCK**2)
    forest_code = np.asarray(_VEG_CODES[:3], np.uint8)[veg_counts[..., :3].argmax(-1)]
    field_code = np.asarray(_VEG_CODES[3:], np.uint8)[veg_counts[..., 3:nv].argmax(-1)]
    ys, xs = np.nonzero(wet_src)
    wet_blocks = np.zeros((hb, wb), bool)
    wet_blocks[ys // _NLCD_BLOCK, xs // _NLCD_BLOCK] = True
    wet_zone = ndimage.binary_dilation(wet_blocks, iterations=2)
    return nlcd_rules(frac, forest_code, field_code, urban, wet_zone)


def _perturb_nlcd(rng: np.random.Generator, clean: U8, rate: float) -> U8:
    """Give ``rate`` of the blocks a plausible wrong code."""
    out = clean.copy()
    table = np.zeros((256, 4), np.uint8)
    count = np.zeros(256, np.intp)
    for code, alts in NLCD_CONFUSIONS.items():
        table[code, : len(alts)] = alts
        count[code] = len(alts)
    flip = (rng.random(clean.shape) < rate) & (count[clean] > 0)
    pick = (rng.random(clean.shape) * count[clean]).astype(np.intp)
    out[flip] = table[clean[flip], pick[flip]]
    return out


# --------------------------------------------------------------------------------------------
# Imagery
# --------------------------------------------------------------------------------------------


def _cast_shadows(height: F32, azimuth_deg: float, elevation_deg: float) -> Bool:
    """Cast-shadow mask of a height map (sun from ``azimuth``, degrees clockwise from north).

    A pixel is shadowed when a ray towards the sun passes below the top of a taller object.
    """
    az = math.radians(azimuth_deg)
    # shadows point away from the sun; pixel coordinates: x right (east), y down (south)
    vx, vy = -math.sin(az), math.cos(az)
    slope = math.tan(math.radians(elevation_deg))
    h, w = height.shape
    reach = int((float(height.max()) if height.size else 0.0) / slope) + 1
    best = np.zeros_like(height)
    offsets: list[tuple[int, int]] = []
    for s in range(1, reach + 1):
        off = (round(s * vx), round(s * vy))
        if off not in offsets and abs(off[0]) < w and abs(off[1]) < h:
            offsets.append(off)
    # every offset near the casters, then every other one (objects are >= 2 px wide)
    for dx, dy in offsets[:3] + offsets[3::2]:
        ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        caster = height[ys, xs] - np.float32(math.hypot(dx, dy) * slope)
        np.maximum(best[yd, xd], caster, out=best[yd, xd])
    return best > height + np.float32(0.5)


_STRIP = 512


def _render(
    cfg: RegionConfig,
    rng: np.random.Generator,
    layout: RegionLayout,
    lc_c: U8,
    obj_c: I32,
    objs: _Objects,
    fid_c: I32,
    ftype: npt.NDArray[np.intp],
    field_ids: I64,
    u_c: F32,
    b_info: F64,
    bld_ids: I64,
) -> U8:
    """Render NAIP-like imagery (4, H, W) uint8 of the region from the canvas truth.

    The region (plus a halo, for shadows cast from outside it) is rendered in strips of rows,
    each with enough overlap that the strips join seamlessly, to keep memory use small.
    """
    H, W = layout.region.shape
    ch, cw = layout.canvas.shape
    halo = min(40, layout.row_off, layout.col_off, ch - layout.row_off - H, cw - layout.col_off - W)
    r0, c0 = layout.row_off - halo, layout.col_off - halo
    hw, ww = H + 2 * halo, W + 2 * halo
    colors, heights, _ = objs.tables()
    tex = np.float32(cfg.texture)
    sun_az, sun_el = 135.0, 55.0
    pad = int(float(heights.max()) * 1.15 / math.tan(math.radians(sun_el))) + 10

    # random fields of the whole window: smooth (lf), NIR-only (nf), haze, fine (white -> hf)
    lf = _coarse_noise(rng, (hw, ww), 14)
    nf = _coarse_noise(rng, (hw, ww), 6)
    haze = _coarse_noise(rng, (hw, ww), 200)
    white = _white(rng, (hw, ww))
    # crop rows / mowing stripes: direction, period and amplitude per field
    n_f = field_ids.size
    f_ang = rng.uniform(0, np.pi, n_f)
    f_per = rng.uniform(4, 9, n_f)
    f_amp = np.where(np.asarray(ftype) == 1, 0.06, 0.025) * (rng.random(n_f) < 0.7)
    stripes = (
        (np.cos(f_ang) / f_per).astype(np.float32),
        (np.sin(f_ang) / f_per).astype(np.float32),
        (tex * f_amp).astype(np.float32),
    )
    out = np.empty((4, H, W), np.uint8)
    for s0 in range(0, H, _STRIP):
        s1 = min(H, s0 + _STRIP)
        a, b = max(0, s0 + halo - pad), min(hw, s1 + halo + pad)
        rows, cols = slice(r0 + a, r0 + b), slice(c0, c0 + ww)
        wrows, wcols = slice(a, b), slice(0, ww)
        bands = _render_strip(
            cfg,
            (r0 + a, c0),
            lc_c[rows, cols],
            obj_c[rows, cols],
            fid_c[rows, cols],
            u_c[rows, cols],
            colors,
            heights,
            (lf.window(wrows, wcols), nf.window(wrows, wcols), haze.window(wrows, wcols)),
            _gauss_unit(white[a:b], 1.3),
            stripes,
            field_ids,
            b_info,
            bld_ids,
            (sun_az, sun_el),
        )
        inner = (slice(s0 + halo - a, s1 + halo - a), slice(halo, halo + W))
        for k in range(4):
            band = ndimage.gaussian_filter(bands[k], 0.55, truncate=2.0)[inner]
            noise = _white(rng, band.shape)
            noise *= np.float32(cfg.sensor_noise)
            band += noise
            np.rint(band, out=band)
            np.clip(band, 0, 255, out=band)
            out[k, s0:s1] = band
    return out


def _render_strip(
    cfg: RegionConfig,
    origin: tuple[int, int],
    lc: U8,
    obj: I32,
    fid: I32,
    u: F32,
    colors: F32,
    heights: F32,
    fields: tuple[F32, F32, F32],
    hf: F32,
    stripes: tuple[F32, F32, F32],
    field_ids: I64,
    b_info: F64,
    bld_ids: I64,
    sun: tuple[float, float],
) -> F32:
    """Render one strip (4, h, w) float32, before the sensor blur and noise."""
    lf, nf, haze = fields
    tex = np.float32(cfg.texture)
    # within-object variation: smooth (lf), fine (hf, tree crowns) and NIR-only (vigour)
    # amplitudes per class: 0 nodata, water, tree, low veg, barren, imp, road
    amps = tex * np.array(
        [
            [0, 0.05, 0.08, 0.09, 0.07, 0.04, 0.04],
            [0, 0.02, 0.30, 0.05, 0.06, 0.03, 0.03],
            [0, 0.05, 0.10, 0.10, 0.04, 0.02, 0.02],
        ],
        np.float32,
    )
    lci = lc.astype(np.intp)
    obji = obj.astype(np.intp)
    mult = np.take(amps[0], lci, mode="clip")
    mult *= lf
    tmp = np.take(amps[1], lci, mode="clip")
    tmp *= hf
    mult += tmp
    nir_mult = np.take(amps[2], lci, mode="clip")
    nir_mult *= nf
    nir_mult += mult

    # crop rows / mowing stripes in fields
    ax, ay, amp = stripes
    n_f = field_ids.size
    fk = fid.astype(np.intp)
    xx = np.arange(origin[1], origin[1] + lc.shape[1], dtype=np.float32)[None, :]
    yy = np.arange(origin[0], origin[0] + lc.shape[0], dtype=np.float32)[:, None]
    tmp = np.take(ax, fk, mode="clip")
    tmp *= xx
    tmp += np.take(ay, fk, mode="clip") * yy
    # triangle wave of the phase (in cycles), in [-1, 1]
    tmp -= np.floor(tmp)
    tmp -= np.float32(0.5)
    np.abs(tmp, out=tmp)
    tmp *= np.float32(4)
    tmp -= np.float32(1)
    tmp *= np.take(amp, fk, mode="clip")
    tmp *= (obj >= field_ids[0]) & (obj < field_ids[0] + n_f)
    mult += tmp
    del tmp, fk

    # gable roofs: one half brighter than the other
    if bld_ids.size:
        ys, xs = np.nonzero((obj >= bld_ids[0]) & (obj <= bld_ids[-1]))
        k = obj[ys, xs] - bld_ids[0]
        bx, by, ba, bg = (b_info[k, i] for i in range(4))
        gx, gy = xs + 0.5 + origin[1], ys + 0.5 + origin[0]
        side = np.sign((gx - bx) * -np.sin(ba) + (gy - by) * np.cos(ba))
        shade = (0.1 * bg * side).astype(np.float32)
        mult[ys, xs] += shade
        nir_mult[ys, xs] += shade

    # cast shadows (tree heights vary with the crown texture)
    hgt = np.take(heights, obji, mode="clip")
    is_tree = lc == TREE
    hgt[is_tree] *= 1 + np.float32(0.15) * hf[is_tree]
    shadow = _cast_shadows(hgt, azimuth_deg=sun[0], elevation_deg=sun[1]).astype(np.float32)
    shadow = ndimage.gaussian_filter(shadow, 0.7, truncate=2.0)
    dark = 1 - np.float32(cfg.shadow_strength) * shadow
    del hgt, shadow, is_tree
    mult += 1
    mult *= dark
    nir_mult += 1
    nir_mult *= dark
    del dark

    # lawns in town are greener and brighter in NIR than farm fields
    lawn = np.clip((u - np.float32(0.15)) * np.float32(3), 0, 1) * (lc == LOWVEG)
    lawn_col = np.array([96, 122, 84, 178], np.float32)
    # water: brighter (shallow, mixed pixels) near the shore
    is_w = lc == WATER
    shore = ndimage.gaussian_filter((~is_w).astype(np.float32), 1.5, truncate=2.0)
    shore *= is_w

    bands = np.empty((4, *lc.shape), np.float32)
    for b in range(4):
        band = bands[b]
        np.take(np.ascontiguousarray(colors[:, b]), obji, out=band, mode="clip")
        tmp = lawn_col[b] - band
        tmp *= lawn
        band += tmp
        band *= nir_mult if b == 3 else mult
        tmp = shore * np.float32(40.0 if b == 3 else 18.0)
        tmp += np.float32((1.5, 2.0, 3.5, 1.0)[b]) * haze
        tmp += np.float32((2, 3, 6, 0)[b])
        band += tmp
    return bands


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _to_lonlat(region: SyntheticRegion) -> Transformer:
    return Transformer.from_crs(region.layout.canvas.crs, "EPSG:4326", always_xy=True)


def _canvas_to_lonlat(region: SyntheticRegion, xy: F64) -> tuple[F64, F64]:
    t = region.layout.canvas.transform
    mx = t.c + xy[:, 0]
    my = t.f - xy[:, 1]
    lon, lat = _to_lonlat(region).transform(mx, my)
    return np.asarray(lon), np.asarray(lat)


def _osm_xml(region: SyntheticRegion, rng: np.random.Generator) -> str:
    """OSM XML (EPSG:4326) of the roads, the river and the water areas."""
    node_ids: dict[tuple[float, float], int] = {}
    node_xy: list[tuple[float, float]] = []
    ways_out: list[tuple[list[int], dict[str, str]]] = []

    def node(x: float, y: float) -> int:
        key = (round(x, 3), round(y, 3))
        if key not in node_ids:
            node_ids[key] = len(node_xy) + 1
            node_xy.append(key)
        return node_ids[key]

    for way in region.ways:
        line = LineString(way.coords)
        # curvy roads and the river are densely sampled: thin them (street-grid ways are
        # kept as they are, so that crossing streets share their junction nodes)
        coords = line.simplify(0.3).coords if len(line.coords) > 30 else line.coords
        tags = dict(way.tags)
        if way.width:
            tags["width"] = f"{way.width:.1f}"
        ways_out.append(([node(x, y) for x, y in coords], tags))
    for poly, tags in region.water_areas:
        ring = list(shapely.simplify(poly, 0.5).exterior.coords)[:-1]
        refs = [node(x, y) for x, y in ring]
        ways_out.append(([*refs, refs[0]], dict(tags)))
    xy = np.asarray(node_xy, np.float64)
    xy = xy + rng.normal(0, region.config.osm_jitter_m / math.sqrt(2), xy.shape)
    lon, lat = _canvas_to_lonlat(region, xy)
    lines = [
        "<?xml version='1.0' encoding='UTF-8'?>",
        f'<osm version="0.6" generator="lcip.synthetic {__version__}">',
        f'  <bounds minlat="{lat.min():.7f}" minlon="{lon.min():.7f}" '
        f'maxlat="{lat.max():.7f}" maxlon="{lon.max():.7f}"/>',
    ]
    lines += [
        f'  <node id="{i + 1}" version="1" lat="{la:.7f}" lon="{lo:.7f}"/>'
        for i, (lo, la) in enumerate(zip(lon, lat, strict=True))
    ]
    for k, (refs, tags) in enumerate(ways_out, start=1):
        lines.append(f'  <way id="{k}" version="1">')
        lines += [f'    <nd ref="{r}"/>' for r in refs]
        lines += [f"    <tag k={quoteattr(a)} v={quoteattr(b)}/>" for a, b in tags.items()]
        lines.append("  </way>")
    lines.append("</osm>")
    return "\n".join(lines) + "\n"


def _buildings_geojson(region: SyntheticRegion, rng: np.random.Generator) -> str:
    """Footprints (EPSG:4326): ~``footprint_drop_rate`` dropped, the rest shifted."""
    cfg = region.config
    n = len(region.buildings)
    keep = np.flatnonzero(rng.random(n) >= cfg.footprint_drop_rate)
    shift = rng.normal(0, cfg.footprint_jitter_m / math.sqrt(2), (n, 2))
    transform = _to_lonlat(region)
    t = region.layout.canvas.transform
    features = []
    for i in keep:
        xy = np.asarray(region.buildings[i].exterior.coords) + shift[i]
        lon, lat = transform.transform(t.c + xy[:, 0], t.f - xy[:, 1])
        ring = [[round(float(a), 8), round(float(b), 8)] for a, b in zip(lon, lat, strict=True)]
        if len(ring) > 3:
            # exterior counter-clockwise (RFC 7946): canvas rows point down, so reverse
            ring = ring[::-1]
        features.append(
            {
                "type": "Feature",
                "properties": {
                    "id": int(i) + 1,
                    "height": round(float(region.building_heights[i]), 1),
                },
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    return json.dumps({"type": "FeatureCollection", "features": features}, separators=(",", ":"))


def write_region(region: SyntheticRegion, out_dir: Path) -> Path:
    """Write a generated region's files (see the module docstring) and its manifest.

    Args:
        region: the region from :func:`synthesize`.
        out_dir: region folder (created; existing files are replaced atomically).

    Returns:
        the manifest path.
    """
    cfg, layout = region.config, region.layout
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    tags = {
        "generator": "lcip.synthetic",
        "lcip_version": __version__,
        "seed": cfg.seed,
        "region": cfg.name,
    }
    tick = _Stopwatch()
    lc_cmap, nlcd_cmap = lc_colormap(), nlcd_colormap()
    rng = _rngs(cfg.seed)[9]

    nlcd_path = write_raster(
        out_dir / "nlcd_30m.tif",
        region.nlcd,
        layout.nlcd,
        nodata=0,
        tags={**tags, "layer": "nlcd"},
        band_names=["nlcd"],
        colormap=nlcd_cmap,
    )
    write_raster(
        out_dir / "nlcd_30m_clean.tif",
        region.nlcd_clean,
        layout.nlcd,
        nodata=0,
        tags={**tags, "layer": "nlcd_clean"},
        band_names=["nlcd"],
        colormap=nlcd_cmap,
    )
    osm_path = out_dir / "osm.xml"
    write_text(osm_path, _osm_xml(region, rng))
    bld_path = out_dir / "buildings.geojson"
    write_text(bld_path, _buildings_geojson(region, rng))
    tick("vectors")

    tiles = []
    ts = cfg.tile_size
    for (tid, grid), split in zip(layout.tiles.items(), cfg.tile_splits(), strict=True):
        rows, cols = layout.tile_window(tid)
        r, c = divmod(cfg.tile_ids().index(tid), cfg.tiles_x)
        naip = region.naip[:, r * ts : (r + 1) * ts, c * ts : (c + 1) * ts]
        lc = region.lc[rows, cols]
        nlcd = region.nlcd[
            np.arange(rows.start, rows.stop)[:, None] // _NLCD_BLOCK,
            np.arange(cols.start, cols.stop)[None, :] // _NLCD_BLOCK,
        ]
        t_tags = {**tags, "tile": tid}
        paths = {
            "naip": write_raster(
                out_dir / "naip" / f"{tid}.tif",
                naip,
                grid,
                tags={**t_tags, "layer": "naip"},
                band_names=["red", "green", "blue", "nir"],
            ),
            "lc": write_raster(
                out_dir / "lc" / f"{tid}.tif",
                lc,
                grid,
                nodata=0,
                tags={**t_tags, "layer": "lc"},
                band_names=["lc"],
                colormap=lc_cmap,
            ),
            "nlcd": write_raster(
                out_dir / "nlcd" / f"{tid}.tif",
                nlcd,
                grid,
                nodata=0,
                tags={**t_tags, "layer": "nlcd"},
                band_names=["nlcd"],
                colormap=nlcd_cmap,
            ),
            "nlcd_30m": nlcd_path,
            "osm": osm_path,
            "buildings": bld_path,
        }
        tiles.append(Tile(tid, split, layout.region.crs.to_string(), grid.bounds, paths))

    tick("tiles")
    meta = {
        "generator": "lcip.synthetic",
        "lcip_version": __version__,
        "config": asdict(cfg),
        "canvas": {
            "transform": list(layout.canvas.transform)[:6],
            "shape": list(layout.canvas.shape),
        },
        "nlcd_grid": {
            "transform": list(layout.nlcd.transform)[:6],
            "shape": list(layout.nlcd.shape),
        },
        "stats": region.stats,
    }
    write_text(out_dir / "region.json", json.dumps(meta, indent=2, default=str) + "\n")
    return Manifest(tuple(tiles)).write(out_dir / "manifest.csv")


def generate_region(cfg: RegionConfig, out_dir: Path) -> Path:
    """Generate a synthetic region and write it under ``out_dir``.

    Args:
        cfg: region configuration.
        out_dir: region folder; files are (re)written atomically.

    Returns:
        the path of the region's ``manifest.csv``.
    """
    return write_region(synthesize(cfg), out_dir)
