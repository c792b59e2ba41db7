"""The generated region in memory and :func:`synthesize`, which runs the generation stages."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from shapely.geometry import Polygon

from lcip.synthetic.arrays import F64, U8
from lcip.synthetic.buildings import Buildings, place_buildings
from lcip.synthetic.classes import LC_NAMES
from lcip.synthetic.config import RegionConfig, RegionLayout, region_layout
from lcip.synthetic.imagery import render_naip
from lcip.synthetic.land import (
    paint_barren,
    paint_fields,
    paint_forest,
    paint_hedgerows,
    pave_town_core,
)
from lcip.synthetic.nlcd import make_nlcd
from lcip.synthetic.noise import NoiseBank
from lcip.synthetic.roads import RoadNetwork, Way, build_roads, paint_roads
from lcip.synthetic.scene import make_scene
from lcip.synthetic.trees import plant_trees
from lcip.synthetic.water import (
    paint_water,
    place_marshes,
    place_ponds,
    trace_river,
    water_areas,
)

__all__ = ["Stopwatch", "SyntheticRegion", "stage_rngs", "synthesize"]

log = logging.getLogger(__name__)


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


def stage_rngs(seed: int) -> list[np.random.Generator]:
    """Independent generators for the stages (changing one stage leaves the others alone).

    Args:
        seed: the region's seed.

    Returns:
        ten generators: town, roads, water, land, buildings, trees, imagery, NLCD, colours
        (used by :func:`synthesize`) and vectors (used by
        :func:`~lcip.synthetic.write.write_region`).
    """
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(10)]


class Stopwatch:
    """Logs the time of each generation stage at DEBUG level."""

    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.cpu = time.process_time()

    def __call__(self, stage: str) -> None:
        """Log the time since the previous call (or the start) as that of ``stage``."""
        now, cpu = time.perf_counter(), time.process_time()
        log.debug("synthetic: %-12s %.2f s (cpu %.2f s)", stage, now - self.t, cpu - self.cpu)
        self.t, self.cpu = now, cpu


def synthesize(cfg: RegionConfig) -> SyntheticRegion:
    """Generate a region in memory (truth, imagery, NLCD, vectors).

    The stages run in a fixed order, each drawing from its own random generator (see
    :func:`stage_rngs`), on one canvas painted in layers: fields, forest, hedgerows, barren
    land and the town core, water, roads, parking lots and buildings, trees. NLCD codes and
    the imagery are then derived from the painted truth.

    Args:
        cfg: region configuration.

    Returns:
        the generated region.
    """
    tick = Stopwatch()
    layout = region_layout(cfg)
    rngs = stage_rngs(cfg.seed)
    r_town, r_road, r_water, r_land, r_build, r_tree, r_img, r_nlcd, r_col = rngs[:9]
    scene = make_scene(r_town, cfg, layout)
    tick("town")

    # vectors: river, roads, ponds, marshes
    river_way, river_poly, river_samples = trace_river(r_water, scene.town, scene.box)
    net = build_roads(r_road, scene, river_poly)
    tick("roads")
    ponds = place_ponds(r_water, scene, river_poly, net.tree)
    marshes = place_marshes(r_water, scene, river_samples)
    tick("ponds")

    # the painted truth, layer by layer
    noise = NoiseBank(r_land, scene.shape)
    fields, paint = paint_fields(r_land, r_col, scene)
    paint_forest(r_land, scene, noise, paint)
    tick("forest")
    paint_hedgerows(r_land, scene, noise, paint, fields)
    tick("hedges")
    barren_ids, sites = paint_barren(
        r_land, r_col, scene, noise, paint, fields, net.tree, river_poly
    )
    pave_town_core(scene, noise, paint)
    tick("barren")
    wet_src = paint_water(
        r_water,
        r_col,
        scene,
        noise,
        paint,
        river_poly,
        river_samples,
        ponds,
        marshes,
        int(barren_ids[1]),
    )
    tick("water")
    paint_roads(r_col, scene, paint, net)
    tick("roadpaint")
    obstacles = [*net.polys, river_poly.buffer(2), *[p.buffer(2) for p in ponds], *sites, *marshes]
    blds = place_buildings(r_build, r_col, scene, paint, net.ways, obstacles)
    tick("buildings")
    n_trees = plant_trees(r_tree, r_col, scene, paint, net.grid, blds.polys)
    tick("trees")

    # derived layers
    lc, obj = paint.lc, paint.obj
    nlcd_clean, nlcd = make_nlcd(r_nlcd, scene, lc, obj, wet_src, cfg.nlcd_error_rate)
    tick("nlcd")
    naip = render_naip(
        cfg,
        r_img,
        layout,
        lc,
        obj,
        scene.objs,
        fields.fid,
        fields.ftype,
        fields.ids,
        scene.u,
        blds.info,
        blds.ids,
    )
    tick("render")

    return SyntheticRegion(
        config=cfg,
        layout=layout,
        lc=lc,
        naip=naip,
        nlcd=nlcd,
        nlcd_clean=nlcd_clean,
        ways=[*net.ways, river_way],
        water_areas=water_areas(river_poly, ponds),
        buildings=blds.polys,
        building_heights=blds.heights,
        stats=_stats(layout, lc, nlcd, nlcd_clean, net, blds, ponds, sites, n_trees),
    )


def _stats(
    layout: RegionLayout,
    lc: U8,
    nlcd: U8,
    nlcd_clean: U8,
    net: RoadNetwork,
    blds: Buildings,
    ponds: list[Polygon],
    sites: list[Polygon],
    n_trees: int,
) -> dict[str, Any]:
    """Summary statistics of a generated region.

    Args:
        layout: the grids.
        lc: the canvas truth.
        nlcd: NLCD codes with errors.
        nlcd_clean: NLCD codes before the errors.
        net: the roads.
        blds: the buildings and parking lots.
        ponds: the ponds.
        sites: the barren sites.
        n_trees: the number of street and yard trees.

    Returns:
        class fractions of the region's truth, NLCD code counts and object counts.
    """
    H, W = layout.region.height, layout.region.width
    reg = lc[layout.row_off : layout.row_off + H, layout.col_off : layout.col_off + W]
    counts = np.bincount(reg.ravel(), minlength=7)
    return {
        "lc_fraction": {LC_NAMES[c]: round(float(counts[c]) / reg.size, 4) for c in range(1, 7)},
        "nlcd_counts": {
            int(c): int(n) for c, n in zip(*np.unique(nlcd, return_counts=True), strict=True)
        },
        "nlcd_perturbed_fraction": round(float((nlcd != nlcd_clean).mean()), 4),
        "buildings": len(blds.polys),
        "parking_lots": len(blds.lots),
        "roads": len(net.ways),
        "ponds": len(ponds),
        "barren_sites": len(sites),
        "trees": n_trees,
    }
