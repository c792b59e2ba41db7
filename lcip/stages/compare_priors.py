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
from pathlib import Path

from omegaconf import DictConfig

from lcip.errors import ConfigError
from lcip.evaluation.comparison import (
    comparison_manifest,
    mean_abs_difference,
    mean_abs_differences,
    prior_comparison_markdown,
    prior_comparison_rows,
)
from lcip.evaluation.evaluate import (
    MapSpec,
    evaluate_manifest,
    rows_to_csv,
)
from lcip.io.atomic import write_text
from lcip.io.manifest import Manifest
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
    mad = mean_abs_difference(sums, pixels, scheme.num_classes)
    rows = prior_comparison_rows(evaluation, names, mad, scheme)
    tiles = [t.tile_id for t in manifest]
    markdown = prior_comparison_markdown(rows, names, scheme, tiles, splits)
    out_dir = Path(cfg.compare.out_dir)
    md = write_text(out_dir / MARKDOWN_NAME, markdown)
    csv_path = write_text(out_dir / CSV_NAME, rows_to_csv(rows))
    log.info("comparison written to %s and %s", md, csv_path)
    print(markdown)
    return md


__all__ = ["CSV_NAME", "MARKDOWN_NAME", "compare_priors", "prior_manifest"]
