"""Confidence of a map: how sure the model is, per pixel, as a float32 COG per tile.

Two measures of a probability vector p over C classes:

- ``max`` (the default): max_l p(l), in [1/C, 1]: the probability of the class the map shows.
  It is what a map user reads as "how sure", and it is the map's expected accuracy when the
  probabilities are calibrated.
- ``entropy``: the normalized entropy -sum_l p(l) log p(l) / log C, in [0, 1], 0 = certain.
  It also sees how the remaining mass is spread.

Computed from the ``r`` probabilities (the implied posterior; or ``q``), window by window;
NaN where the probabilities are nodata.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lcip.errors import ConfigError
from lcip.io.raster import Grid, open_raster, raster_writer
from lcip.products.mosaic import chunk_windows, confidence_kind

#: The confidence measures, by name.
MEASURES = ("max", "entropy")

#: The default measure.
DEFAULT_MEASURE = "max"


def check_measure(measure: str) -> str:
    """The measure, checked.

    Raises:
        ConfigError: ``map.confidence=<value>: must be one of max, entropy``.
    """
    if measure not in MEASURES:
        raise ConfigError(f"map.confidence={measure!r}: must be one of {', '.join(MEASURES)}")
    return measure


def confidence(
    prob: npt.NDArray[np.floating], measure: str = DEFAULT_MEASURE
) -> npt.NDArray[np.float32]:
    """Per-pixel confidence of probabilities (bands, H, W); NaN where any band is NaN.

    Args:
        prob: class probabilities, bands first.
        measure: ``max`` (max probability) or ``entropy`` (normalized entropy).

    Returns:
        float32 (H, W).
    """
    check_measure(measure)
    if measure == "max":  # a NaN band makes the max NaN: nodata stays nodata
        return np.asarray(prob, dtype=np.float32).max(axis=0)
    p = np.asarray(prob, dtype=np.float64)
    invalid = np.isnan(p).any(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    out = -plogp.sum(axis=0) / math.log(max(p.shape[0], 2))
    out[invalid] = np.nan
    return out.astype(np.float32)


def write_confidence(prob_path: Path, dst: Path, measure: str, tags: Mapping[str, str]) -> Path:
    """Write the confidence COG of one tile's probability raster, window by window.

    Args:
        prob_path: the tile's probability raster (``r_prob`` or ``q_prob``).
        dst: the COG to write (atomically), on the same grid.
        measure: ``max`` or ``entropy``.
        tags: its tags (provenance).

    Returns:
        ``dst``.
    """
    kind = confidence_kind(check_measure(measure))
    grid = Grid.of(prob_path)
    with (
        open_raster(prob_path) as src,
        raster_writer(
            dst,
            grid,
            1,
            kind.dtype,
            nodata=kind.nodata,
            tags=tags,
            band_names=list(kind.band_names),
            cog=True,
        ) as out,
    ):
        for window in chunk_windows(grid):
            out.write(confidence(src.read(window=window), measure)[None], window=window)
    return dst


__all__ = ["DEFAULT_MEASURE", "MEASURES", "check_measure", "confidence", "write_confidence"]
