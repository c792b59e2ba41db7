"""Geometry helpers: paths, shapes, disjoint selection, raster windows and the painter.

Coordinates are canvas pixel coordinates: x = column, y = row, 1 unit = 1 m.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from affine import Affine
from rasterio.features import rasterize
from shapely.geometry import MultiLineString, MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from lcip.synthetic.arrays import F64, I32, Bool, Win
from lcip.synthetic.noise import smooth1d

__all__ = [
    "Painter",
    "blob",
    "by_rows",
    "curvy_path",
    "ellipse",
    "greedy_disjoint",
    "parts",
    "rectangles",
    "row_chunks",
    "sub_mask",
]


def curvy_path(
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
    dev = smooth1d(rng, s.size, sigma_m / step) * wiggle
    if straight_m > 0:
        dev *= np.clip((np.abs(s) - straight_m) / straight_m, 0.0, 1.0)
    h = heading + dev
    x = np.cumsum(np.cos(h) * step)
    y = np.cumsum(np.sin(h) * step)
    return np.stack([x - x[n] + centre[0], y - y[n] + centre[1]], axis=1)


def parts(geom: BaseGeometry) -> list[Any]:
    """The single parts of a (multi-part) geometry."""
    if geom.is_empty:
        return []
    if isinstance(geom, (MultiLineString, MultiPolygon)) or geom.geom_type == "GeometryCollection":
        return [p for g in geom.geoms for p in parts(g)]
    return [geom]


def blob(
    rng: np.random.Generator, cx: float, cy: float, radius: float, rough: float = 0.15
) -> Polygon:
    """An irregular round polygon (polar radius with a few random harmonics)."""
    th = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    r = np.ones_like(th)
    for k in range(2, 6):
        r += rng.normal(0, rough / math.sqrt(k - 1)) * np.cos(k * th + rng.uniform(0, 2 * np.pi))
    r = radius * np.clip(r, 0.4, 1.8)
    return Polygon(np.stack([cx + r * np.cos(th), cy + r * np.sin(th)], axis=1))


def ellipse(cx: float, cy: float, a: float, b: float, angle: float) -> Polygon:
    """An ellipse centred at (``cx``, ``cy``), semi-axes ``a`` along ``angle`` and ``b`` across."""
    th = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    x, y = a * np.cos(th), b * np.sin(th)
    ca, sa = math.cos(angle), math.sin(angle)
    return Polygon(np.stack([cx + x * ca - y * sa, cy + x * sa + y * ca], axis=1))


def rectangles(cx: F64, cy: F64, w: F64, d: F64, angle: F64) -> npt.NDArray[np.object_]:
    """Rotated rectangles (w along ``angle``, d across) as an array of polygons."""
    ca, sa = np.cos(angle), np.sin(angle)
    ux, uy = ca * w / 2, sa * w / 2
    vx, vy = -sa * d / 2, ca * d / 2
    xs = np.stack([cx - ux - vx, cx + ux - vx, cx + ux + vx, cx - ux + vx], axis=1)
    ys = np.stack([cy - uy - vy, cy + uy - vy, cy + uy + vy, cy - uy + vy], axis=1)
    return np.asarray(shapely.polygons(np.stack([xs, ys], axis=2)))


def greedy_disjoint(
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


def row_chunks(win: Win, step: int = 512) -> Iterator[tuple[Win, Win]]:
    """Split a window into bands of rows: (window of the band, band within ``win``)."""
    rows, cols = win
    for r in range(rows.start, rows.stop, step):
        r1 = min(rows.stop, r + step)
        yield (slice(r, r1), cols), (slice(r - rows.start, r1 - rows.start), slice(None))


def by_rows(win: Win, fn: Callable[[Win], Bool]) -> Bool:
    """A boolean mask of ``win`` computed band by band (bounded temporaries)."""
    out = np.empty((win[0].stop - win[0].start, win[1].stop - win[1].start), bool)
    for band, local in row_chunks(win):
        out[local] = fn(band)
    return out


def sub_mask(mask: Bool, mask_win: Win, win: Win) -> Bool:
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


class Painter:
    """The canvas truth (``lc``) and object ids (``obj``), painted with rasterized shapes.

    Shapes are rasterized within their joint bounding window only, which keeps painting many
    small objects cheap on a large canvas.
    """

    def __init__(self, shape: tuple[int, int], code: int, obj: I32) -> None:
        self.shape = shape
        self.lc = np.full(shape, code, np.uint8)
        self.obj = obj.astype(np.int32, copy=False)

    def window(self, bounds: Sequence[float]) -> Win | None:
        """The canvas window covering ``bounds`` (minx, miny, maxx, maxy); None if empty."""
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
