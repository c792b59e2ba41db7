"""Chesapeake ``lc`` classes of the synthetic truth and the colour tables of its rasters."""

from __future__ import annotations

from lcip.classes import NLCD_CODES, NLCD_COLORS

__all__ = [
    "BARREN",
    "IMPERVIOUS",
    "LC_CODES",
    "LC_COLORS",
    "LC_NAMES",
    "LOWVEG",
    "ROAD",
    "TREE",
    "WATER",
    "lc_colormap",
    "nlcd_colormap",
]

#: Chesapeake ``lc`` codes: 0 nodata, 1 water, 2 tree canopy, 3 low vegetation, 4 barren,
#: 5 impervious (other), 6 impervious (road).
LC_CODES: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
#: Names of :data:`LC_CODES`.
LC_NAMES: tuple[str, ...] = (
    "nodata",
    "water",
    "tree canopy",
    "low vegetation",
    "barren",
    "impervious (other)",
    "impervious (road)",
)
#: Colours of :data:`LC_CODES` (those of TorchGeo's ChesapeakeCVPR, roads dark grey).
LC_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (0, 197, 255),
    (38, 115, 0),
    (163, 255, 115),
    (255, 170, 0),
    (156, 156, 156),
    (78, 78, 78),
)
#: The ``lc`` codes by name.
WATER, TREE, LOWVEG, BARREN, IMPERVIOUS, ROAD = 1, 2, 3, 4, 5, 6


def lc_colormap() -> dict[int, tuple[int, int, int, int]]:
    """Colour table for Chesapeake ``lc`` rasters (code -> RGBA)."""
    return {c: (*rgb, 255 if c else 0) for c, rgb in zip(LC_CODES, LC_COLORS, strict=True)}


def nlcd_colormap() -> dict[int, tuple[int, int, int, int]]:
    """Colour table for NLCD code rasters (code -> RGBA, the official NLCD legend)."""
    return {c: (*rgb, 255 if c else 0) for c, rgb in zip(NLCD_CODES, NLCD_COLORS, strict=True)}
