"""The pipeline's stages as functions of the composed Hydra config.

Each console script (``lcip-train``, ...) is a thin Hydra app around one of these functions,
and ``lcip-demo`` chains them, so a stage behaves the same whichever way it is run. Files a
stage reads and writes are derived from the config by the ``*_path`` helpers here, in one place:

- region:        ``<paths.regions>/<region>/manifest.csv`` (+ layer files)
- cooccurrence:  ``<region dir>/cooccurrence/cooccurrence.csv``
- prior:         ``<region dir>/priors/<prior>/manifest.csv`` (adds layer ``prior_<prior>``)
- train:         ``<paths.runs>/<region>/<run_name>/checkpoints/last.ckpt``
- predict:       ``<run dir>/predictions/manifest.csv`` (adds ``q_prob``, ``q_class``, ...)
- evaluate:      ``<run dir>/evaluation.md`` and ``.csv``
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

from lcip.atomic import write_text
from lcip.classes import ClassScheme, get_scheme
from lcip.datamodules import TileDataModule
from lcip.datasets import LayerSpec
from lcip.errors import ConfigError
from lcip.evaluate import Evaluation, MapSpec, evaluate_manifest, read_class_map, rows_to_csv
from lcip.inference import WindowConfig
from lcip.manifest import Manifest
from lcip.models import load_state_from_checkpoint
from lcip.predict import predict_manifest
from lcip.priors.build import (
    FusedPriorJob,
    NLCDPriorJob,
    VectorLayersJob,
    results_manifest,
    run_tile_jobs,
    write_report,
)
from lcip.priors.cooccurrence import Cooccurrence, count_cooccurrence
from lcip.priors.fused import fusion_classes
from lcip.priors.learned import select_training_tiles, train_learned_prior, write_learned_priors
from lcip.quicklook import save_quicklook
from lcip.raster import Grid, read_on_grid
from lcip.tasks import ImplicitPosteriorTask

log = logging.getLogger(__name__)


def scheme_of(cfg: DictConfig) -> ClassScheme:
    """The region's class scheme."""
    scheme = cfg.region.scheme
    return get_scheme(scheme if isinstance(scheme, str) else _container(scheme))


def _container(node: Any) -> dict[str, Any]:
    """A config node as a plain dict (resolved)."""
    out = OmegaConf.to_container(node, resolve=True)
    assert isinstance(out, dict)
    return {str(k): v for k, v in out.items()}


def region_manifest_path(cfg: DictConfig) -> Path:
    """The region's manifest."""
    return Path(cfg.region.manifest)


def prior_layer(prior_name: str) -> str:
    """Manifest layer name of a prior."""
    return f"prior_{prior_name}"


def prior_manifest_path(cfg: DictConfig, prior_name: str | None = None) -> Path:
    """The manifest the prior stage writes for ``prior_name`` (default: the configured prior)."""
    return Path(cfg.region.dir) / "priors" / (prior_name or cfg.prior.name) / "manifest.csv"


def checkpoint_path(cfg: DictConfig) -> Path:
    """The checkpoint prediction reads (by default the training run's last checkpoint)."""
    return Path(cfg.predict.checkpoint)


def build_model(cfg: DictConfig, scheme: ClassScheme) -> Any:
    """Instantiate the configured network for the scheme's classes."""
    return instantiate(cfg.model, classes=scheme.num_classes)


def region(cfg: DictConfig) -> Path:
    """Make the region's manifest available: generate it for a generated region.

    Args:
        cfg: composed config (``region``).

    Returns:
        the region's manifest.
    """
    path = region_manifest_path(cfg)
    synthetic = cfg.region.get("synthetic")
    if synthetic is None:
        if not path.exists():
            raise ConfigError(
                f"region.manifest={path}: manifest does not exist and region '{cfg.region.name}' "
                "has no generator (acquire its data first)"
            )
        return path
    from lcip.synthetic import generate_region

    settings = _container(synthetic)
    stamp = path.parent / "region_config.json"
    if path.exists() and stamp.exists() and json.loads(stamp.read_text()) == settings:
        log.info("region %s is up to date: %s", cfg.region.name, path)
        return path
    out = generate_region(instantiate(synthetic), path.parent)
    stamp.write_text(json.dumps(settings))
    return out


