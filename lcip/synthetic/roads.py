"""The road network: main roads crossing the canvas and the town's street grid."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import LineString, Polygon
from shapely.geometry.base import BaseGeometry

from lcip.synthetic.arrays import F64
from lcip.synthetic.classes import ROAD
from lcip.synthetic.geometry import Painter, curvy_path, parts
from lcip.synthetic.scene import Scene
from lcip.synthetic.town import Town

__all__ = ["RoadNetwork", "Way", "build_roads", "main_roads", "paint_roads", "street_grid"]


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


def main_roads(
    rng: np.random.Generator, town: Town, canvas_box: Polygon, area_km2: float
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
        path = curvy_path(rng, centre, heading, half, 10.0, 0.35, 300.0, straight)
        for part in parts(LineString(path).intersection(canvas_box)):
            if part.length > 30:
                tags = {
                    "highway": kind,
                    "name": f"{names[kind]} {k + 1}",
                    "lanes": "2" if kind != "primary" else "4",
                }
                ways.append(Way(np.asarray(part.coords), tags, float(width)))
    return ways


def street_grid(
    rng: np.random.Generator, town: Town, avoid: BaseGeometry, main_buf: BaseGeometry
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


@dataclass(frozen=True)
class RoadNetwork:
    """The roads of the region.

    Args:
        main: primary, secondary and tertiary roads.
        grid: residential streets of the town.
        ways: all roads (``main`` then ``grid``).
        polys: the paved area of each road of ``ways``.
        tree: spatial index of ``polys``.
    """

    main: list[Way]
    grid: list[Way]
    ways: list[Way]
    polys: list[Polygon]
    tree: shapely.STRtree


def build_roads(rng: np.random.Generator, scene: Scene, river_poly: Polygon) -> RoadNetwork:
    """Lay out the main roads, then the street grid around them and away from the river.

    Args:
        rng: the road stage's generator.
        scene: the scene.
        river_poly: the river (streets keep 10 m from it).

    Returns:
        the road network.
    """
    town = scene.town
    main = main_roads(rng, town, scene.box, scene.area_km2)
    main_buf = shapely.union_all([LineString(w.coords).buffer(w.width / 2 + 10) for w in main])
    grid = street_grid(rng, town, river_poly.buffer(10), main_buf)
    roads = main + grid
    road_lines = [LineString(w.coords) for w in roads]
    road_polys = [
        ln.buffer(w.width / 2, quad_segs=4) for ln, w in zip(road_lines, roads, strict=True)
    ]
    return RoadNetwork(main, grid, roads, road_polys, shapely.STRtree(road_polys))


def paint_roads(rng: np.random.Generator, scene: Scene, paint: Painter, net: RoadNetwork) -> None:
    """Paint the roads (class ``ROAD``), primary roads darker than the others.

    Args:
        rng: the colour generator.
        scene: the scene (roads are registered in its objects).
        paint: the canvas painter.
        net: the road network.
    """
    rcol = np.array(
        [
            [82, 84, 88, 72] if w.tags["highway"] == "primary" else [100, 100, 101, 86]
            for w in net.ways
        ],
        float,
    )
    rcol *= rng.normal(1.0, 0.09, (len(net.ways), 1))
    road_ids = scene.objs.add(rcol)
    paint.burn(net.polys, road_ids, ROAD)
