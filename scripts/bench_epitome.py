"""Benchmark self-epitomic LSR (lcip.epitome.core): seconds per window, and against a direct loop.

Prints a markdown table (figures for BENCHMARKS.md):

1. on a small window (``--loop-size`` px), the posterior + embedding + EM of lcip's vectorized
   torch code against a direct implementation (Python loops over patches and positions, the
   squared distance of each patch at each position; EM by loops over label / class pairs),
   on the same patches; the maps they give agree (max difference printed) and the ratio of
   their times is the speed-up; the loop's cost at 512 px is extrapolated by the number of
   (patch, position) pairs, which both costs scale with;
2. the whole method (:func:`lcip.epitome.core.epitome_window`: epitome, patches, posterior,
   embedding, EM, upsampling) on windows of ``--sizes`` px with the default settings
   (0.05 W^2 patches of 7 x 7 on the 2x downsampled imagery, sigma^2 = 0.01).

The imagery is real: the 16 Chesapeake WV patches of ``../shared/realdata`` (256 px each)
tiled into a 1024 px mosaic, with their NLCD; windows are cut from its top-left corner. Without
that folder, seeded random imagery with 32 px NLCD blocks is used (the timings do not depend
on the content, except for the EM's iterations).

Usage: ``python scripts/bench_epitome.py [--sizes 256 512 1024] [--device cpu]``
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import rasterio
import torch

from lcip.classes import nlcd_to_index
from lcip.epitome.core import (
    EpitomeParams,
    class_embedding,
    downsample_classes,
    downsample_image,
    em,
    embed,
    extract_patches,
    position_validity,
    sample_patches,
)
from lcip.epitome.reference import direct_em, direct_embedding
from lcip.epitome.timing import random_mosaic, time_window
from lcip.stages.demo import machine_description

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
WV = Path(os.environ.get("LCIP_REALDATA", REALDATA)) / "chesapeake_wv_patches"


def mosaic() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], str]:
    """A 1024 px mosaic of imagery in [0, 1] (4, H, W), its NLCD indices and their source."""
    patches = sorted(WV.glob("*/*/naip.tif"))
    if len(patches) >= 16:
        rows = []
        for r in range(4):
            row = [(_read(p), _read(p.parent / "nlcd.tif")[0]) for p in patches[4 * r : 4 * r + 4]]
            rows.append((np.concatenate([a for a, _ in row], 2), np.hstack([b for _, b in row])))
        image = np.concatenate([a for a, _ in rows], 1).astype(np.float32) / np.float32(255)
        nlcd = nlcd_to_index(np.vstack([b for _, b in rows])).astype(np.int64)
        return image, nlcd, f"{WV} (16 real 256 px patches)"
    image, nlcd = random_mosaic(1024, seed=0)
    return image, nlcd, "seeded random imagery (no real data found)"


def _read(path: Path) -> npt.NDArray[np.uint8]:
    with rasterio.open(path) as src:
        data: npt.NDArray[np.uint8] = src.read()
    return data


def compare_with_loop(
    image: npt.NDArray[np.float32], nlcd: npt.NDArray[np.int64], size: int, params: EpitomeParams
) -> dict[str, float]:
    """Posterior + embedding + EM on a small window: vectorized vs loops (seconds, agreement)."""
    window = torch.from_numpy(image[:, :size, :size]).double()
    valid = torch.ones(size, size, dtype=torch.bool)
    mu, mu_valid = downsample_image(window, valid, params.downsample)
    classes_lr = downsample_classes(torch.from_numpy(nlcd[:size, :size]), params.downsample)
    k = params.patch_size
    positions = sample_patches(
        mu_valid, classes_lr, k, params.patches_for(size, size), torch.Generator().manual_seed(0)
    )
    patches = extract_patches(mu, positions, k)
    patch_classes = classes_lr[positions[:, 0] + k // 2, positions[:, 1] + k // 2]
    ok = position_validity(mu_valid, k)
    matrix = torch.rand(4, 17, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    matrix /= matrix.sum(0)
    iterations = 20

    def vectorized_run() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e = embed(patches, patch_classes, mu, ok, params.sigma2)
        present, p_mn_c, p_c = class_embedding(e, patch_classes)
        p_l, _ = em(p_mn_c, p_c, matrix[:, present], tol=0.0, max_iter=iterations)
        return p_l, present, p_c

    vectorized_run()  # warm-up (first calls of the kernels)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fast, present, p_c = vectorized_run()
        times.append(time.perf_counter() - start)
    vectorized = min(times)

    start = time.perf_counter()
    e_loop = direct_embedding(
        patches.numpy(), patch_classes.numpy(), mu.numpy(), ok.numpy(), params.sigma2
    )
    idx = present.numpy()
    p_mn_c_loop = e_loop[idx] / e_loop[idx].sum((1, 2), keepdims=True)
    slow = direct_em(p_mn_c_loop, p_c.numpy(), matrix.numpy()[:, idx], iterations)
    loop = time.perf_counter() - start
    pairs = len(patches) * ok.numel()
    return {
        "patches": len(patches),
        "positions": ok.numel(),
        "vectorized_s": vectorized,
        "loop_s": loop,
        "ratio": loop / vectorized,
        "max_diff": float(np.nanmax(np.abs(torch.nan_to_num(fast).numpy() - slow))),
        "loop_s_per_pair": loop / pairs,
    }


def machine(device: str) -> str:
    """A one-line description of the machine."""
    cpu = machine_description()["cpu"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if device.startswith("cuda") else ""
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads{gpu}; load average {load:.1f} at start"
    )


def main() -> None:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--loop-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    params = EpitomeParams()
    image, nlcd, source = mosaic()
    print(f"machine: {machine(args.device)}")
    print(f"imagery: {source}\n")
    small = compare_with_loop(image, nlcd, args.loop_size, params)
    pairs_512 = (
        params.patches_for(512, 512) * (512 // params.downsample - params.patch_size + 1) ** 2
    )
    print(
        f"| {args.loop_size} px window ({small['patches']:.0f} patches x "
        f"{small['positions']:.0f} positions) | seconds |\n| --- | ---: |\n"
        f"| direct loops (float64) | {small['loop_s']:.2f} |\n"
        f"| lcip vectorized (float64, cpu) | {small['vectorized_s']:.3f} |\n"
        f"| ratio | {small['ratio']:.0f}x |\n"
        f"| max difference of p(l \\| m, n) | {small['max_diff']:.1e} |\n"
        f"| direct loops at 512 px (extrapolated) | {small['loop_s_per_pair'] * pairs_512:.0f} |\n"
    )
    print(f"| window (px) | patches | positions | seconds ({args.device}, float32) |")
    print("| ---: | ---: | ---: | ---: |")
    for size in args.sizes:
        seconds, patches, positions = time_window(image, nlcd, size, params, args.device)
        print(f"| {size} | {patches} | {positions} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