def cooccurrence(cfg: DictConfig) -> Cooccurrence:
    """Count P(target class | NLCD class) on the region's training tiles and write it.

    Args:
        cfg: composed config (``region``, ``cooccurrence``).

    Returns:
        the cooccurrence statistics (also written to ``cooccurrence.dir``).
    """
    manifest = Manifest.read(region_manifest_path(cfg)).select(list(cfg.region.train_splits))
    result = count_cooccurrence(
        manifest,
        scheme_of(cfg),
        label_layer=cfg.region.label_layer,
        nlcd_layer=cfg.region.nlcd_layer,
        allow_test=bool(cfg.cooccurrence.allow_test),
    )
    result.write(Path(cfg.cooccurrence.dir))
    return result


def _cooccurrence_matrix(cfg: DictConfig) -> Any:
    path = Path(cfg.cooccurrence.dir) / "cooccurrence.csv"
    if not path.exists():
        raise ConfigError(
            f"cooccurrence.dir={path.parent}: no cooccurrence.csv (run lcip-cooccurrence first)"
        )
    return Cooccurrence.read(path).matrix


def prior(cfg: DictConfig) -> Path:
    """Build the configured prior for every tile of the region; returns its manifest.

    ``prior.recipe`` is ``nlcd``, ``fused`` (NLCD + vector layers) or ``learned`` (an FCN on
    the NLCD prior and vector layers, trained on a few labelled non-evaluation tiles).

    Args:
        cfg: composed config (``region``, ``prior``, ``cooccurrence``, ``jobs``).

    Returns:
        the manifest listing the tiles with their ``prior_<name>`` layer.
    """
    scheme = scheme_of(cfg)
    manifest = Manifest.read(region_manifest_path(cfg))
    p = cfg.prior
    region_dir = Path(cfg.region.dir)
    jobs = int(cfg.jobs)
    nlcd_kwargs = dict(
        scheme=scheme,
        image_layer=cfg.region.image_layer,
        matrix=_cooccurrence_matrix(cfg),
        nlcd_layer=cfg.region.nlcd_layer,
        sigma=float(p.sigma),
        truncate=float(p.truncate),
        smoothing=float(p.smoothing),
    )
    if p.recipe in ("fused", "learned"):
        vec = VectorLayersJob(
            region_dir / "vectors",
            cfg.region.image_layer,
            cfg.region.get("osm_layer"),
            cfg.region.get("buildings_layer"),
        )
        vec_results = run_tile_jobs(vec, manifest, jobs, "vector layers")
        manifest = results_manifest(manifest, vec_results, "vectors")
    out_dir = region_dir / "priors" / p.name
    layer = prior_layer(p.name)
    if p.recipe == "nlcd":
        results = run_tile_jobs(
            NLCDPriorJob(out_dir, **nlcd_kwargs), manifest, jobs, f"prior {p.name}"
        )
    elif p.recipe == "fused":
        water, impervious = fusion_classes(scheme)
        job = FusedPriorJob(
            out_dir,
            **nlcd_kwargs,
            osm_layer=cfg.region.get("osm_layer"),
            buildings_layer=cfg.region.get("buildings_layer"),
            water_class=water,
            impervious_class=impervious,
            radius=_container(p.radius),
            weights=_container(p.weights),
        )
        results = run_tile_jobs(job, manifest, jobs, f"prior {p.name}")
    elif p.recipe == "learned":
        nlcd_dir = region_dir / "priors" / "nlcd_input"
        nlcd_results = run_tile_jobs(
            NLCDPriorJob(nlcd_dir, **nlcd_kwargs), manifest, jobs, "NLCD prior (input)"
        )
        manifest = results_manifest(manifest, nlcd_results, "prior_nlcd_input")
        inputs = ("prior_nlcd_input", "vectors")
        ids = select_training_tiles(
            manifest,
            list(cfg.region.train_splits),
            list(cfg.region.eval_splits),
            int(p.train_tiles),
            list(p.train_tile_ids) if p.train_tile_ids is not None else None,
            cfg.region.label_layer,
        )
        net = instantiate(p.model, in_channels=scheme.num_classes + 4, classes=scheme.num_classes)
        train_learned_prior(
            manifest,
            ids,
            scheme,
            net,
            input_layers=inputs,
            label_layer=cfg.region.label_layer,
            steps=int(p.steps),
            batch_size=int(p.batch_size),
            crop_size=int(p.crop_size),
            lr=float(p.lr),
            seed=int(cfg.seed),
            cache=bool(cfg.data.get("cache", False)),
        )
        params = {
            "recipe": "learned",
            "train_tiles": ids,
            **_container(p),
        }
        results = write_learned_priors(
            manifest,
            net,
            scheme,
            out_dir,
            params=params,
            input_layers=inputs,
            smoothing=float(p.smoothing),
        )
    else:
        raise ConfigError(
            f"prior.recipe={p.recipe!r}: unknown recipe; choose nlcd, fused or learned"
        )
    write_report(results, out_dir, {"recipe": p.recipe, "region": cfg.region.name})
    return results_manifest(manifest, results, layer).write(prior_manifest_path(cfg))


