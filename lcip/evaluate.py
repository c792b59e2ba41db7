"""Evaluation: accuracy and mIoU of class maps against high-resolution labels.

Metrics come from confusion matrices accumulated per tile (and summed for the region), never
from averages of per-batch figures: overall accuracy = trace / total; IoU_c = TP / (TP + FP +
FN); mIoU = mean of IoU over classes that occur in the labels or the predictions.

Evaluation streams: labels, maps and imagery are read in block-aligned strips of
:data:`STRIP_ROWS` rows, so memory does not grow with the tile size. Maps made by another
checkpoint than the configured one are refused before any pixel is read (:attr:`MapSpec.expect`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rasterio.windows import Window
from tqdm.auto import tqdm

from lcip.atomic import write_text
from lcip.classes import IGNORE_INDEX, ClassScheme
from lcip.errors import DataError
from lcip.manifest import Manifest, Tile
from lcip.provenance import read_provenance
from lcip.raster import (
    Grid,
    check_same_grid,
    open_raster,
    read_on_grid,
    streaming_env,
    strip_windows,
    valid_imagery,
)

#: Rows per strip read by :func:`evaluate_manifest` (a multiple of the 256 px block size).
STRIP_ROWS = 512

#: Map kinds: a class raster, or per-class probabilities whose argmax is taken.
MAP_KINDS = ("class", "prob")


def confusion_matrix(
    pred: npt.NDArray[np.integer], target: npt.NDArray[np.integer], num_classes: int
) -> npt.NDArray[np.int64]:
    """Confusion matrix (rows = target, columns = prediction) of pixels valid in both.

    Args:
        pred: predicted class indices (:data:`IGNORE_INDEX` = no prediction).
        target: true class indices (:data:`IGNORE_INDEX` = unlabelled).
        num_classes: number of classes.

    Returns:
        int64 array (num_classes, num_classes).
    """
    p, t = pred.ravel(), target.ravel()
    keep = (t < num_classes) & (p < num_classes) & (t >= 0) & (p >= 0)
    index = t[keep].astype(np.intp)  # one intp copy of the kept pixels, updated in place
    index *= num_classes
    index += p[keep]
    counts = np.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def accuracy(cm: npt.NDArray[np.int64]) -> float:
    """Overall accuracy of a confusion matrix (NaN when empty)."""
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def iou_per_class(cm: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Per-class IoU (NaN for classes absent from both labels and predictions)."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(cm: npt.NDArray[np.int64]) -> float:
    """Mean IoU over classes present in labels or predictions (NaN when empty)."""
    iou = iou_per_class(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


@dataclass(frozen=True)
class MapSpec:
    """A map to evaluate.

    Args:
        name: name in the report (e.g. ``QR (r)``).
        layer: manifest layer holding it.
        kind: ``class`` (uint8 class raster) or ``prob`` (one band per class; argmax taken).
        expect: provenance params the map's file must record (e.g. the configured
            checkpoint's ``checkpoint_sha256``); a map made otherwise is refused.
    """

    name: str
    layer: str
    kind: str = "class"
    expect: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in MAP_KINDS:
            raise ValueError(
                f"map {self.name!r}: unknown kind {self.kind!r}; use one of {MAP_KINDS}"
            )


def class_map(data: npt.NDArray[Any], kind: str) -> npt.NDArray[np.uint8]:
    """Class indices of a window of a map.

    Args:
        data: the map's bands (bands, h, w).
        kind: ``class``: band 1 holds class indices; ``prob``: one band per class, whose
            argmax is taken (first class on ties; :data:`IGNORE_INDEX` where a band is not
            finite). The argmax runs band by band, so it needs no copy of the bands.

    Returns:
        uint8 (h, w).
    """
    if kind == "class":
        return data[0].astype(np.uint8, copy=False)
    if kind != "prob":
        raise ValueError(f"unknown map kind {kind!r}; use one of {MAP_KINDS}")
    out = np.zeros(data.shape[1:], np.uint8)
    best = data[0].astype(np.float32)
    valid = np.isfinite(best)
    for c in range(1, data.shape[0]):
        band = data[c]
        valid &= np.isfinite(band)
        out[band > best] = c
        np.maximum(best, band, out=best)
    out[~valid] = IGNORE_INDEX
    return out


def read_class_map(path: Path, grid: Grid, kind: str) -> npt.NDArray[np.uint8]:
    """Read a class raster, or the argmax of a probability raster, onto a grid.

    Args:
        path: the map.
        grid: the grid to read it on (outside the raster: :data:`IGNORE_INDEX`).
        kind: ``class`` or ``prob`` (see :func:`class_map`).

    Returns:
        uint8 (h, w) class indices, :data:`IGNORE_INDEX` where invalid.
    """
    if kind == "class":
        return class_map(read_on_grid(path, grid, bands=[1], fill=IGNORE_INDEX), kind)
    return class_map(read_on_grid(path, grid, fill=np.nan, dtype="float32"), kind)


@dataclass(frozen=True)
class Evaluation:
    """Confusion matrices per (tile, map) and the derived tables."""

    scheme: ClassScheme
    maps: tuple[str, ...]
    tiles: tuple[str, ...]
    matrices: Mapping[tuple[str, str], npt.NDArray[np.int64]]

    def overall(self, name: str) -> npt.NDArray[np.int64]:
        """Confusion matrix of a map summed over tiles."""
        return sum(
            (self.matrices[(t, name)] for t in self.tiles),
            np.zeros((self.scheme.num_classes,) * 2, np.int64),
        )

    def rows(self) -> list[dict[str, str | float]]:
        """Table rows: one per (tile, map), then one per map for all tiles (tile = ``all``)."""
        rows: list[dict[str, str | float]] = []
        keys = [(t, m, self.matrices[(t, m)]) for t in self.tiles for m in self.maps]
        keys += [("all", m, self.overall(m)) for m in self.maps]
        for tile, name, cm in keys:
            row: dict[str, str | float] = {
                "tile": tile,
                "map": name,
                "accuracy": accuracy(cm),
                "miou": mean_iou(cm),
            }
            for cls, iou in zip(self.scheme.classes, iou_per_class(cm), strict=True):
                row[f"iou_{cls.replace(' ', '_')}"] = float(iou)
            row["pixels"] = float(cm.sum())
            rows.append(row)
        return rows

    def summary_markdown(self) -> str:
        """Markdown table of overall accuracy and mIoU per map (all tiles)."""
        lines = ["| map | accuracy (%) | mIoU (%) |", "| --- | ---: | ---: |"]
        for name in self.maps:
            cm = self.overall(name)
            lines.append(f"| {name} | {100 * accuracy(cm):.1f} | {100 * mean_iou(cm):.1f} |")
        return "\n".join(lines)

    def markdown(self) -> str:
        """Full markdown report: summary, then per tile."""
        per_tile = ["| tile | map | accuracy (%) | mIoU (%) |", "| --- | --- | ---: | ---: |"]
        for r in self.rows():
            if r["tile"] != "all":
                acc, miou = 100 * float(r["accuracy"]), 100 * float(r["miou"])
                per_tile.append(f"| {r['tile']} | {r['map']} | {acc:.1f} | {miou:.1f} |")
        return (
            f"# Evaluation ({self.scheme.name}: {', '.join(self.scheme.classes)})\n\n"
            f"## All tiles ({len(self.tiles)})\n\n{self.summary_markdown()}\n\n## Per tile\n\n"
            + "\n".join(per_tile)
            + "\n"
        )

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        """Write ``evaluation.md`` and ``evaluation.csv`` atomically; returns their paths."""
        md = write_text(out_dir / "evaluation.md", self.markdown())
        csv_path = write_text(out_dir / "evaluation.csv", rows_to_csv(self.rows()))
        return md, csv_path


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text of table rows (header from the first row's keys)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def check_provenance(path: Path, expect: Mapping[str, Any]) -> None:
    """Refuse a map whose recorded provenance params differ from ``expect``.

    Args:
        path: the map.
        expect: params it must record (compared as the provenance JSON stores them).

    Raises:
        DataError: one line naming the file, the setting, what it records and what is
            expected (sha256 digests shortened to 12 characters), and the fix.
    """
    record = read_provenance(path)
    params = record.get("params", {}) if record else {}
    for key, value in expect.items():
        want = json.loads(json.dumps(value, default=str))
        if key not in params:
            raise DataError(
                f"{path}: records no {key} (no lcip provenance), but this run expects "
                f"{key}={_short(want)}; run lcip-predict again"
            )
        if params[key] != want:
            raise DataError(
                f"{path}: made with {key}={_short(params[key])}, but this run expects "
                f"{key}={_short(want)}; run lcip-predict again"
            )


def _short(value: Any) -> str:
    """A value for a message: sha256 hex digests shortened to 12 characters."""
    text = str(value)
    return text[:12] if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def evaluate_manifest(
    manifest: Manifest,
    maps: Sequence[MapSpec],
    scheme: ClassScheme,
    label_layer: str = "lc",
    *,
    image_layer: str | None = None,
    zero_is_nodata: bool = True,
) -> Evaluation:
    """Evaluate maps against labels on every tile of a manifest, strip by strip.

    First every map with :attr:`MapSpec.expect` is checked on every tile (a map made by
    another checkpoint is refused before any pixel is read); then each tile's label, maps and
    imagery are read in block-aligned strips of :data:`STRIP_ROWS` rows and confusion
    matrices accumulated, so memory does not grow with the tile size.

    Args:
        manifest: tiles with the label layer and every map's layer.
        maps: the maps to evaluate.
        scheme: class scheme (maps the raw labels).
        label_layer: layer of raw high-resolution labels.
        image_layer: imagery layer; pixels whose imagery is nodata (see
            :func:`lcip.raster.valid_imagery`) are not scored for any map, so every map is
            scored on the same pixels.
        zero_is_nodata: all-zero imagery pixels are nodata when the imagery declares none.

    Returns:
        the evaluation.

    Raises:
        DataError: for a missing, truncated or corrupt file, grids that differ, or a map made
            by another checkpoint.
    """
    if len(manifest) == 0:
        raise DataError(f"{manifest.path or 'manifest'}: no tiles to evaluate")
    extra = [image_layer] if image_layer else []
    manifest.check_files([label_layer, *extra, *(m.layer for m in maps)])
    for tile in manifest.tiles:
        for m in maps:
            if m.expect:
                check_provenance(tile.layer(m.layer), m.expect)
    matrices: dict[tuple[str, str], npt.NDArray[np.int64]] = {}
    with streaming_env():
        for tile in tqdm(manifest.tiles, desc="evaluate", unit="tile"):
            tile_matrices = _evaluate_tile(
                tile, maps, scheme, label_layer, image_layer, zero_is_nodata
            )
            matrices.update({(tile.tile_id, n): cm for n, cm in tile_matrices.items()})
    return Evaluation(
        scheme, tuple(m.name for m in maps), tuple(t.tile_id for t in manifest), matrices
    )


def _evaluate_tile(
    tile: Tile,
    maps: Sequence[MapSpec],
    scheme: ClassScheme,
    label_layer: str,
    image_layer: str | None,
    zero_is_nodata: bool,
) -> dict[str, npt.NDArray[np.int64]]:
    """Confusion matrices of the maps of one tile (map name -> matrix), read strip by strip."""
    layers = {label_layer: tile.layer(label_layer), **{m.name: tile.layer(m.layer) for m in maps}}
    if image_layer:
        layers[image_layer] = tile.layer(image_layer)
    grid = check_same_grid(layers, f"tile {tile.tile_id}")
    num = scheme.num_classes
    matrices = {m.name: np.zeros((num, num), np.int64) for m in maps}
    with ExitStack() as stack:
        label = stack.enter_context(open_raster(tile.layer(label_layer)))
        image = stack.enter_context(open_raster(tile.layer(image_layer))) if image_layer else None
        sources = [stack.enter_context(open_raster(tile.layer(m.layer))) for m in maps]
        for window in strip_windows(grid, STRIP_ROWS):
            target = scheme.map_labels(label.read(1, window=window))
            if image is not None:
                valid = valid_imagery(image.read(window=window), image.nodata, zero_is_nodata)
                target[~valid] = IGNORE_INDEX
            for m, src in zip(maps, sources, strict=True):
                pred = _read_map(src, window, m.kind)
                matrices[m.name] += confusion_matrix(pred, target, num)
    return matrices


def _read_map(src: Any, window: Window, kind: str) -> npt.NDArray[np.uint8]:
    """Class indices of a window of an open map (only band 1 of a class raster is read)."""
    if kind == "class":
        return class_map(src.read([1], window=window), kind)
    return class_map(src.read(window=window, out_dtype="float32"), kind)


__all__ = [
    "MAP_KINDS",
    "STRIP_ROWS",
    "Evaluation",
    "MapSpec",
    "accuracy",
    "check_provenance",
    "class_map",
    "confusion_matrix",
    "evaluate_manifest",
    "iou_per_class",
    "mean_iou",
    "read_class_map",
    "rows_to_csv",
]
