"""Configuration of a synthetic region, its tile splits and its grids (layout)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError

from lcip.errors import ConfigError
from lcip.io.raster import Grid

__all__ = ["NLCD_BLOCK", "RegionConfig", "RegionLayout", "default_splits", "region_layout"]

#: Size (pixels of 1 m) of the 30 m NLCD blocks.
NLCD_BLOCK = 30


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
        if not all(0 <= o < NLCD_BLOCK for o in self.nlcd_offset_m):
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
    pad = NLCD_BLOCK * math.ceil(cfg.margin_m / NLCD_BLOCK)
    col_off = pad + cfg.nlcd_offset_m[0]
    row_off = pad + cfg.nlcd_offset_m[1]
    cw = NLCD_BLOCK * math.ceil((col_off + width + cfg.margin_m) / NLCD_BLOCK)
    ch = NLCD_BLOCK * math.ceil((row_off + height + cfg.margin_m) / NLCD_BLOCK)
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
            Affine(float(NLCD_BLOCK), 0.0, cx0, 0.0, -float(NLCD_BLOCK), cy0),
            ch // NLCD_BLOCK,
            cw // NLCD_BLOCK,
        ),
        row_off=row_off,
        col_off=col_off,
        tiles=tiles,
    )
