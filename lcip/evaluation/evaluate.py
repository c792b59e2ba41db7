"""Evaluation: accuracy and mIoU of class maps against high-resolution labels.

Metrics come from confusion matrices accumulated per tile (and summed for the region), never
from averages of per-batch figures. Two evaluation protocols (:data:`PROTOCOLS`) are computed
from the same maps, so lcip's numbers can be set beside both literatures:

- ``paper`` (the implicit posterior paper, Rolf, Malkin et al., UAI 2022): labels mapped by the
  region's scheme (Chesapeake: 4 classes, barren (4) merged into impervious with 5 and 6;
  EnviroAtlas: 5 classes, shrub ignored); accuracy = trace / total over pixels valid in the
  labels and the map (:func:`accuracy`); IoU_c = TP / (TP + FP + FN) from intersections and
  unions summed over the region's tiles (:func:`iou_per_class`); mIoU = mean of IoU over the
  classes that occur in the labels or the predictions (:func:`mean_iou`).
- ``paraformer`` (the later Chesapeake literature with NLCD labels: Paraformer, CVPR 2024, and
  its successors): NLCD-derived maps are mapped to 4 classes by :data:`PARAFORMER_NLCD_MAP`
  (11 water; 41/42/43/90 tree canopy; 31/52/71/81/82/95 low vegetation; 21-24 built-up =
  impervious; 12 and nodata ignored); the Chesapeake 1 m labels are mapped by
  :data:`PARAFORMER_CHESAPEAKE4` (1 water, 2 tree canopy, 3 low vegetation, **4 barren -> low
  vegetation** as NLCD 31 barren is, 5 and 6 impervious, 0 and other codes ignored), so only
  barren pixels are scored differently from ``paper``; other schemes (EnviroAtlas) keep the
  region's label mapping. "OA" = mean over classes present in the labels of the per-class
  recall TP / (TP + FN) (:func:`mean_class_recall`); mIoU = sum of the IoU of the classes
  present (in labels or predictions) divided by the number of classes, 4 on Chesapeake
  (:func:`miou_over_all_classes`). lcip's own q / r maps keep their class indices under both
  protocols (a network trained with barren in impervious predicts impervious on barren, which
  ``paraformer`` scores as wrong).

Evaluation streams: labels, maps and imagery are read in block-aligned strips of
:data:`STRIP_ROWS` rows, so memory does not grow with the tile size. Maps made by another
checkpoint than the configured one are refused before any pixel is read (:attr:`MapSpec.expect`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rasterio.windows import Window
from tqdm.auto import tqdm

from lcip.classes import CHESAPEAKE4, IGNORE_INDEX, ClassScheme
from lcip.errors import ConfigError, DataError
from lcip.evaluation.collapse import Collapse, check_collapse
from lcip.io.atomic import write_text
from lcip.io.manifest import Manifest, Tile
from lcip.io.provenance import read_provenance
from lcip.io.raster import (
    Grid,
    check_same_grid,
    open_raster,
    read_on_grid,
    streaming_env,
    strip_windows,
    valid_imagery,
)

#: The per-run table of every protocol written by :func:`write_evaluations`.
METRICS_NAME = "metrics.csv"

#: Rows per strip read by :func:`evaluate_manifest` (a multiple of the 256 px block size).
STRIP_ROWS = 512

#: Map kinds: a class raster, per-class probabilities whose argmax is taken, or NLCD codes
#: mapped to 4 classes by :data:`PARAFORMER_NLCD_MAP`.
MAP_KINDS = ("class", "prob", "nlcd")

#: NLCD code -> Chesapeake 4-class index (water, tree canopy, low vegetation, impervious) of the
#: later literature (Paraformer, CVPR 2024): 11 water; 41, 42, 43, 90 tree canopy; 31, 52, 71,
#: 81, 82, 95 low vegetation; 21-24 built-up (impervious). 12 (ice) and 0 (nodata) are ignored.
PARAFORMER_NLCD_MAP: dict[int, int] = {
    11: 0,
    **dict.fromkeys((41, 42, 43, 90), 1),
    **dict.fromkeys((31, 52, 71, 81, 82, 95), 2),
    **dict.fromkeys((21, 22, 23, 24), 3),
}

#: Chesapeake 1 m labels under the ``paraformer`` protocol: 1 water, 2 tree canopy, 3 low
#: vegetation, 4 barren -> low vegetation (as NLCD 31 barren is), 5 impervious (other) and 6
#: impervious (road) -> impervious; 0 (nodata) and other codes ignored.
PARAFORMER_CHESAPEAKE4 = ClassScheme(
    name="chesapeake4_paraformer",
    classes=CHESAPEAKE4.classes,
    colors=CHESAPEAKE4.colors,
    label_map={1: 0, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3},
)


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


def recall_per_class(cm: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Per-class recall TP / (TP + FN) (NaN for classes absent from the labels)."""
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, tp / support, np.nan)


