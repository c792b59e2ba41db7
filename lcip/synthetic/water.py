"""Water: the meandering river, ponds, marshes, riparian trees and sand bars."""

from __future__ import annotations

import math

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry import LineString, Polygon

from lcip.synthetic.arrays import F64, I64, Bool
from lcip.synthetic.classes import BARREN, LOWVEG, TREE, WATER
from lcip.synthetic.geometry import Painter, blob, by_rows, ellipse, parts, sub_mask
from lcip.synthetic.noise import NoiseBank, smooth1d
from lcip.synthetic.roads import Way
from lcip.synthetic.scene import Scene
from lcip.synthetic.town import Town

__all__ = [
    "paint_water",
    "place_marshes",
    "place_ponds",
    "sand_bars",
    "trace_river",
    "water_areas",
]


def trace_river(
    rng: np.random.Generator, town: Town, canvas_box: Polygon
) -> tuple[Way, Polygon, F64]:
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
    heading += 0.25 * smooth1d(rng, s.size, 150 / step)
    x = np.cumsum(np.cos(heading) * step)
    y = np.cumsum(np.sin(heading) * step)
    x, y = x - x[n] + px, y - y[n] + py
    width = rng.uniform(22, 38) * np.clip(1 + 0.3 * smooth1d(rng, s.size, 120 / step), 0.45, 1.8)
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
    coords = max(parts(centre), key=lambda g: g.length).coords
    way = Way(np.asarray(coords), {"waterway": "river", "name": "Synthetic River"})
    return way, poly, np.stack([x, y, heading, curv, width], axis=1)


def place_ponds(
    rng: np.random.Generator, scene: Scene, river_poly: Polygon, road_tree: shapely.STRtree
) -> list[Polygon]:
    """Ponds (and one lake) in the countryside, away from the river, roads and each other.

    Args:
        rng: the water stage's generator.
        scene: the scene.
        river_poly: the river.
        road_tree: spatial index of the paved road areas.

    Returns:
        the pond polygons (canvas pixel coordinates).
    """
    ch, cw = scene.shape
    ponds: list[Polygon] = []
    n_ponds = 2 + rng.poisson(1.2 * scene.area_km2)
    cand = rng.uniform([0, 0], [cw, ch], (200, 2))
    radii = np.exp(rng.normal(math.log(35), 0.5, 200))
    radii[0] = rng.uniform(70, 130)  # one lake
    pts = shapely.points(cand)
    free = scene.town.u_at(cand[:, 0], cand[:, 1]) <= 0.5
    shapely.prepare(river_poly)
    free &= ~shapely.dwithin(river_poly, pts, radii * 1.8 + 25)
    free[road_tree.query(pts, predicate="dwithin", distance=radii * 1.8 + 15)[0]] = False
    for kp in np.flatnonzero(free):
        if len(ponds) >= n_ponds:
            break
        pond = blob(rng, float(cand[kp, 0]), float(cand[kp, 1]), float(radii[kp]))
        if any(pond.distance(p) < 20 for p in ponds):
            continue
        ponds.append(pond)
    return ponds


def place_marshes(rng: np.random.Generator, scene: Scene, river_samples: F64) -> list[Polygon]:
    """Marshes next to the river, in the countryside, at least 400 m apart.

    Args:
        rng: the water stage's generator.
        scene: the scene.
        river_samples: (n, 5) river centreline samples (x, y, heading, curvature, width).

    Returns:
        the marsh polygons (ellipses along the river).
    """
    marshes: list[Polygon] = []
    rx, ry, rh, _, rw = river_samples.T
    ok = (scene.town.u_at(rx, ry) < 0.08) & shapely.contains_xy(scene.box.buffer(-40), rx, ry)
    cands = np.flatnonzero(ok)
    for _ in range(1 + int(scene.area_km2 / 6)):
        if cands.size == 0:
            break
        k = int(rng.choice(cands))
        sgn = rng.choice([-1.0, 1.0])
        a, b = rng.uniform(50, 110), rng.uniform(35, 75)
        off = rw[k] / 2 + b * 0.7
        mx, my = rx[k] - math.sin(rh[k]) * off * sgn, ry[k] + math.cos(rh[k]) * off * sgn
        marshes.append(ellipse(float(mx), float(my), float(a), float(b), float(rh[k])))
        cands = cands[np.hypot(rx[cands] - rx[k], ry[cands] - ry[k]) > 400]
    return marshes


def sand_bars(rng: np.random.Generator, scene: Scene, river_samples: F64) -> list[Polygon]:
    """Sand bars on the inside of the river's sharpest rural bends.

    Args:
        rng: the water stage's generator.
        scene: the scene.
        river_samples: (n, 5) river centreline samples (x, y, heading, curvature, width).

    Returns:
        the sand bar polygons (ellipses).
    """
    rx, ry, rh, rc, rw = river_samples.T
    bars: list[Polygon] = []
    rural = (scene.town.u_at(rx, ry) < 0.3) & shapely.contains_xy(scene.box, rx, ry)
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
    for k in peaks[: 2 + int(scene.area_km2)]:
        inner = 1.0 if sm_curv[k] > 0 else -1.0
        across = rng.uniform(7, 14)
        off = rw[k] / 2 - across * 0.35
        bx, by = rx[k] - math.sin(rh[k]) * off * inner, ry[k] + math.cos(rh[k]) * off * inner
        bars.append(
            ellipse(float(bx), float(by), float(rng.uniform(18, 40)), float(across), float(rh[k]))
        )
    return bars