def train(cfg: DictConfig) -> Path:
    """Train the configured model on the configured prior; returns the last checkpoint.

    Args:
        cfg: composed config (``region``, ``prior``, ``model``, ``loss``, ``trainer``, ``data``,
            ``task``, ``early_stopping``, ``run_dir``, ``seed``).

    Returns:
        path of the last checkpoint.
    """
    L.seed_everything(cfg.seed, workers=True)
    scheme = scheme_of(cfg)
    loss_kwargs = {k: v for k, v in _container(cfg.loss).items() if k != "name"}
    task = ImplicitPosteriorTask(
        build_model(cfg, scheme),
        scheme.num_classes,
        loss=cfg.loss.name,
        loss_kwargs=loss_kwargs,
        **cfg.task,
    )
    dm = TileDataModule(
        Manifest.read(prior_manifest_path(cfg)),
        scheme,
        image_layer=cfg.region.image_layer,
        prior_layer=prior_layer(cfg.prior.name),
        label_layer=cfg.region.label_layer,
        train_splits=list(cfg.region.train_splits),
        val_splits=list(cfg.region.val_splits),
        seed=cfg.seed,
        **cfg.data,
    )
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    callbacks = [
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best",
            monitor=cfg.task.monitor,
            save_last=True,
            enable_version_counter=False,
        ),
        EarlyStopping(**cfg.early_stopping),
    ]
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=CSVLogger(run_dir, name="logs", version="")
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    trainer.fit(task, datamodule=dm)
    last = ckpt_dir / "last.ckpt"
    log.info("trained %s on prior %s: %s", cfg.loss.name, cfg.prior.name, last)
    return last


def predict(cfg: DictConfig) -> Path:
    """Predict q and r maps for the evaluation tiles; returns the predictions manifest.

    Args:
        cfg: composed config (``predict``, ``region``, ``prior``, ``model``, ``loss``).

    Returns:
        manifest listing the tiles with their prediction layers.
    """
    scheme = scheme_of(cfg)
    ckpt = checkpoint_path(cfg)
    if not ckpt.exists():
        raise ConfigError(
            f"predict.checkpoint={ckpt}: checkpoint does not exist (run lcip-train first)"
        )
    model = build_model(cfg, scheme)
    load_state_from_checkpoint(model, str(ckpt))
    manifest = Manifest.read(prior_manifest_path(cfg)).select(list(cfg.predict.splits))
    p = cfg.predict
    out_dir = Path(p.out_dir)
    result = predict_manifest(
        model,
        manifest,
        LayerSpec(cfg.region.image_layer, prior_layer(cfg.prior.name), None),
        scheme,
        out_dir,
        WindowConfig(
            window=p.window,
            margin=p.margin,
            batch_size=p.batch_size,
            smoothing=cfg.loss.smoothing,
            device=p.device,
        ),
    )
    return result.write(out_dir / "manifest.csv")


