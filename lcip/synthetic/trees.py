"""Trees in and around town: street trees along residential streets and yard trees."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from shapely.geometry import LineString, Polygon

from lcip.synthetic.arrays import F64, U8
from lcip.synthetic.classes import LOWVEG, ROAD, TREE
from lcip.synthetic.geometry import Painter
from lcip.synthetic.roads import Way
from lcip.synthetic.scene import Scene, jitter_colors

__all__ = ["plant_trees", "street_trees", "yard_trees"]


def street_trees(rng: np.random.Generator, streets: Sequence[Way]) -> F64:
    """Rows of trees along some sides of some streets.

    Args:
        rng: the tree stage's generator.
        streets: the residential streets.

    Returns:
        (n, 4) trees: x, y, crown radius, height.
    """
    t_street: list[F64] = []
    for way in streets:
        if rng.random() > 0.55:
            continue
        line = LineString(way.coords)
        for side in (-1.0, 1.0):
            if rng.random() > 0.85:
                continue
            dist = np.cumsum(rng.uniform(8, 14, int(line.length / 8) + 1))
            dist = dist[dist < line.length]
            if dist.size == 0:
                continue
            a_p = shapely.line_interpolate_point(line, np.clip(dist - 1, 0, None))
            b_p = shapely.line_interpolate_point(line, dist + 1)
            tx = shapely.get_x(b_p) - shapely.get_x(a_p)
            ty = shapely.get_y(b_p) - shapely.get_y(a_p)
            nrm = np.hypot(tx, ty) + 1e-9
            off = way.width / 2 + rng.uniform(1.5, 4.0, dist.size)
            c = shapely.line_interpolate_point(line, dist)
            px = shapely.get_x(c) - ty / nrm * off * side
            py = shapely.get_y(c) + tx / nrm * off * side
            t_street.append(
                np.stack(
                    [px, py, rng.uniform(2.5, 4.8, dist.size), rng.uniform(8, 16, dist.size)],
                    1,
                )
            )
    return np.concatenate(t_street) if t_street else np.zeros((0, 4))


def yard_trees(rng: np.random.Generator, scene: Scene, lc: U8) -> F64:
    """Yard trees, dense in the suburbs, sparse in the countryside, only on low vegetation.

    Args:
        rng: the tree stage's generator.
        scene: the scene.
        lc: the canvas truth so far.

    Returns:
        (n, 4) trees: x, y, crown radius, height.
    """
    ch, cw = scene.shape
    n_try = int(ch * cw / 150)
    yx, yy_ = rng.uniform(0, cw, n_try), rng.uniform(0, ch, n_try)
    uu = scene.town.u_at(yx, yy_)
    dens = np.where((uu > 0.15) & (uu < 0.75), 1.0, 0.0) + 0.015 * (uu <= 0.15)
    ok = rng.random(n_try) < dens * 0.4
    yx, yy_ = yx[ok], yy_[ok]
    ok = lc[yy_.astype(int), yx.astype(int)] == LOWVEG
    yx, yy_ = yx[ok], yy_[ok]
    return np.stack([yx, yy_, rng.uniform(2.0, 5.0, yx.size), rng.uniform(6, 15, yx.size)], 1)


def plant_trees(
    rng: np.random.Generator,
    rng_col: np.random.Generator,
    scene: Scene,
    paint: Painter,
    streets: Sequence[Way],
    buildings: Sequence[Polygon],
) -> int:
    """Paint yard trees (on low vegetation) and street trees (also over roads), not on buildings.

    Args:
        rng: the tree stage's generator.
        rng_col: the colour generator.
        scene: the scene.
        paint: the canvas painter.
        streets: the residential streets.
        buildings: the buildings (trees touching one are dropped).

    Returns:
        the number of trees painted.
    """
    t_street = street_trees(rng, streets)
    t_yard = yard_trees(rng, scene, paint.lc)
    n_trees = 0
    b_tree = shapely.STRtree(np.asarray(buildings, dtype=object)) if buildings else None
    for arr, allowed in ((t_yard, (LOWVEG,)), (t_street, (LOWVEG, ROAD))):
        if arr.shape[0] == 0:
            continue
        disks = shapely.buffer(shapely.points(arr[:, 0], arr[:, 1]), arr[:, 2], quad_segs=3)
        if b_tree is not None:
            okd = np.ones(len(disks), bool)
            okd[b_tree.query(disks, predicate="intersects")[0]] = False
            disks, arr = disks[okd], arr[okd]
        tcol = jitter_colors(rng_col, [62, 86, 64, 152], arr.shape[0], 0.08, 4, 14)
        ids = scene.objs.add(tcol, arr[:, 3], 0)
        paint.burn(list(disks), ids, TREE, allowed=allowed)
        n_trees += arr.shape[0]
    return n_trees