def mean_class_recall(cm: npt.NDArray[np.int64]) -> float:
    """The ``paraformer`` protocol's "OA": mean recall over classes present in the labels."""
    recall = recall_per_class(cm)
    return float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan")


def miou_over_all_classes(cm: npt.NDArray[np.int64]) -> float:
    """The ``paraformer`` protocol's mIoU: sum of IoU of the classes present / all classes.

    Classes absent from labels and predictions add 0 (NaN when nothing is scored).
    """
    iou = iou_per_class(cm)
    return float(np.nansum(iou) / cm.shape[0]) if np.isfinite(iou).any() else float("nan")


def paraformer_labels(scheme: ClassScheme) -> ClassScheme:
    """The label mapping of the ``paraformer`` protocol for a region's scheme.

    Chesapeake's 4 classes (:data:`lcip.classes.CHESAPEAKE4`, by name or label map) become
    :data:`PARAFORMER_CHESAPEAKE4` (barren in low vegetation); any other scheme is kept.
    """
    if scheme.name == CHESAPEAKE4.name or dict(scheme.label_map) == dict(CHESAPEAKE4.label_map):
        return PARAFORMER_CHESAPEAKE4
    return scheme


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol: how labels are mapped and how accuracy and mIoU are computed.

    Args:
        name: identifier (a key of :data:`PROTOCOLS`).
        accuracy: the "accuracy" of a confusion matrix under this protocol.
        miou: the mIoU of a confusion matrix under this protocol.
        labels: the label scheme scored, given the region's scheme.
        description: one line for reports.
    """

    name: str
    accuracy: Callable[[npt.NDArray[np.int64]], float]
    miou: Callable[[npt.NDArray[np.int64]], float]
    labels: Callable[[ClassScheme], ClassScheme]
    description: str


#: The implicit posterior paper's protocol (what lcip reports by default).
PAPER = Protocol(
    "paper",
    accuracy,
    mean_iou,
    lambda scheme: scheme,
    "pixel accuracy; mIoU = mean IoU over classes present; Chesapeake barren in impervious",
)

#: The later Chesapeake literature's protocol (Paraformer, CVPR 2024).
PARAFORMER = Protocol(
    "paraformer",
    mean_class_recall,
    miou_over_all_classes,
    paraformer_labels,
    '"OA" = mean per-class recall; mIoU = sum of IoU of classes present / number of classes; '
    "Chesapeake barren in low vegetation",
)

#: Evaluation protocols by name.
PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (PAPER, PARAFORMER)}


def get_protocols(names: Sequence[str]) -> list[Protocol]:
    """Protocols by name.

    Raises:
        ConfigError: one line naming ``evaluate.protocols`` for an unknown or missing name.
    """
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown or not names:
        raise ConfigError(
            f"evaluate.protocols={list(names)}: use one or more of {sorted(PROTOCOLS)}"
        )
    return [PROTOCOLS[n] for n in dict.fromkeys(names)]


@dataclass(frozen=True)
class MapSpec:
    """A map to evaluate.

    Args:
        name: name in the report (e.g. ``QR (r)``).
        layer: manifest layer holding it.
        kind: ``class`` (uint8 class raster), ``prob`` (one band per class; argmax taken) or
            ``nlcd`` (NLCD codes, mapped by :data:`PARAFORMER_NLCD_MAP`).
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
            ``nlcd``: band 1 holds NLCD codes, mapped by :data:`PARAFORMER_NLCD_MAP`.

    Returns:
        uint8 (h, w).
    """
    if kind == "class":
        return data[0].astype(np.uint8, copy=False)
    if kind == "nlcd":
        return _NLCD_LUT[np.clip(data[0], 0, 255).astype(np.intp)]
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


_NLCD_LUT = np.full(256, IGNORE_INDEX, np.uint8)
_NLCD_LUT[list(PARAFORMER_NLCD_MAP)] = list(PARAFORMER_NLCD_MAP.values())


def read_class_map(path: Path, grid: Grid, kind: str) -> npt.NDArray[np.uint8]:
    """Read a class raster, or the argmax of a probability raster, onto a grid.

    Args:
        path: the map.
        grid: the grid to read it on (outside the raster: :data:`IGNORE_INDEX`).
        kind: ``class``, ``prob`` or ``nlcd`` (see :func:`class_map`).

    Returns:
        uint8 (h, w) class indices, :data:`IGNORE_INDEX` where invalid.
    """
    if kind in ("class", "nlcd"):
        fill = IGNORE_INDEX if kind == "class" else 0
        return class_map(read_on_grid(path, grid, bands=[1], fill=fill), kind)
    return class_map(read_on_grid(path, grid, fill=np.nan, dtype="float32"), kind)


@dataclass(frozen=True)
class Evaluation:
    """Confusion matrices per (tile, map) under one protocol, and the derived tables.

    ``scheme`` is the label scheme scored (the protocol's, see :attr:`Protocol.labels`).
    """

    scheme: ClassScheme
    maps: tuple[str, ...]
    tiles: tuple[str, ...]
    matrices: Mapping[tuple[str, str], npt.NDArray[np.int64]]
    protocol: Protocol = PAPER

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
                "accuracy": self.protocol.accuracy(cm),
                "miou": self.protocol.miou(cm),
            }
            for cls, iou in zip(self.scheme.classes, iou_per_class(cm), strict=True):
                row[f"iou_{cls.replace(' ', '_')}"] = float(iou)
            row["pixels"] = float(cm.sum())
            row["collapsed"] = int(self.collapse(cm).collapsed)
            rows.append(row)
        return rows

    def collapse(self, cm: npt.NDArray[np.int64]) -> Collapse:
        """Whether a map collapsed to one class, from its matrix (:mod:`lcip.evaluation.collapse`).

        The map's predicted classes are compared with the labels' on the scored pixels: one
        class on at least :data:`lcip.evaluation.collapse.COLLAPSE_SHARE` of them while the labels'
        own top class has less than :data:`lcip.evaluation.collapse.PRIOR_SHARE` (a tile that truly
        is one class is not flagged).
        """
        return check_collapse(cm.sum(axis=0), cm.sum(axis=1))

    def collapse_notes(self) -> list[str]:
        """One line per map collapsed over all tiles (empty when none)."""
        notes = []
        for name in self.maps:
            found = self.collapse(self.overall(name))
            if found.collapsed:
                what = found.describe(self.scheme.classes, "the labels").replace("q ", "it ", 1)
                notes.append(f"collapsed: {name}: {what}")
        return notes

    def summary_markdown(self) -> str:
        """Markdown table of overall accuracy and mIoU per map (all tiles)."""
        lines = ["| map | accuracy (%) | mIoU (%) |", "| --- | ---: | ---: |"]
        for name in self.maps:
            cm = self.overall(name)
            acc, miou = 100 * self.protocol.accuracy(cm), 100 * self.protocol.miou(cm)
            flag = " (collapsed)" if self.collapse(cm).collapsed else ""
            lines.append(f"| {name}{flag} | {acc:.1f} | {miou:.1f} |")
        notes = self.collapse_notes()
        return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else []))

    def markdown(self) -> str:
        """Full markdown report: summary, then per tile."""
        per_tile = ["| tile | map | accuracy (%) | mIoU (%) |", "| --- | --- | ---: | ---: |"]
        for r in self.rows():
            if r["tile"] != "all":
                acc, miou = 100 * float(r["accuracy"]), 100 * float(r["miou"])
                per_tile.append(f"| {r['tile']} | {r['map']} | {acc:.1f} | {miou:.1f} |")
        protocol = "" if self.protocol is PAPER else f", protocol {self.protocol.name}"
        return (
            f"# Evaluation ({self.scheme.name}: {', '.join(self.scheme.classes)}{protocol})\n\n"
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


def metrics_rows(evaluations: Mapping[str, Evaluation]) -> list[dict[str, Any]]:
    """Rows of every protocol's table, each with a leading ``protocol`` column.

    Args:
        evaluations: protocol name -> evaluation (as :func:`evaluate_protocols` returns).

    Returns:
        rows ``protocol, tile, map, accuracy, miou, iou_<class>..., pixels`` (per tile, then
        ``tile = all`` per map), protocol by protocol.
    """
    return [{"protocol": name, **row} for name, ev in evaluations.items() for row in ev.rows()]


def write_evaluations(evaluations: Mapping[str, Evaluation], out_dir: Path) -> list[Path]:
    """Write a run's evaluation files atomically.

    - ``evaluation.md``: each protocol's markdown (summary and per tile);
    - ``evaluation.csv``: the ``paper`` protocol's rows (as :meth:`Evaluation.write`), when
      computed;
    - ``metrics.csv``: every protocol's rows with a ``protocol`` column
      (:func:`metrics_rows`).

    Returns:
        the paths written.
    """
    md = "\n".join(ev.markdown() for ev in evaluations.values())
    paths = [write_text(out_dir / "evaluation.md", md)]
    if PAPER.name in evaluations:
        rows = evaluations[PAPER.name].rows()
        paths.append(write_text(out_dir / "evaluation.csv", rows_to_csv(rows)))
    paths.append(write_text(out_dir / METRICS_NAME, rows_to_csv(metrics_rows(evaluations))))
    return paths


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
    """Evaluate maps against labels under the ``paper`` protocol (see :func:`evaluate_protocols`).

    Returns:
        the evaluation.
    """
    return evaluate_protocols(
        manifest,
        maps,
        scheme,
        label_layer,
        image_layer=image_layer,
        zero_is_nodata=zero_is_nodata,
        protocols=(PAPER,),
    )[PAPER.name]


def evaluate_protocols(
    manifest: Manifest,
    maps: Sequence[MapSpec],
    scheme: ClassScheme,
    label_layer: str = "lc",
    *,
    image_layer: str | None = None,
    zero_is_nodata: bool = True,
    protocols: Sequence[Protocol] = (PAPER, PARAFORMER),
) -> dict[str, Evaluation]:
    """Evaluate maps against labels on every tile of a manifest, strip by strip, per protocol.

    First every map with :attr:`MapSpec.expect` is checked on every tile (a map made by
    another checkpoint is refused before any pixel is read); then each tile's label, maps and
    imagery are read once, in block-aligned strips of :data:`STRIP_ROWS` rows, and one
    confusion matrix accumulated per (protocol, tile, map), so memory does not grow with the
    tile size.

    Args:
        manifest: tiles with the label layer and every map's layer.
        maps: the maps to evaluate.
        scheme: the region's class scheme (maps the raw labels; each protocol may remap them,
            see :attr:`Protocol.labels`).
        label_layer: layer of raw high-resolution labels.
        image_layer: imagery layer; pixels whose imagery is nodata (see
            :func:`lcip.io.raster.valid_imagery`) are not scored for any map, so every map is
            scored on the same pixels.
        zero_is_nodata: all-zero imagery pixels are nodata when the imagery declares none.
        protocols: the protocols to compute.

    Returns:
        protocol name -> evaluation.

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
    schemes = {p.name: p.labels(scheme) for p in protocols}
    matrices: dict[str, dict[tuple[str, str], npt.NDArray[np.int64]]] = {
        p.name: {} for p in protocols
    }
    with streaming_env():
        for tile in tqdm(manifest.tiles, desc="evaluate", unit="tile"):
            tile_matrices = _evaluate_tile(
                tile, maps, schemes, label_layer, image_layer, zero_is_nodata
            )
            for (protocol, name), cm in tile_matrices.items():
                matrices[protocol][(tile.tile_id, name)] = cm
    names = tuple(m.name for m in maps)
    tiles = tuple(t.tile_id for t in manifest)
    return {
        p.name: Evaluation(schemes[p.name], names, tiles, matrices[p.name], p) for p in protocols
    }