def evaluate(cfg: DictConfig) -> Evaluation:
    """Evaluate the prior's argmax, q and r on the evaluation tiles; writes markdown and CSV.

    Args:
        cfg: composed config.

    Returns:
        the evaluation.
    """
    scheme = scheme_of(cfg)
    manifest = Manifest.read(Path(cfg.predict.out_dir) / "manifest.csv")
    maps = [
        MapSpec(f"prior {cfg.prior.name} (argmax)", prior_layer(cfg.prior.name), "prob"),
        MapSpec(f"{cfg.loss.name.upper()} (q)", "q_class"),
        MapSpec(f"{cfg.loss.name.upper()} (r)", "r_class"),
    ]
    evaluation = evaluate_manifest(manifest, maps, scheme, cfg.region.label_layer)
    md, csv_path = evaluation.write(Path(cfg.run_dir))
    log.info("evaluation written to %s and %s", md, csv_path)
    print(evaluation.summary_markdown())
    return evaluation


def _compose(cfg: DictConfig, *overrides: str) -> DictConfig:
    """The config recomposed with extra overrides on top of the ones this run was given."""
    given = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return compose(config_name="lcip", overrides=[*given, *overrides])


def demo(cfg: DictConfig) -> Path:
    """Run every stage on the configured (by default generated) region and report.

    Generates the region, counts cooccurrence, builds each prior of ``demo.priors``, trains
    ``loss`` on each, predicts and evaluates the evaluation tiles, then writes
    ``results.md``/``results.csv`` (prior argmax, q and r per prior) and ``quicklook.png``
    under ``demo.out_dir`` and prints the table.

    Args:
        cfg: composed config (with a ``demo`` node).

    Returns:
        the results markdown file.
    """
    region(cfg)
    cooccurrence(cfg)
    scheme = scheme_of(cfg)
    out_dir = Path(cfg.demo.out_dir)
    rows: list[dict[str, Any]] = []
    panels: list[tuple[str, Any]] = []
    lines = ["| prior | map | accuracy (%) | mIoU (%) |", "| --- | --- | ---: | ---: |"]
    first_tile = None
    given = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    extra = (
        []
        if any(o.startswith("experiment=") for o in given)
        else [f"experiment={cfg.demo.experiment}"]
    )
    for name in cfg.demo.priors:
        sub = _compose(cfg, f"prior={name}", *extra)
        prior(sub)
        train(sub)
        pred_manifest = predict(sub)
        evaluation = evaluate(sub)
        for r in evaluation.rows():
            if r["tile"] == "all":
                rows.append({"prior": name, **r})
                lines.append(
                    f"| {name} | {r['map']} | {100 * float(r['accuracy']):.1f} "
                    f"| {100 * float(r['miou']):.1f} |"
                )
        tile = Manifest.read(pred_manifest).tiles[0]
        first_tile = first_tile or tile
        grid = Grid.of(tile.layer(sub.region.image_layer))
        panels.append(
            (f"prior {name}", read_class_map(tile.layer(prior_layer(name)), grid, "prob"))
        )
        panels.append(
            (
                f"{sub.loss.name.upper()} q ({name})",
                read_class_map(tile.layer("q_class"), grid, "class"),
            )
        )
    assert first_tile is not None
    grid = Grid.of(first_tile.layer(cfg.region.image_layer))
    truth = scheme.map_labels(read_on_grid(first_tile.layer(cfg.region.label_layer), grid, bands=1))
    image = read_on_grid(first_tile.layer(cfg.region.image_layer), grid)
    save_quicklook(
        out_dir / "quicklook.png",
        image,
        [*panels, ("truth", truth)],
        scheme,
        title=f"{cfg.region.name}: tile {first_tile.tile_id}",
        ncols=4,
    )
    table = "\n".join(lines)
    title = f"# lcip demo: region {cfg.region.name}, splits {list(cfg.region.eval_splits)}"
    md = write_text(out_dir / "results.md", f"{title}\n\n{table}\n")
    write_text(out_dir / "results.csv", rows_to_csv(rows))
    print(
        f"\n{table}\n\nmaps: {cfg.paths.runs}/{cfg.region.name}/*/predictions\n"
        f"quicklook: {out_dir / 'quicklook.png'}"
    )
    return md
