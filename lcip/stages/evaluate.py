"""Stage ``evaluate``: accuracy and mIoU of the prior's argmax, q and r against 1 m labels."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from lcip.evaluate import Evaluation, MapSpec, evaluate_manifest
from lcip.manifest import Manifest
from lcip.provenance import sha256_file
from lcip.stages.paths import checkpoint_file, predictions_manifest_path, prior_layer, scheme_of

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig, force: bool = False) -> Evaluation:
    """Evaluate the prior's argmax, q and r on the evaluation tiles; writes markdown and CSV.

    The q and r maps must have been made by the configured checkpoint (``predict.checkpoint``):
    maps made by another one are refused in one line. Pixels whose imagery is nodata are not
    scored, for any map.

    Args:
        cfg: composed config.
        force: accepted for symmetry with the other stages (evaluation always runs).

    Returns:
        the evaluation.
    """
    expect = {"checkpoint_sha256": sha256_file(checkpoint_file(cfg))}
    name = str(cfg.loss.name).upper()
    maps = [
        MapSpec(f"prior {cfg.prior.name} (argmax)", prior_layer(cfg.prior.name), "prob"),
        MapSpec(f"{name} (q)", "q_class", expect=expect),
        MapSpec(f"{name} (r)", "r_class", expect=expect),
    ]
    evaluation = evaluate_manifest(
        Manifest.read(predictions_manifest_path(cfg)),
        maps,
        scheme_of(cfg),
        cfg.region.label_layer,
        image_layer=cfg.region.image_layer,
        zero_is_nodata=bool(cfg.data.get("zero_is_nodata", True)),
    )
    md, csv_path = evaluation.write(Path(cfg.run_dir))
    log.info("evaluation written to %s and %s", md, csv_path)
    print(evaluation.summary_markdown())
    return evaluation
