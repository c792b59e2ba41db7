"""Stage ``compare-priors``: several priors of a region scored side by side on the same tiles.

For the priors named in ``compare.priors`` (each built by ``lcip-prior prior=<name>`` into
``<region.dir>/priors/<name>/manifest.csv``), on the labelled tiles of ``compare.splits``
that every prior covers:

- each prior's argmax is scored against the 1 m labels with
  :func:`lcip.evaluation.evaluate.evaluate_manifest` (accuracy, per-class IoU and mIoU; the
  region's scheme; pixels whose imagery is nodata are not scored);
- every pair of priors is compared by the mean absolute difference
  ``MAD(a, b) = mean over pixels valid in both and over classes of |a - b|``, read strip by
  strip (never a whole tile in memory).

Writes ``comparison.md`` and ``comparison.csv`` (one row per prior: accuracy, mIoU, IoU per
class, pixels scored, and ``mad_<other>`` per prior) into ``compare.out_dir``, and prints the
markdown.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from omegaconf import DictConfig

from lcip.classes import ClassScheme
from lcip.errors import ConfigError, DataError
from lcip.evaluation.evaluate import (
    STRIP_ROWS,
    Evaluation,
    MapSpec,
    accuracy,
    evaluate_manifest,
    iou_per_class,
    mean_iou,
    rows_to_csv,
)
from lcip.io.atomic import write_text
from lcip.io.manifest import Manifest
from lcip.io.raster import check_same_grid, open_raster, streaming_env, strip_windows
from lcip.stages.paths import prior_layer, region_manifest_path, scheme_of

log = logging.getLogger(__name__)

#: Files written into ``compare.out_dir``.
MARKDOWN_NAME = "comparison.md"
CSV_NAME = "comparison.csv"


def prior_manifest(cfg: DictConfig, name: str) -> Path:
    """A prior's manifest (``<region.dir>/priors/<name>/manifest.csv``).

    Raises:
        ConfigError: one line saying which ``lcip-prior`` to run, when it does not exist.
    """
    path = Path(cfg.region.dir) / "priors" / name / "manifest.csv"
    if not path.is_file():
        raise ConfigError(
            f"compare.priors: prior '{name}' has not been built ({path} does not exist); "
            f"run lcip-prior region={cfg.region.name} prior={name}"
        )
    return path


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
    """Sums of |a - b| and counts of pixels valid in both, for every pair of priors.

    Reads each tile's priors in strips of :data:`lcip.evaluation.evaluate.STRIP_ROWS` rows. A pixel
    is valid in a prior when every band is finite.

    Args:
        manifest: tiles with the layer ``prior_<name>`` of every prior, on one grid per tile.
        names: the priors.

    Returns:
        (sums, pixels): float64 (k, k) sums of |a - b| over classes and pixels valid in both;
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


def comparison_rows(
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


def comparison_markdown(
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


def compare_priors(cfg: DictConfig, force: bool = False) -> Path:
    """Score the priors of ``compare.priors`` side by side; write markdown and CSV.

    Args:
        cfg: composed config (``region``, ``compare``, ``data.zero_is_nodata``).
        force: accepted for symmetry with the other stages (the comparison always runs).

    Returns:
        the path of ``comparison.md`` (``comparison.csv`` is beside it).

    Raises:
        ConfigError: if ``compare.priors`` is empty or a prior has not been built.
        DataError: if no tile can be compared, or for a bad file.
    """
    names = [str(n) for n in cfg.compare.priors]
    if not names:
        raise ConfigError("compare.priors: empty; name the priors to compare, e.g. [nlcd, fused]")
    if len(set(names)) != len(names):
        raise ConfigError(f"compare.priors={names}: a prior is named twice")
    splits = [str(s) for s in cfg.compare.splits]
    scheme = scheme_of(cfg)
    label_layer = str(cfg.region.label_layer)
    priors = {n: Manifest.read(prior_manifest(cfg, n)) for n in names}
    manifest = comparison_manifest(
        Manifest.read(region_manifest_path(cfg)), priors, splits, label_layer
    )
    evaluation = evaluate_manifest(
        manifest,
        [MapSpec(n, prior_layer(n), "prob") for n in names],
        scheme,
        label_layer,
        image_layer=str(cfg.region.image_layer),
        zero_is_nodata=bool(cfg.data.get("zero_is_nodata", True)),
    )
    sums, pixels = mean_abs_differences(manifest, names)
    with np.errstate(invalid="ignore", divide="ignore"):
        mad = np.where(pixels > 0, sums / (pixels * scheme.num_classes), np.nan)
    rows = comparison_rows(evaluation, names, mad, scheme)
    tiles = [t.tile_id for t in manifest]
    markdown = comparison_markdown(rows, names, scheme, tiles, splits)
    out_dir = Path(cfg.compare.out_dir)
    md = write_text(out_dir / MARKDOWN_NAME, markdown)
    csv_path = write_text(out_dir / CSV_NAME, rows_to_csv(rows))
    log.info("comparison written to %s and %s", md, csv_path)
    print(markdown)
    return md


__all__ = [
    "CSV_NAME",
    "MARKDOWN_NAME",
    "compare_priors",
    "comparison_manifest",
    "comparison_markdown",
    "comparison_rows",
    "mean_abs_differences",
    "prior_manifest",
]
