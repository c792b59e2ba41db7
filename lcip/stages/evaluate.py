"""Stage ``evaluate``: accuracy and mIoU of the prior's argmax, q and r against 1 m labels."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from lcip.errors import ConfigError
from lcip.evaluation.evaluate import (
    PAPER,
    Evaluation,
    MapSpec,
    evaluate_protocols,
    get_protocols,
    write_evaluations,
)
from lcip.io.manifest import Manifest
from lcip.io.provenance import sha256_file
from lcip.stages.paths import checkpoint_file, predictions_manifest_path, prior_layer, scheme_of

log = logging.getLogger(__name__)


def is_epitome_run(cfg: DictConfig) -> bool:
    """Whether the run scores self-epitomic LSR maps (``predict.out_dir`` = ``epitome.out_dir``).

    Such a run has no network and no checkpoint: its only map is the epitome's q.
    """
    epitome = cfg.get("epitome")
    return epitome is not None and str(cfg.predict.out_dir) == str(epitome.out_dir)


def evaluation_maps(cfg: DictConfig) -> list[MapSpec]:
    """The maps a run is scored on: the prior's argmax, q and r (and NLCD, if configured).

    A self-epitomic LSR run (:func:`is_epitome_run`) is scored on its q map only.

    ``evaluate.nlcd_layer`` (default null) names a layer of NLCD codes on the tile grid (e.g.
    ``nlcd`` on Chesapeake) to score as a map too, mapped to 4 classes as the later literature
    does (:data:`lcip.evaluation.evaluate.PARAFORMER_NLCD_MAP`); only for 4-class schemes.

    Raises:
        ConfigError: if ``evaluate.nlcd_layer`` is set for a scheme of other than 4 classes.
    """
    if is_epitome_run(cfg):
        return [MapSpec("self-epitomic LSR (q)", "q_class")]
    expect = {"checkpoint_sha256": sha256_file(checkpoint_file(cfg))}
    name = str(cfg.loss.name).upper()
    maps = [
        MapSpec(f"prior {cfg.prior.name} (argmax)", prior_layer(cfg.prior.name), "prob"),
        MapSpec(f"{name} (q)", "q_class", expect=expect),
        MapSpec(f"{name} (r)", "r_class", expect=expect),
    ]
    nlcd_layer = cfg.get("evaluate", {}).get("nlcd_layer")
    if nlcd_layer:
        if scheme_of(cfg).num_classes != 4:
            raise ConfigError(
                f"evaluate.nlcd_layer={nlcd_layer}: NLCD is mapped to the 4 Chesapeake classes, "
                f"but region {cfg.region.name} has {scheme_of(cfg).num_classes}; set it to null"
            )
        maps.append(MapSpec("NLCD (4 classes)", str(nlcd_layer), "nlcd"))
    return maps


def evaluation_tiles(manifest: Manifest, eval_splits: list[str]) -> Manifest:
    """The predicted tiles of ``region.eval_splits``: the only tiles scored.

    Maps of other splits (``predict.splits`` set wider, e.g. for quicklooks of training tiles)
    are left out with a one-line warning rather than refused: the evaluation tiles' scores do
    not depend on them, but mixing them in would score tiles a network may have trained on.

    Raises:
        ConfigError: one line naming ``region.eval_splits`` and ``predict.splits``, when no
            predicted tile is of an evaluation split.
    """
    selected = manifest.select(eval_splits)
    others = sorted({t.split for t in manifest if t.split not in eval_splits})
    where = manifest.path or "predictions manifest"
    if len(selected) == 0:
        raise ConfigError(
            f"{where}: no predictions for tiles of region.eval_splits={eval_splits} (it has "
            f"splits {others}); run lcip-predict with predict.splits covering them, or set "
            "region.eval_splits"
        )
    if others:
        skipped = len(manifest) - len(selected)
        log.warning(
            "%s: %d predicted tiles of splits %s are not scored: only region.eval_splits=%s are "
            "(set region.eval_splits to score them)",
            where,
            skipped,
            others,
            eval_splits,
        )
    return selected


def evaluate(cfg: DictConfig, force: bool = False) -> Evaluation:
    """Evaluate the prior's argmax, q and r on the evaluation tiles under every protocol.

    The protocols are ``evaluate.protocols`` (default ``[paper, paraformer]``, see
    :mod:`lcip.evaluation.evaluate`). Writes ``evaluation.md`` (every protocol), ``evaluation.csv``
    (``paper``) and ``metrics.csv`` (every protocol, with a ``protocol`` column; per tile and
    for all tiles; IoU per class; ``collapsed`` = 1 for a map that is one class where the
    labels are not, see :meth:`lcip.evaluation.evaluate.Evaluation.collapse`, also logged as a
    warning) into the run folder.

    Only tiles of ``region.eval_splits`` are scored (see :func:`evaluation_tiles`).

    The q and r maps must have been made by the configured checkpoint (``predict.checkpoint``):
    maps made by another one are refused in one line. Pixels whose imagery is nodata are not
    scored, for any map.

    Args:
        cfg: composed config.
        force: accepted for symmetry with the other stages (evaluation always runs).

    Returns:
        the evaluation under the ``paper`` protocol (or the first protocol when ``paper`` is
        not among them).
    """
    names = [str(n) for n in cfg.get("evaluate", {}).get("protocols", [PAPER.name])]
    protocols = get_protocols(names)
    evaluations = evaluate_protocols(
        evaluation_tiles(
            Manifest.read(predictions_manifest_path(cfg)),
            [str(s) for s in cfg.region.eval_splits],
        ),
        evaluation_maps(cfg),
        scheme_of(cfg),
        cfg.region.label_layer,
        image_layer=cfg.region.image_layer,
        zero_is_nodata=bool(cfg.data.get("zero_is_nodata", True)),
        protocols=protocols,
    )
    paths = write_evaluations(evaluations, Path(cfg.run_dir))
    log.info("evaluation written to %s", ", ".join(str(p) for p in paths))
    for name, ev in evaluations.items():
        print(f"protocol {name}:\n{ev.summary_markdown()}\n")
    main = evaluations.get(PAPER.name, evaluations[protocols[0].name])
    for note in main.collapse_notes():  # also flagged in the files' "collapsed" column
        log.warning("run %s/%s: %s", cfg.region.name, cfg.get("run_name", ""), note)
    return main
