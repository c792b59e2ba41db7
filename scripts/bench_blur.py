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
import torch
from scipy import ndimage

from lcip.classes import NLCD_CODES
from lcip.priors.blur import blur_onehot
from lcip.synthetic.nlcd import COMMON_NLCD, nlcd_like_map


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
    if not 1 <= args.classes <= len(COMMON_NLCD):
        p.error(f"--classes must be in 1..{len(COMMON_NLCD)}")

    index = nlcd_like_map(height, width, args.classes, rotate=args.rotate, seed=args.seed)
    present = [int(k) for k in np.unique(index)]
    print(
        f"tile {height}x{width} px, {len(present)} NLCD classes present "
        f"{[NLCD_CODES[k] for k in present]}, sigma {args.sigma:g}, truncate {args.truncate:g}, "
        f"rotate {args.rotate:g} deg; {platform.processor() or platform.machine()}, "
        f"torch threads {threads or torch.get_num_threads()}, scipy single-threaded",
        file=sys.stderr,
    )

    nlcd = len(NLCD_CODES)
    opts: dict[str, Any] = {"sigma": args.sigma, "truncate": args.truncate, "threads": threads}
    blur_onehot(index[:512, :512], nlcd, **opts)  # warm-up (imports, allocator)

    # 1. The plain call: a fresh (H, W) float32 output per layer, all 17 NLCD layers.
    fresh_times = []
    fresh: Any = None
    for _ in range(max(args.repeat, 1)):
        fresh = None
        t0 = time.perf_counter()
        fresh = blur_onehot(index, nlcd, **opts)
        fresh_times.append(time.perf_counter() - t0)
        print(f"fast, fresh output: {fresh_times[-1]:.2f} s", file=sys.stderr)
    if any(np.any(fresh[k]) for k in range(nlcd) if k not in present):
        raise AssertionError("absent classes must blur to exactly zero")

    # 2. Steady state: the present layers written into a reused, already touched buffer.
    select = np.eye(nlcd)[present]
    buf = np.ones((len(present), height, width), dtype=np.float32)
    out_times = []
    for _ in range(max(args.repeat, 1)):
        t0 = time.perf_counter()
        blur_onehot(index, nlcd, weights=select, out=buf, **opts)
        out_times.append(time.perf_counter() - t0)
        print(f"fast, reused output buffer: {out_times[-1]:.2f} s", file=sys.stderr)
    for i, k in enumerate(present):
        if not np.array_equal(buf[i], fresh[k]):
            raise AssertionError("out= and fresh outputs differ")
    del fresh

    # 3. Baseline: scipy on every present float32 one-hot layer, buffers preallocated.
    layers = present if args.baseline_layers is None else present[: args.baseline_layers]
    mask = np.empty((height, width), dtype=bool)
    onehot = np.zeros((height, width), dtype=np.float32)
    ref = np.zeros((height, width), dtype=np.float32)
    diff = np.zeros((height, width), dtype=np.float32)
    t_base, max_diff = 0.0, 0.0
    for k in layers:
        t0 = time.perf_counter()
        np.equal(index, k, out=mask)
        onehot[...] = mask
        ndimage.gaussian_filter(
            onehot, args.sigma, truncate=args.truncate, mode="nearest", output=ref
        )
        dt = time.perf_counter() - t0
        t_base += dt
        np.subtract(buf[present.index(k)], ref, out=diff)
        layer_diff = float(np.abs(diff, out=diff).max())
        max_diff = max(max_diff, layer_diff)
        print(
            f"scipy layer {NLCD_CODES[k]}: {dt:.1f} s, max abs diff {layer_diff:.2e}",
            file=sys.stderr,
        )

    t_fresh, t_out = min(fresh_times), min(out_times)
    n = len(present)
    # Speed-ups compare equal work: scipy's time per layer times the present layers.
    t_all = t_base / len(layers) * n
    print()
    print("| method | layers | seconds | speedup | max abs diff |")
    print("|---|---|---|---|---|")
    print(
        f"| scipy.ndimage.gaussian_filter (float32, mode nearest, preallocated buffers) "
        f"| {len(layers)} present | {t_base:.1f} | 1.0x | (reference) |"
    )
    print(
        f"| lcip blur_onehot, fresh output array | all 17 ({n} present) | {t_fresh:.2f} "
        f"| {t_all / t_fresh:.0f}x | {max_diff:.1e} |"
    )
    print(
        f"| lcip blur_onehot, reused output buffer (out=) | {n} present | {t_out:.2f} "
        f"| {t_all / t_out:.0f}x | {max_diff:.1e} |"
    )
    if len(layers) < n:
        per_layer = t_base / len(layers)
        print(
            f"\nscipy timed on {len(layers)} of {n} present layers; at {per_layer:.1f} s per "
            f"layer all present layers would take {per_layer * n:.0f} s (the speed-ups use "
            f"that figure)."
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
