"""Timing of one self-epitomic LSR window (scripts/bench_epitome.py and the GPU check)."""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
import torch

from lcip.classes import nlcd_to_index
from lcip.epitome.core import EpitomeParams, epitome_window


def random_mosaic(
    size: int = 1024, seed: int = 0
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Seeded random imagery in [0, 1] (4, size, size) and NLCD indices in 32 px blocks.

    Args:
        size: side in pixels (a multiple of 32).
        seed: the generator's seed.
    """
    rng = np.random.default_rng(seed)
    codes = rng.choice([21, 41, 81, 82], size=(size // 32, size // 32))
    nlcd = nlcd_to_index(np.kron(codes, np.ones((32, 32), np.uint8))).astype(np.int64)
    image = rng.random((4, size, size), dtype=np.float32)
    return image, nlcd


def time_window(
    image: npt.NDArray[np.float32],
    nlcd: npt.NDArray[np.int64],
    size: int,
    params: EpitomeParams,
    device: str,
) -> tuple[float, int, int]:
    """Seconds of :func:`~lcip.epitome.core.epitome_window` on a size x size window.

    A 64 px window runs first (the kernels' first calls), untimed; CUDA is synchronized around
    the timed call.

    Args:
        image: (4, H, W) imagery in [0, 1], H and W >= size.
        nlcd: (H, W) NLCD class indices.
        size: the window's side in pixels.
        params: the epitome's settings.
        device: a torch device (``cpu``, ``cuda``).

    Returns:
        (seconds, patches sampled, patch positions).
    """
    window = torch.from_numpy(image[:, :size, :size]).to(device)
    valid = torch.ones(size, size, dtype=torch.bool, device=device)
    classes = torch.from_numpy(nlcd[:size, :size]).to(device)
    matrix = torch.full((4, 17), 0.25, device=device)
    matrix[:, 1:] = torch.rand(4, 16, generator=torch.Generator().manual_seed(2)).to(device)
    matrix /= matrix.sum(0)
    small = (slice(None), slice(0, 64), slice(0, 64))
    epitome_window(
        window[small], valid[small[1:]], classes[small[1:]], matrix, params, torch.Generator()
    )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    epitome_window(window, valid, classes, matrix, params, torch.Generator().manual_seed(0))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    side = size // params.downsample - params.patch_size + 1
    return seconds, params.patches_for(size, size), side * side


__all__ = ["random_mosaic", "time_window"]
