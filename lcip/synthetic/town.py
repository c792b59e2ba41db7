"""The town: its centre, irregular outline and urban-to-rural gradient."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from shapely.geometry import Polygon

from lcip.synthetic.arrays import F32, F64
from lcip.synthetic.config import RegionConfig, RegionLayout
from lcip.synthetic.noise import Coarse

__all__ = ["Town", "place_town"]


class Town:
    """The town: centre, irregular radius and the urban intensity u in [0, 1]."""

    def __init__(self, rng: np.random.Generator, cx: float, cy: float, radius: float) -> None:
        self.cx, self.cy, self.radius = cx, cy, radius
        self.k = np.arange(2, 6)
        self.amp = rng.normal(0, 0.12, 4) / np.sqrt(self.k - 1)
        self.phase = rng.uniform(0, 2 * np.pi, 4)
        self.angle = float(rng.uniform(-0.6, 0.6))

    def rad(self, th: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """The town's radius (m) in the directions ``th`` (radians)."""
        r = 1 + np.sum(
            self.amp[:, None] * np.cos(self.k[:, None] * th.ravel()[None] + self.phase[:, None]), 0
        )
        return np.asarray(self.radius * np.clip(r, 0.5, 1.6)).reshape(th.shape)

    def rho(self, x: npt.NDArray[Any], y: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Distance of points from the centre, relative to the radius in their direction."""
        dx, dy = x - self.cx, y - self.cy
        return np.asarray(np.hypot(dx, dy) / self.rad(np.arctan2(dy, dx)))

    def u_at(self, x: npt.ArrayLike, y: npt.ArrayLike) -> F64:
        """Urban intensity (0 rural .. 1 core) at canvas points (``x``, ``y``)."""
        rho = self.rho(np.asarray(x, np.float64), np.asarray(y, np.float64))
        return np.asarray(np.clip(1.15 - rho, 0.0, 1.0), np.float64)

    def polygon(self, rho: float) -> Polygon:
        """The town outline scaled by ``rho`` (1 = the town's radius)."""
        th = np.linspace(0, 2 * np.pi, 180, endpoint=False)
        r = self.rad(th) * rho
        return Polygon(np.stack([self.cx + r * np.cos(th), self.cy + r * np.sin(th)], axis=1))

    def u_map(self, shape: tuple[int, int], f: int = 4) -> F32:
        """Urban intensity per pixel of a canvas of ``shape`` (computed ``f`` times coarser)."""
        ys = (np.arange(shape[0] // f + 3) - 0.5) * f
        xs = (np.arange(shape[1] // f + 3) - 0.5) * f
        u = self.u_at(xs[None, :], ys[:, None]).astype(np.float32)
        return Coarse(u, f).window(slice(0, shape[0]), slice(0, shape[1]))


def place_town(rng: np.random.Generator, cfg: RegionConfig, layout: RegionLayout) -> Town:
    """Place the town near the middle of the region.

    Args:
        rng: the town stage's generator.
        cfg: region configuration (``town_radius_m``).
        layout: the grids.

    Returns:
        the town, centred in the middle 30 % of the region in each direction.
    """
    W, H = layout.region.width, layout.region.height
    radius = cfg.town_radius_m or max(0.32 * math.sqrt(W * H), 160.0)
    return Town(
        rng,
        layout.col_off + W * rng.uniform(0.35, 0.65),
        layout.row_off + H * rng.uniform(0.35, 0.65),
        radius,
    )