def _water_objects(rng: np.random.Generator, scene: Scene, n_ponds: int) -> tuple[int, I64, I64]:
    """Register the water stage's objects.

    Args:
        rng: the colour generator.
        scene: the scene.
        n_ponds: number of ponds.

    Returns:
        the riparian trees' id, the marsh vegetation ids (herbaceous, woody) and the water
        ids (river, marsh pools, then one per pond).
    """
    objs = scene.objs
    rip_id = int(objs.add([[58, 84, 62, 140]], 13.0, 0)[0])
    marsh_veg = objs.add([[80, 100, 70, 125], [55, 76, 60, 120]], [0.0, 8.0], [5, 0])
    pond_col = np.stack(
        [
            rng.uniform(35, 70, n_ponds),
            rng.uniform(50, 85, n_ponds),
            rng.uniform(50, 72, n_ponds),
            rng.uniform(15, 40, n_ponds),
        ],
        1,
    )
    water_ids = objs.add(np.concatenate([[[44, 62, 66, 24], [48, 62, 52, 34]], pond_col]))
    return rip_id, marsh_veg, water_ids


def _paint_marsh(
    noise: NoiseBank, paint: Painter, marsh: Polygon, veg_ids: I64, pool_id: int
) -> None:
    """Paint a marsh: herbaceous vegetation with patches of shrubs / trees and pools.

    Args:
        noise: the canvas noise bank.
        paint: the canvas painter.
        marsh: the marsh polygon.
        veg_ids: ids of the herbaceous and woody marsh vegetation.
        pool_id: id of the marsh pools.
    """
    lc, obj = paint.lc, paint.obj
    win, burnt = paint.rasterize([marsh], [1])
    if win is None:
        return
    mask = burnt > 0
    wood = mask & noise.above(6, 3, 0.5, win)
    lcw, objw = lc[win], obj[win]
    lcw[mask], objw[mask] = LOWVEG, veg_ids[0]
    lcw[wood], objw[wood] = TREE, veg_ids[1]
    pools = mask & noise.above(3, 4, 0.8, win)
    lcw[pools], objw[pools] = WATER, pool_id


def paint_water(
    rng: np.random.Generator,
    rng_col: np.random.Generator,
    scene: Scene,
    noise: NoiseBank,
    paint: Painter,
    river_poly: Polygon,
    river_samples: F64,
    ponds: list[Polygon],
    marshes: list[Polygon],
    bar_id: int,
) -> Bool:
    """Paint riparian trees, marshes, the river, the ponds and the river's sand bars.

    Args:
        rng: the water stage's generator (sand bars).
        rng_col: the colour generator.
        scene: the scene.
        noise: the canvas noise bank.
        paint: the canvas painter.
        river_poly: the river.
        river_samples: (n, 5) river centreline samples (x, y, heading, curvature, width).
        ponds: the ponds.
        marshes: the marshes.
        bar_id: object id of the sand bars.

    Returns:
        the canvas mask of river and marsh water (where NLCD wetlands can be).
    """
    lc, obj, u = paint.lc, paint.obj, scene.u
    rip_id, marsh_veg, water_ids = _water_objects(rng_col, scene, len(ponds))
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
            & by_rows(rwin, lambda w: noise.above(6, 2, -0.3, w))
            & (lcw == LOWVEG)
        )
        lcw[rip], objw[rip] = TREE, rip_id
    for m in marshes:
        _paint_marsh(noise, paint, m, marsh_veg, int(water_ids[1]))
    wet_src = lc == WATER  # marsh pools so far
    if rwin is not None:
        river_mask = rzone == 3
        lc[rwin][river_mask], obj[rwin][river_mask] = WATER, water_ids[0]
        wet_src[rwin] |= river_mask
    paint.burn(ponds, water_ids[2:], WATER)
    bars = sand_bars(rng, scene, river_samples)
    if rwin is not None:
        near_river = rzone >= 2
        paint.burn(
            bars,
            np.full(len(bars), bar_id),
            BARREN,
            where=lambda w: sub_mask(near_river, rwin, w),
        )
    return wet_src


def water_areas(river_poly: Polygon, ponds: list[Polygon]) -> list[tuple[Polygon, dict[str, str]]]:
    """The water areas of the OSM data: the river's polygons and the ponds (or lakes).

    Args:
        river_poly: the river.
        ponds: the ponds.

    Returns:
        (polygon, OSM tags) of each area.
    """
    areas: list[tuple[Polygon, dict[str, str]]] = [
        (p, {"natural": "water", "water": "river", "name": "Synthetic River"})
        for p in parts(river_poly)
        if isinstance(p, Polygon)
    ]
    for i, p in enumerate(ponds):
        kind = "lake" if p.area > 12000 else "pond"
        areas.append((p, {"natural": "water", "water": kind, "name": f"{kind.title()} {i + 1}"}))
    return areas
