"""NLCD codes from the truth: 30 m block composition, the NLCD rules and simulated errors."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from lcip.classes import NLCD_CODES
from lcip.synthetic.arrays import F64, I32, U8, Bool
from lcip.synthetic.config import NLCD_BLOCK
from lcip.synthetic.scene import Scene

__all__ = [
    "COMMON_NLCD",
    "NLCD_CONFUSIONS",
    "block_fractions",
    "make_nlcd",
    "nlcd_like_map",
    "nlcd_rules",
]

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
#: Vegetation NLCD codes an object can stand for (index = column of the block counts).
_VEG_CODES = (41, 42, 43, 81, 82, 71, 52)


def _block_index(shape: tuple[int, int], block: int) -> I32:
    """Row-major index of the ``block`` x ``block`` block of every pixel."""
    wb = shape[1] // block
    rows = (np.arange(shape[0], dtype=np.int32) // block) * np.int32(wb)
    cols = np.arange(shape[1], dtype=np.int32) // block
    return rows[:, None] + cols[None, :]


def block_fractions(lc: U8, block: int = NLCD_BLOCK) -> F64:
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
    """NLCD codes of 30 m blocks from their composition (the rules of :mod:`lcip.synthetic`).

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
    hb, wb = lc.shape[0] // NLCD_BLOCK, lc.shape[1] // NLCD_BLOCK
    nv = len(_VEG_CODES)
    counts = np.zeros((hb, wb, 7), np.int64)
    veg_counts = np.zeros((hb, wb, nv + 1), np.int64)
    step = 32  # block rows at a time, to bound the temporaries
    for b0 in range(0, hb, step):
        b1 = min(hb, b0 + step)
        rows = slice(b0 * NLCD_BLOCK, b1 * NLCD_BLOCK)
        blk = _block_index((rows.stop - rows.start, lc.shape[1]), NLCD_BLOCK)
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
    frac = counts / float(NLCD_BLOCK**2)
    forest_code = np.asarray(_VEG_CODES[:3], np.uint8)[veg_counts[..., :3].argmax(-1)]
    field_code = np.asarray(_VEG_CODES[3:], np.uint8)[veg_counts[..., 3:nv].argmax(-1)]
    ys, xs = np.nonzero(wet_src)
    wet_blocks = np.zeros((hb, wb), bool)
    wet_blocks[ys // NLCD_BLOCK, xs // NLCD_BLOCK] = True
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


def make_nlcd(
    rng: np.random.Generator, scene: Scene, lc: U8, obj: I32, wet_src: Bool, error_rate: float
) -> tuple[U8, U8]:
    """NLCD codes of the canvas's 30 m blocks, before and after the simulated errors.

    Args:
        rng: the NLCD stage's generator.
        scene: the scene (town and object registry).
        lc: the canvas truth.
        obj: the canvas object ids.
        wet_src: canvas mask of river and marsh water.
        error_rate: fraction of blocks given a plausible wrong code.

    Returns:
        the codes from the definitions and the codes with errors.
    """
    hb, wb = scene.layout.nlcd.shape
    urban = scene.town.u_at(
        (np.arange(wb) + 0.5)[None, :] * NLCD_BLOCK, (np.arange(hb) + 0.5)[:, None] * NLCD_BLOCK
    )
    nlcd_clean = _nlcd_from_truth(lc, obj, scene.objs.tables()[2], urban, wet_src)
    return nlcd_clean, _perturb_nlcd(rng, nlcd_clean, error_rate)


#: NLCD codes in the order :func:`nlcd_like_map` adds them (the most common first).
COMMON_NLCD: tuple[int, ...] = (21, 22, 41, 81, 23, 42, 43, 82, 11, 24, 90, 71, 52, 95, 31, 12)


def nlcd_like_map(
    height: int,
    width: int,
    num_classes: int,
    *,
    block: int = 30,
    rotate: float = 0.0,
    seed: int = 0,
) -> npt.NDArray[np.uint8]:
    """An NLCD-like map of NLCD indices (0..16) at 1 m: spatially coherent 30 m blocks.

    Args:
        height: rows (px).
        width: columns (px).
        num_classes: number of NLCD classes present (1..16).
        block: block size in px (30 for NLCD at 1 m).
        rotate: rotation of the block grid in degrees (0: axis-aligned, like NLCD on a grid in
            its own CRS; a few degrees: like NLCD reprojected from Albers to UTM).
        seed: random seed.

    Returns:
        uint8 array (height, width) of indices into ``NLCD_CODES``.
    """
    rng = np.random.default_rng(seed)
    ny, nx = height // block + 3, width // block + 3
    if rotate:
        ny = nx = int(np.hypot(height, width) / block) + 3
    # Coherent patches: argmax of a few smoothed noise fields, with block-level speckle.
    fields = ndimage.gaussian_filter(rng.standard_normal((num_classes, ny, nx)), (0, 3, 3))
    fields += 0.15 * rng.standard_normal(fields.shape)
    fields += np.linspace(0.3, -0.3, num_classes)[:, None, None]  # some classes more common
    coarse = np.argmax(fields, axis=0)
    lut = np.array([NLCD_CODES.index(c) for c in COMMON_NLCD[:num_classes]], dtype=np.uint8)
    coarse_idx = lut[coarse]
    oy, ox = (int(v) for v in rng.integers(0, block, 2))
    if not rotate:
        big = np.repeat(np.repeat(coarse_idx, block, axis=0), block, axis=1)
        return np.ascontiguousarray(big[oy : oy + height, ox : ox + width])
    # Nearest-neighbour sampling of a rotated block grid at the pixel centres.
    theta = np.deg2rad(rotate)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    cy, cx = height / 2, width / 2
    u = np.cos(theta) * (xx - cx) - np.sin(theta) * (yy - cy) + nx * block / 2 + ox
    v = np.sin(theta) * (xx - cx) + np.cos(theta) * (yy - cy) + ny * block / 2 + oy
    ii = np.clip((v // block).astype(np.intp), 0, ny - 1)
    jj = np.clip((u // block).astype(np.intp), 0, nx - 1)
    return coarse_idx[ii, jj]
