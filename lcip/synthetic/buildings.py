"""Buildings and parking lots: candidate lots along the roads, then disjoint placement."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import LineString, Polygon
from shapely.geometry.base import BaseGeometry

from lcip.synthetic.arrays import F64, I64, Bool
from lcip.synthetic.classes import IMPERVIOUS
from lcip.synthetic.geometry import Painter, greedy_disjoint, rectangles
from lcip.synthetic.roads import Way
from lcip.synthetic.scene import Scene, jitter_colors
from lcip.synthetic.town import Town

__all__ = ["Buildings", "frontage", "place_buildings"]

log = logging.getLogger(__name__)

#: Roof colours (R, G, B, NIR) and their probabilities.
_ROOFS = (
    (160, 160, 158, 140),
    (206, 206, 200, 190),
    (76, 78, 82, 70),
    (46, 58, 63, 38),
    (136, 84, 70, 86),
    (166, 148, 124, 124),
    (96, 118, 108, 96),
    (92, 104, 126, 92),
)
_ROOF_P = (0.22, 0.12, 0.22, 0.12, 0.12, 0.1, 0.05, 0.05)
#: Probability of a gable roof per zone (rural, suburban, urban, core).
_GABLE_P = (0.7, 0.7, 0.3, 0.0)


def frontage(rng: np.random.Generator, ways: Sequence[Way], town: Town) -> dict[str, F64]:
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


@dataclass(frozen=True)
class Buildings:
    """The placed buildings and parking lots.

    Args:
        polys: building polygons (canvas pixel coordinates).
        heights: building heights in metres.
        ids: object id of each building (consecutive).
        info: (n, 4) per building: centre x, centre y, orientation and whether the roof is a
            gable roof (1) or flat (0).
        lots: parking lot polygons.
    """

    polys: list[Polygon]
    heights: F64
    ids: I64
    info: F64
    lots: list[Polygon]


def _keep_candidates(
    rng: np.random.Generator,
    scene: Scene,
    fr: dict[str, F64],
    rects: npt.NDArray[np.object_],
    obstacles: Sequence[BaseGeometry],
) -> Bool:
    """Choose disjoint candidates, clear of the obstacles; accessory buildings last.

    Args:
        rng: the building stage's generator.
        scene: the scene.
        fr: the candidates (see :func:`frontage`).
        rects: the candidates' rectangles.
        obstacles: shapes the candidates must keep 1 m off.

    Returns:
        which candidates are kept.
    """
    bad = ~shapely.contains_xy(scene.box.buffer(-1), fr["cx"], fr["cy"])
    hit, _ = shapely.STRtree(rects).query(
        np.asarray([g.buffer(1.0) for g in obstacles], dtype=object), predicate="intersects"
    )[::-1]
    bad[hit] = True
    prio = np.where(fr["kind"] == 1, 1.0, 0.0) + rng.random(len(rects)) * 0.5
    order = np.argsort(prio, kind="stable")
    order = order[~bad[order]]
    keep = greedy_disjoint(rects, order, 1.5)
    log.debug("buildings: %d candidates, %d blocked, %d kept", len(rects), bad.sum(), keep.sum())
    return keep


def place_buildings(
    rng: np.random.Generator,
    rng_col: np.random.Generator,
    scene: Scene,
    paint: Painter,
    roads: Sequence[Way],
    obstacles: Sequence[BaseGeometry],
) -> Buildings:
    """Place and paint parking lots and buildings (class ``IMPERVIOUS``) along the roads.

    Args:
        rng: the building stage's generator.
        rng_col: the colour generator.
        scene: the scene.
        paint: the canvas painter.
        roads: the roads.
        obstacles: shapes buildings keep off (roads, water, barren sites, marshes).

    Returns:
        the buildings and parking lots.
    """
    objs = scene.objs
    fr = frontage(rng, roads, scene.town)
    rects = rectangles(fr["cx"], fr["cy"], fr["w"], fr["d"], fr["angle"])
    keep = _keep_candidates(rng, scene, fr, rects, obstacles)
    is_lot = keep & (fr["kind"] == 2)
    is_bld = keep & (fr["kind"] != 2)
    lots = list(rects[is_lot])
    lot_ids = objs.add(jitter_colors(rng_col, [112, 112, 110, 96], len(lots), 0.12, 3, 6))
    paint.burn(lots, lot_ids, IMPERVIOUS)
    buildings = list(rects[is_bld])
    b_height = fr["height"][is_bld]
    roofs = np.array(_ROOFS, float)
    rk = rng_col.choice(len(roofs), len(buildings), p=np.array(_ROOF_P))
    bcol = jitter_colors(rng_col, roofs[rk], len(buildings), 0.08, 4, 6)
    bld_ids = objs.add(bcol, b_height)
    paint.burn(buildings, bld_ids, IMPERVIOUS)
    gable = rng_col.random(len(buildings)) < np.array(_GABLE_P)[fr["zone"][is_bld].astype(int)]
    b_info = np.stack([fr["cx"][is_bld], fr["cy"][is_bld], fr["angle"][is_bld], gable], 1)
    return Buildings(buildings, b_height, bld_ids, b_info, lots)
