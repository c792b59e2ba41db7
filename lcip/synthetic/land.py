"""The land: fields, forest patches, hedgerows, barren land and the paved town core."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely
from scipy import ndimage
from shapely.geometry import Polygon

from lcip.synthetic.arrays import I32, I64, Bool, Win
from lcip.synthetic.classes import BARREN, IMPERVIOUS, LOWVEG, TREE
from lcip.synthetic.geometry import Painter, blob, by_rows, rectangles, row_chunks
from lcip.synthetic.noise import NoiseBank
from lcip.synthetic.scene import Scene, jitter_colors

__all__ = [
    "Fields",
    "field_patchwork",
    "paint_barren",
    "paint_fields",
    "paint_forest",
    "paint_hedgerows",
    "pave_town_core",
]

#: Probabilities of the forest types of a patch (deciduous, evergreen, mixed).
_FOREST_P = (0.65, 0.15, 0.20)
#: NLCD codes of the field types (pasture, crops, grassland, shrub) and their probabilities.
_FIELD_TYPES = (81, 82, 71, 52)
_FIELD_P = (0.42, 0.33, 0.15, 0.10)
#: Colours (R, G, B, NIR) of the forest types.
_FOREST_BASE = ((60, 82, 64, 150), (45, 64, 54, 105), (54, 74, 60, 128))
#: Colours of the field types: pasture, crops (mature crops are dark green with a high NIR,
#: like trees), grassland, shrub.
_FIELD_BASE = ((95, 116, 82, 160), (74, 102, 64, 180), (112, 118, 88, 150), (80, 92, 68, 135))


def field_patchwork(
    rng: np.random.Generator, shape: tuple[int, int], angle: float
) -> tuple[I32, int]:
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
    for band, _ in row_chunks((slice(0, h), slice(0, w))):
        yy = (np.arange(band[0].start, band[0].stop, dtype=np.float32) + np.float32(0.5))[:, None]
        col = col_of[(xx * ca + yy * sa - np.float32(x_min)).astype(np.int32)]
        yr = yy * ca - xx * sa
        yr += row_off[col]
        yr /= row_h[col]
        out = fid[band]
        np.multiply(col, np.int32(n_rows), out=out)
        out += yr.astype(np.int32)
    return fid, n_cols * n_rows


@dataclass(frozen=True)
class Fields:
    """The patchwork of fields under everything else.

    Args:
        fid: field id per canvas pixel (0 .. n - 1).
        ftype: type of each field (index into the field types: pasture, crops, grassland,
            shrub).
        ids: object id of each field.
    """

    fid: I32
    ftype: npt.NDArray[np.intp]
    ids: I64

    @property
    def n(self) -> int:
        """Number of fields."""
        return len(self.ftype)


def paint_fields(
    rng: np.random.Generator, rng_col: np.random.Generator, scene: Scene
) -> tuple[Fields, Painter]:
    """Cover the canvas with fields of random types and colours (class ``LOWVEG``).

    Args:
        rng: the land stage's generator.
        rng_col: the colour generator.
        scene: the scene.

    Returns:
        the fields, and the painter of the canvas (all low vegetation, objects = fields).
    """
    fid, n_fields = field_patchwork(rng, scene.shape, scene.town.angle)
    ftype = rng.choice(len(_FIELD_TYPES), n_fields, p=_FIELD_P)
    field_base = np.array(_FIELD_BASE, float)
    fcol = jitter_colors(rng_col, field_base[ftype], n_fields, 0.14, 6, 20)
    dry = rng_col.random(n_fields) < 0.15  # dry / harvested fields: brownish, low NIR
    fcol[dry] = jitter_colors(rng_col, [135, 125, 100, 125], int(dry.sum()), 0.07, 5, 10)
    field_ids = scene.objs.add(fcol, 0.0, np.asarray(ftype) + 3)
    paint = Painter(scene.shape, LOWVEG, fid + np.int32(field_ids[0]))
    return Fields(fid, ftype, field_ids), paint


def paint_forest(rng: np.random.Generator, scene: Scene, noise: NoiseBank, paint: Painter) -> None:
    """Paint forest patches (class ``TREE``), less of them towards the town centre.

    Each connected patch is deciduous, evergreen or mixed.

    Args:
        rng: the land stage's generator.
        scene: the scene.
        noise: the canvas noise bank.
        paint: the canvas painter.
    """
    u = scene.u
    lc, obj = paint.lc, paint.obj
    ch, cw = scene.shape
    full = (slice(0, ch), slice(0, cw))

    def forest_mask(w: Win) -> Bool:
        f = noise.get(40, 0, w)
        f += np.float32(0.45) * noise.get(6, 0, w)
        f += np.float32(0.25) * noise.get(3, 0, w)
        return f > np.float32(0.45 * 1.13) + np.float32(2.2 * 1.13) * u[w]

    forest = by_rows(full, forest_mask)
    labels, n_lab = ndimage.label(forest)
    ptype = rng.choice(3, n_lab + 1, p=_FOREST_P).astype(np.int32)
    fbase = np.array(_FOREST_BASE, float)
    forest_ids = scene.objs.add(fbase, [16.0, 18.0, 17.0], [0, 1, 2])
    lut = (ptype + np.int32(forest_ids[0])).astype(np.int32)
    lc[forest] = TREE
    obj[forest] = lut[labels[forest]]


def paint_hedgerows(
    rng: np.random.Generator, scene: Scene, noise: NoiseBank, paint: Painter, fields: Fields
) -> None:
    """Paint hedgerows (class ``TREE``) along some field boundaries in the countryside.

    Args:
        rng: the land stage's generator.
        scene: the scene.
        noise: the canvas noise bank.
        paint: the canvas painter.
        fields: the fields.
    """
    u, fid = scene.u, fields.fid
    lc, obj = paint.lc, paint.obj
    ch, cw = scene.shape
    full = (slice(0, ch), slice(0, cw))
    hedge_flag = rng.random(fields.n) < 0.35
    bnd = np.zeros(scene.shape, bool)
    np.not_equal(fid[1:], fid[:-1], out=bnd[1:])
    bnd[:, 1:] |= fid[:, 1:] != fid[:, :-1]
    yy, xx = np.nonzero(bnd)
    drop = ~hedge_flag[fid[yy, xx]] | (u[yy, xx] >= 0.15)
    bnd[yy[drop], xx[drop]] = False
    del yy, xx, drop
    bnd = ndimage.maximum_filter(bnd.view(np.uint8), size=4).view(bool)
    bnd &= by_rows(full, lambda w: noise.above(3, 1, -0.5, w))
    bnd &= lc == LOWVEG
    fbase = np.array(_FOREST_BASE, float)
    hedge_id = scene.objs.add(fbase[0] * [1.05, 1.05, 1.05, 1.0], 9.0, 0)[0]
    lc[bnd], obj[bnd] = TREE, hedge_id


def paint_barren(
    rng: np.random.Generator,
    rng_col: np.random.Generator,
    scene: Scene,
    noise: NoiseBank,
    paint: Painter,
    fields: Fields,
    road_tree: shapely.STRtree,
    river_poly: Polygon,
) -> tuple[I64, list[Polygon]]:
    """Paint barren land: bare patches in crop fields, construction sites and dirt lots.

    Args:
        rng: the land stage's generator.
        rng_col: the colour generator.
        scene: the scene.
        noise: the canvas noise bank.
        paint: the canvas painter.
        fields: the fields.
        road_tree: spatial index of the paved road areas (sites keep off roads).
        river_poly: the river (sites keep off it).

    Returns:
        the ids of the barren objects (bare soil, sand, dirt) and the sites (construction
        sites and dirt lots).
    """
    town, u, fid, ftype, n_fields = scene.town, scene.u, fields.fid, fields.ftype, fields.n
    lc, obj = paint.lc, paint.obj
    ch, cw = scene.shape
    full = (slice(0, ch), slice(0, cw))
    barren_ids = scene.objs.add([[128, 116, 96, 112], [188, 178, 152, 160], [168, 158, 142, 148]])
    yy, xx = np.nonzero(by_rows(full, lambda w: noise.above(6, 1, 2.0, w)))
    ok = (ftype[fid[yy, xx] % n_fields] == 1) & (lc[yy, xx] == LOWVEG) & (u[yy, xx] < 0.15)
    lc[yy[ok], xx[ok]], obj[yy[ok], xx[ok]] = BARREN, barren_ids[0]
    sites: list[Polygon] = []
    for _ in range(300):
        if len(sites) >= 1 + int(scene.area_km2 * 0.6):
            break
        px, py = rng.uniform(0, cw), rng.uniform(0, ch)
        if not 0.05 < town.u_at(px, py) < 0.7:
            continue
        site = rectangles(
            np.array([px]),
            np.array([py]),
            rng.uniform(45, 110, 1),
            rng.uniform(40, 80, 1),
            np.array([town.angle]),
        )[0]
        if road_tree.query(site, predicate="intersects").size or site.intersects(river_poly):
            continue
        sites.append(site)
    for _ in range(int(scene.area_km2 / 2.5) + 1):
        px, py = rng.uniform(0, cw), rng.uniform(0, ch)
        if town.u_at(px, py) < 0.1:
            sites.append(blob(rng, float(px), float(py), float(rng.uniform(20, 40)), 0.2))
    site_col = jitter_colors(rng_col, [152, 136, 112, 122], len(sites), 0.08, 6, 10)
    site_ids = scene.objs.add(site_col) if sites else np.zeros(0, np.int64)
    paint.burn(sites, site_ids, BARREN, where=lambda w: noise.above(3, 2, -1.7, w))
    return barren_ids, sites


def pave_town_core(scene: Scene, noise: NoiseBank, paint: Painter) -> None:
    """Pave the town core (plazas, parking; class ``IMPERVIOUS``), with small green islands.

    Args:
        scene: the scene.
        noise: the canvas noise bank.
        paint: the canvas painter.
    """
    u = scene.u
    lc, obj = paint.lc, paint.obj
    paved_id = scene.objs.add([[120, 120, 117, 102]])[0]
    cw_ = paint.window(scene.town.polygon(0.35).bounds)
    if cw_ is not None:
        core = (u[cw_] + np.float32(0.05) * noise.get(15, 0, cw_) > 0.88) & noise.above(
            3, 3, -1.6, cw_
        )
        lc[cw_][core], obj[cw_][core] = IMPERVIOUS, paved_id
