"""Quicklook PNGs: imagery and class maps side by side in the scheme's standard colours."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from lcip.classes import IGNORE_INDEX, ClassScheme
from lcip.io.atomic import atomic_write


def colorize(classes: npt.NDArray[np.integer], scheme: ClassScheme) -> npt.NDArray[np.uint8]:
    """RGB image of a class map (ignored pixels black).

    Args:
        classes: class indices, :data:`IGNORE_INDEX` for nodata.
        scheme: class scheme (colours).

    Returns:
        uint8 array (H, W, 3).
    """
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: scheme.num_classes] = np.asarray(scheme.colors, dtype=np.uint8)
    lut[IGNORE_INDEX] = 0
    return lut[np.asarray(classes, dtype=np.uint8)]


def image_rgb(
    image: npt.NDArray[np.number], percentiles: tuple[float, float] = (1, 99)
) -> npt.NDArray[np.uint8]:
    """Percentile-stretched RGB of the first three bands of a (bands, H, W) image."""
    rgb = np.moveaxis(np.asarray(image[:3], dtype=np.float32), 0, -1)
    lo, hi = np.percentile(rgb, percentiles)
    return (np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def save_quicklook(
    path: str | Path,
    image: npt.NDArray[np.number],
    panels: Sequence[tuple[str, npt.NDArray[np.integer]]],
    scheme: ClassScheme,
    title: str | None = None,
    ncols: int | None = None,
    ignored: bool = False,
) -> Path:
    """Write a PNG: the imagery, then one panel per class map, with a legend.

    Args:
        path: destination PNG (written atomically).
        image: imagery (bands, H, W), the first three bands shown as RGB.
        panels: (title, class map) pairs.
        scheme: class scheme (colours and legend).
        title: figure title.
        ncols: panels per row (default: all in one row).
        ignored: add a black "no data / ignored" entry to the legend.

    Returns:
        the destination path.
    """
    path = Path(path)
    n = 1 + len(panels)
    cols = min(ncols or n, n)
    rows = -(-n // cols)
    lines = max([1, *(name.count("\n") + 1 for name, _ in panels)])
    height = 3.2 + 0.2 * lines
    fig = Figure(figsize=(3.2 * cols, height * rows + 0.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    axes[0].imshow(image_rgb(image))
    axes[0].set_title("imagery", fontsize=10)
    for ax, (name, classes) in zip(axes[1:], panels, strict=False):
        ax.imshow(colorize(classes, scheme), interpolation="nearest")
        ax.set_title(name, fontsize=10)
    for ax in axes:
        ax.set_axis_off()
    handles = [
        Patch(color=(c[0] / 255, c[1] / 255, c[2] / 255), label=name)
        for name, c in zip(scheme.classes, scheme.colors, strict=True)
    ]
    if ignored:
        handles.append(Patch(color="black", label="no data / ignored"))
    # constrained layout keeps every panel title clear of the row above (square images in
    # cells of another shape defeat tight_layout) and puts the legend below the panels
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    fig.set_figheight(height * rows + 0.5 + (0.45 if title else 0.0))
    if title:
        fig.suptitle(title, fontsize=13)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    return path