def _evaluate_tile(
    tile: Tile,
    maps: Sequence[MapSpec],
    schemes: Mapping[str, ClassScheme],
    label_layer: str,
    image_layer: str | None,
    zero_is_nodata: bool,
) -> dict[tuple[str, str], npt.NDArray[np.int64]]:
    """Confusion matrices of the maps of one tile ((protocol, map name) -> matrix), by strips."""
    layers = {image_layer: tile.layer(image_layer)} if image_layer else {}  # the tile grid first
    layers |= {label_layer: tile.layer(label_layer), **{m.name: tile.layer(m.layer) for m in maps}}
    grid = check_same_grid(layers, f"tile {tile.tile_id}")
    matrices = {
        (p, m.name): np.zeros((s.num_classes,) * 2, np.int64)
        for p, s in schemes.items()
        for m in maps
    }
    with ExitStack() as stack:
        label = stack.enter_context(open_raster(tile.layer(label_layer)))
        image = stack.enter_context(open_raster(tile.layer(image_layer))) if image_layer else None
        sources = [stack.enter_context(open_raster(tile.layer(m.layer))) for m in maps]
        for window in strip_windows(grid, STRIP_ROWS):
            raw = label.read(1, window=window)
            valid = (
                valid_imagery(image.read(window=window), image.nodata, zero_is_nodata)
                if image is not None
                else None
            )
            targets: dict[str, npt.NDArray[np.uint8]] = {}
            for p, s in schemes.items():
                targets[p] = s.map_labels(raw)
                if valid is not None:
                    targets[p][~valid] = IGNORE_INDEX
            for m, src in zip(maps, sources, strict=True):
                pred = _read_map(src, window, m.kind)
                for p, s in schemes.items():
                    matrices[(p, m.name)] += confusion_matrix(pred, targets[p], s.num_classes)
    return matrices


def _read_map(src: Any, window: Window, kind: str) -> npt.NDArray[np.uint8]:
    """Class indices of a window of an open map (only band 1 of a class raster is read)."""
    if kind in ("class", "nlcd"):
        return class_map(src.read([1], window=window), kind)
    return class_map(src.read(window=window, out_dtype="float32"), kind)


__all__ = [
    "MAP_KINDS",
    "METRICS_NAME",
    "PAPER",
    "PARAFORMER",
    "PARAFORMER_CHESAPEAKE4",
    "PARAFORMER_NLCD_MAP",
    "PROTOCOLS",
    "STRIP_ROWS",
    "Evaluation",
    "MapSpec",
    "Protocol",
    "accuracy",
    "check_provenance",
    "class_map",
    "confusion_matrix",
    "evaluate_manifest",
    "evaluate_protocols",
    "get_protocols",
    "iou_per_class",
    "mean_class_recall",
    "mean_iou",
    "metrics_rows",
    "miou_over_all_classes",
    "paraformer_labels",
    "read_class_map",
    "recall_per_class",
    "rows_to_csv",
    "write_evaluations",
]
