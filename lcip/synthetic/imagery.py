"""NAIP-like imagery rendered from the truth: object colours, texture, cast shadows, noise."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from lcip.synthetic.arrays import F32, F64, I32, I64, U8, Bool
from lcip.synthetic.classes import LOWVEG, TREE, WATER
from lcip.synthetic.config import RegionConfig, RegionLayout
from lcip.synthetic.noise import coarse_noise, gauss_unit, white
from lcip.synthetic.scene import Objects

__all__ = ["render_naip"]


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


def render_naip(
    cfg: RegionConfig,
    rng: np.random.Generator,
    layout: RegionLayout,
    lc_c: U8,
    obj_c: I32,
    objs: Objects,
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

    Args:
        cfg: region configuration (texture, sensor noise, shadow strength).
        rng: the imagery stage's generator.
        layout: the grids.
        lc_c: the canvas truth.
        obj_c: the canvas object ids.
        objs: the registry of painted objects (colours, heights).
        fid_c: field id per canvas pixel.
        ftype: type of each field (crops get stronger row stripes).
        field_ids: object id of each field.
        u_c: urban intensity per canvas pixel.
        b_info: (n, 4) per building: centre x, centre y, orientation, gable roof (0 / 1).
        bld_ids: object id of each building (consecutive).

    Returns:
        the imagery (R, G, B, NIR) on the region grid.
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

    # random fields of the whole window: smooth (lf), NIR-only (nf), haze, fine (white noise -> hf)
    lf = coarse_noise(rng, (hw, ww), 14)
    nf = coarse_noise(rng, (hw, ww), 6)
    haze = coarse_noise(rng, (hw, ww), 200)
    fine = white(rng, (hw, ww))
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
            gauss_unit(fine[a:b], 1.3),
            stripes,
            field_ids,
            b_info,
            bld_ids,
            (sun_az, sun_el),
        )
        inner = (slice(s0 + halo - a, s1 + halo - a), slice(halo, halo + W))
        for k in range(4):
            band = ndimage.gaussian_filter(bands[k], 0.55, truncate=2.0)[inner]
            noise = white(rng, band.shape)
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
