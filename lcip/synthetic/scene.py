"""The scene being built: canvas, town, urban intensity and the registry of painted objects."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from shapely.geometry import Polygon, box

from lcip.synthetic.arrays import F32, F64, I64
from lcip.synthetic.config import RegionConfig, RegionLayout
from lcip.synthetic.town import Town, place_town

__all__ = ["Objects", "Scene", "jitter_colors", "make_scene"]


class Objects:
    """Registry of painted objects: colour (R, G, B, NIR), height, NLCD vegetation type."""

    def __init__(self) -> None:
        self.colors: list[F64] = [np.array([[100.0, 100.0, 100.0, 100.0]])]
        self.heights: list[F64] = [np.zeros(1)]
        self.veg: list[npt.NDArray[np.int8]] = [np.full(1, -1, np.int8)]
        self.count = 1

    def add(
        self, colors: npt.ArrayLike, heights: npt.ArrayLike = 0.0, veg: int | npt.ArrayLike = -1
    ) -> I64:
        """Register objects.

        Args:
            colors: (R, G, B, NIR) colour of each object, (4,) or (n, 4).
            heights: height (m) of each object, or one for all.
            veg: vegetation type of each object (index into the NLCD vegetation codes;
                -1 for none), or one for all.

        Returns:
            the new objects' ids (consecutive).
        """
        cols = np.atleast_2d(np.asarray(colors, dtype=np.float64))
        n = cols.shape[0]
        ids = np.arange(self.count, self.count + n, dtype=np.int64)
        self.colors.append(cols)
        self.heights.append(np.broadcast_to(np.asarray(heights, np.float64), (n,)).copy())
        self.veg.append(np.broadcast_to(np.asarray(veg, np.int8), (n,)).copy())
        self.count += n
        return ids

    def tables(self) -> tuple[F32, F32, npt.NDArray[np.int8]]:
        """Colour (n, 4), height (n,) and vegetation type (n,) of every object id."""
        return (
            np.concatenate(self.colors).astype(np.float32),
            np.concatenate(self.heights).astype(np.float32),
            np.concatenate(self.veg),
        )


def jitter_colors(
    rng: np.random.Generator, base: npt.ArrayLike, n: int, bright: float, band: float, nir: float
) -> F64:
    """N colours around ``base`` ((4,) or (n, 4)): a brightness factor plus per-band jitter."""
    b = np.broadcast_to(np.asarray(base, np.float64), (n, 4)) * rng.normal(1.0, bright, (n, 1))
    b[:, :3] += rng.normal(0, band, (n, 3))
    b[:, 3] += rng.normal(0, nir, n)
    return b


@dataclass(frozen=True)
class Scene:
    """What every stage of the generation reads: the canvas, the town and the objects.

    Args:
        layout: the grids.
        shape: (height, width) of the canvas.
        box: the canvas as a polygon (canvas pixel coordinates).
        area_km2: area of the canvas in km².
        town: the town.
        u: urban intensity per canvas pixel.
        objs: the registry of painted objects (stages add to it).
    """

    layout: RegionLayout
    shape: tuple[int, int]
    box: Polygon
    area_km2: float
    town: Town
    u: F32
    objs: Objects


def make_scene(rng: np.random.Generator, cfg: RegionConfig, layout: RegionLayout) -> Scene:
    """Start a scene: place the town and map its urban intensity over the canvas.

    Args:
        rng: the town stage's generator.
        cfg: region configuration.
        layout: the grids.

    Returns:
        the scene, with an empty object registry (but for the nodata object 0).
    """
    ch, cw = layout.canvas.shape
    shape = (ch, cw)
    town = place_town(rng, cfg, layout)
    return Scene(
        layout=layout,
        shape=shape,
        box=box(0, 0, cw, ch),
        area_km2=ch * cw / 1e6,
        town=town,
        u=town.u_map(shape),
        objs=Objects(),
    )
