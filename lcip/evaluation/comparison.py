"""Priors side by side: their argmax scored on the same tiles, and their mean absolute difference.

The arithmetic of ``lcip-compare-priors`` (:mod:`lcip.stages.compare_priors`):
:func:`comparison_manifest` keeps the labelled tiles every prior covers,
:func:`mean_abs_differences` sums ``|a - b|`` strip by strip (never a whole tile in memory) and
:func:`mean_abs_difference` turns the sums into ``MAD(a, b)``, the mean over pixels valid in both
and over classes; :func:`prior_comparison_rows` and :func:`prior_comparison_markdown` make the
tables.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np
import numpy.typing as npt

from lcip.classes import ClassScheme
from lcip.errors import DataError
from lcip.evaluation.evaluate import (
    STRIP_ROWS,
    Evaluation,
    accuracy,
    iou_per_class,
    mean_iou,
)
from lcip.io.manifest import Manifest
from lcip.io.raster import check_same_grid, open_raster, streaming_env, strip_windows
from lcip.priors.build import prior_layer

log = logging.getLogger(__name__)


def comparison_manifest(
    region: Manifest, priors: dict[str, Manifest], splits: Sequence[str], label_layer: str
) -> Manifest:
    """The labelled tiles of ``splits`` that every prior covers, with every prior's layer.

    Tiles some prior lacks (e.g. no valid pixels there) are left out, with a warning.

    Raises:
        DataError: if no tile is left.
    """
    tiles = region.select(list(splits))
    labelled = [t.tile_id for t in tiles if label_layer in t.layers]
    covered = [{t.tile_id for t in m} for m in priors.values()]
    keep = [i for i in labelled if all(i in ids for ids in covered)]
    if len(keep) < len(labelled):
        log.warning(
            "compare: %d labelled tile(s) lack some prior and are left out: %s",
            len(labelled) - len(keep),
            sorted(set(labelled) - set(keep)),
        )
    if not keep:
        raise DataError(
            f"{region.path}: no labelled tile ('{label_layer}') of splits {list(splits)} has "
            f"every prior {list(priors)}"
        )
    out = tiles.select(tile_ids=keep)
    for name, manifest in priors.items():
        layer = prior_layer(name)
        out = out.with_layer(
            layer, {t.tile_id: t.layer(layer) for t in manifest if t.tile_id in keep}
        )
    return out


def mean_abs_differences(
    manifest: Manifest, names: Sequence[str]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Sums of ``|a - b|`` and counts of pixels valid in both, for every pair of priors.

    Reads each tile's priors in strips of :data:`lcip.evaluation.evaluate.STRIP_ROWS` rows. A pixel
    is valid in a prior when every band is finite.

    Args:
        manifest: tiles with the layer ``prior_<name>`` of every prior, on one grid per tile.
        names: the priors.

    Returns:
        (sums, pixels): float64 (k, k) sums of ``|a - b|`` over classes and pixels valid in both;
        int64 (k, k) counts of those pixels (the diagonal: pixels valid in each prior).

    Raises:
        GridMismatchError: if a tile's priors are not on one grid.
        DataError: if two priors have different numbers of bands.
    """
    k = len(names)
    sums = np.zeros((k, k), np.float64)
    pixels = np.zeros((k, k), np.int64)
    layers = [prior_layer(n) for n in names]
    with streaming_env():
        for tile in manifest:
            files = {layer: tile.layer(layer) for layer in layers}
            grid = check_same_grid(files, f"tile {tile.tile_id}")
            with ExitStack() as stack:
                sources = [stack.enter_context(open_raster(p)) for p in files.values()]
                counts = {src.count for src in sources}
                if len(counts) > 1:
                    raise DataError(
                        f"tile {tile.tile_id}: priors {list(names)} have different band counts "
                        f"{[src.count for src in sources]}"
                    )
                for window in strip_windows(grid, STRIP_ROWS):
                    data = [src.read(window=window, out_dtype="float32") for src in sources]
                    valid = [np.isfinite(d).all(axis=0) for d in data]
                    for i in range(k):
                        pixels[i, i] += int(valid[i].sum())
                        for j in range(i + 1, k):
                            both = valid[i] & valid[j]
                            diff = np.abs(data[i][:, both] - data[j][:, both], dtype=np.float32)
                            total = float(diff.sum(dtype=np.float64))
                            sums[i, j] += total
                            sums[j, i] += total
                            n = int(both.sum())
                            pixels[i, j] += n
                            pixels[j, i] += n
    return sums, pixels


def prior_comparison_rows(
    evaluation: Evaluation,
    names: Sequence[str],
    mad: npt.NDArray[np.float64],
    scheme: ClassScheme,
) -> list[dict[str, Any]]:
    """One row per prior: accuracy, mIoU, IoU per class, pixels, then ``mad_<prior>``."""
    rows: list[dict[str, Any]] = []
    for i, name in enumerate(names):
        cm = evaluation.overall(name)
        row: dict[str, Any] = {"prior": name, "accuracy": accuracy(cm), "miou": mean_iou(cm)}
        for cls, iou in zip(scheme.classes, iou_per_class(cm), strict=True):
            row[f"iou_{cls.replace(' ', '_')}"] = float(iou)
        row["pixels"] = int(cm.sum())
        for j, other in enumerate(names):
            row[f"mad_{other}"] = float(mad[i, j])
        rows.append(row)
    return rows


def prior_comparison_markdown(
    rows: Sequence[dict[str, Any]],
    names: Sequence[str],
    scheme: ClassScheme,
    tiles: Sequence[str],
    splits: Sequence[str],
) -> str:
    """The markdown report: scores per prior, then the MAD between priors."""
    head = ["prior", "accuracy (%)", "mIoU (%)", *(f"IoU {c} (%)" for c in scheme.classes)]
    lines = [
        f"# Priors compared ({scheme.name}: {', '.join(scheme.classes)})",
        "",
        f"{len(tiles)} labelled tile(s) of splits {', '.join(splits)}: {', '.join(tiles)}",
        "",
        "## Argmax against the labels",
        "",
        "| " + " | ".join(head) + " |",
        "| --- |" + " ---: |" * (len(head) - 1),
    ]
    for row in rows:
        ious = [row[f"iou_{c.replace(' ', '_')}"] for c in scheme.classes]
        cells = [row["accuracy"], row["miou"], *ious]
        lines.append(f"| {row['prior']} | " + " | ".join(f"{100 * v:.1f}" for v in cells) + " |")
    lines += [
        "",
        "## Mean absolute difference between priors (over pixels valid in both and classes)",
        "",
        "| prior | " + " | ".join(names) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    for row in rows:
        mads = " | ".join(f"{row[f'mad_{n}']:.4f}" for n in names)
        lines.append(f"| {row['prior']} | {mads} |")
    return "\n".join(lines) + "\n"


def mean_abs_difference(
    sums: npt.NDArray[np.float64], pixels: npt.NDArray[np.int64], num_classes: int
) -> npt.NDArray[np.float64]:
    """``MAD(a, b)``: the sums of :func:`mean_abs_differences` over pixels and classes (NaN: none).

    Args:
        sums: (k, k) sums of ``|a - b|`` over classes and pixels valid in both priors.
        pixels: (k, k) counts of those pixels.
        num_classes: classes (bands) of each prior.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        mad: npt.NDArray[np.float64] = np.where(pixels > 0, sums / (pixels * num_classes), np.nan)
    return mad


__all__ = [
    "comparison_manifest",
    "mean_abs_difference",
    "mean_abs_differences",
    "prior_comparison_markdown",
    "prior_comparison_rows",
]
