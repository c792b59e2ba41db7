"""Benchmark the exact block blur against scipy's direct Gaussian filter on an NLCD-like tile.

Generates a realistic NLCD-like class map at 1 m (30 m blocks with a random offset, a few
spatially coherent classes), blurs its one-hot layers with
:func:`lcip.priors.blur.blur_onehot` (all 17 NLCD layers; absent ones cost nothing) and with
``scipy.ndimage.gaussian_filter`` on every *present* float32 one-hot layer (same sigma,
truncate and mode ``nearest``), and prints a markdown table of times, speed-up and the largest
absolute difference.

Example::

    python scripts/bench_blur.py --size 7000x6000 --classes 10
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from scipy import ndimage

from lcip.classes import NLCD_CODES
from lcip.priors.blur import blur_onehot

# NLCD classes common in the eastern US, in the order they are drawn (by --classes).
_COMMON = (21, 22, 41, 81, 23, 42, 43, 82, 11, 24, 90, 71, 52, 95, 31, 12)


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
    lut = np.array([NLCD_CODES.index(c) for c in _COMMON[:num_classes]], dtype=np.uint8)
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


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 7000x6000, got {text!r}") from None
    return h, w


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a markdown table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=_parse_size, default=(7000, 6000), help="HxW px (7000x6000)")
    p.add_argument("--classes", type=int, default=10, help="NLCD classes present (10)")
    p.add_argument("--sigma", type=float, default=31.0)
    p.add_argument("--truncate", type=float, default=4.0)
    p.add_argument("--rotate", type=float, default=0.0, help="rotate the 30 m grid (degrees)")
    p.add_argument("--repeat", type=int, default=2, help="timed runs of the fast method (best)")
    p.add_argument(
        "--baseline-layers",
        type=int,
        default=None,
        help="time scipy on only this many present layers (default: all present)",
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads for the fast method (1; 0: torch's)"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    threads = args.threads or None
    height, width = args.size
    if not 1 <= args.classes <= len(_COMMON):
        p.error(f"--classes must be in 1..{len(_COMMON)}")

    index = nlcd_like_map(height, width, args.classes, rotate=args.rotate, seed=args.seed)
    present = [int(k) for k in np.unique(index)]
    print(
        f"tile {height}x{width} px, {len(present)} NLCD classes present "
        f"{[NLCD_CODES[k] for k in present]}, sigma {args.sigma:g}, truncate {args.truncate:g}, "
        f"rotate {args.rotate:g} deg; {platform.processor() or platform.machine()}, "
        f"torch threads {threads or torch.get_num_threads()}, scipy single-threaded",
        file=sys.stderr,
    )

    blur_onehot(index[:512, :512], len(NLCD_CODES), args.sigma, args.truncate, threads=threads)
    fast_times = []
    fast: Any = None
    for _ in range(max(args.repeat, 1)):
        fast = None
        t0 = time.perf_counter()
        fast = blur_onehot(index, len(NLCD_CODES), args.sigma, args.truncate, threads=threads)
        fast_times.append(time.perf_counter() - t0)
        print(f"fast: {fast_times[-1]:.2f} s", file=sys.stderr)
    t_fast = min(fast_times)
    absent = [k for k in range(len(NLCD_CODES)) if k not in present]
    if any(np.any(fast[k]) for k in absent):
        raise AssertionError("absent classes must blur to exactly zero")

    layers = present if args.baseline_layers is None else present[: args.baseline_layers]
    t_base, max_diff = 0.0, 0.0
    for k in layers:
        t0 = time.perf_counter()
        onehot = (index == k).astype(np.float32)
        ref = ndimage.gaussian_filter(onehot, args.sigma, truncate=args.truncate, mode="nearest")
        dt = time.perf_counter() - t0
        t_base += dt
        diff = float(np.abs(fast[k] - ref).max())
        max_diff = max(max_diff, diff)
        print(f"scipy layer {NLCD_CODES[k]}: {dt:.1f} s, max abs diff {diff:.2e}", file=sys.stderr)
        del onehot, ref

    speedup = t_base / t_fast
    print()
    print("| method | layers | seconds | speedup | max abs diff |")
    print("|---|---|---|---|---|")
    print(
        f"| scipy.ndimage.gaussian_filter (float32, mode nearest) | {len(layers)} present "
        f"| {t_base:.1f} | 1.0x | (reference) |"
    )
    print(
        f"| lcip blur_onehot (exact block blur) | all 17 | {t_fast:.2f} | {speedup:.0f}x "
        f"| {max_diff:.1e} |"
    )
    if len(layers) < len(present):
        per_layer = t_base / len(layers)
        print(
            f"\nscipy timed on {len(layers)} of {len(present)} present layers; at "
            f"{per_layer:.1f} s per layer all present layers would take "
            f"{per_layer * len(present):.0f} s ({per_layer * len(present) / t_fast:.0f}x)."
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
