"""Stage ``demo``: every stage on the configured (by default generated) region, and a report."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

import lcip
from lcip.config import compose_config
from lcip.evaluation.evaluate import read_class_map, rows_to_csv
from lcip.io.atomic import write_text
from lcip.io.manifest import Manifest
from lcip.io.raster import Grid, read_on_grid
from lcip.stages.cooccurrence import cooccurrence
from lcip.stages.evaluate import evaluate
from lcip.stages.paths import prior_layer, scheme_of
from lcip.stages.predict import predict
from lcip.stages.prior import prior
from lcip.stages.region import region
from lcip.stages.train import train


def machine_description() -> dict[str, Any]:
    """The machine a run was made on (for reports): CPU, cores, GPU, Python, torch, lcip."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lcip": lcip.__version__,
        "system": f"{platform.system()} {platform.release()}",
    }


def _method(sub: DictConfig) -> str:
    return str(sub.loss.name)


def demo(cfg: DictConfig, force: bool = False, overrides: Sequence[str] = ()) -> Path:
    """Run every stage on the configured region for each prior and loss, and report.

    Makes the region available, counts cooccurrence, then for each prior of ``demo.priors``
    builds it and, for each loss of ``demo.losses`` (null: the configured loss only), trains,
    predicts and evaluates the evaluation tiles; with ``demo.epitome`` it also scores
    self-epitomic LSR (:mod:`lcip.stages.epitome`, no training). Writes ``results.md`` /
    ``results.csv`` / ``results.json`` (prior argmax once per prior, q and r per run, the
    seconds of each run, the machine and the wall-clock time) and ``quicklook.png`` under
    ``demo.out_dir``.

    Args:
        cfg: composed config (with a ``demo`` node).
        force: rebuild every output.
        overrides: the overrides ``cfg`` was composed with; each run's config is composed
            from them plus ``prior=<name>`` and ``loss=<name>`` (and
            ``experiment=<demo.experiment>`` unless an experiment is given).

    Returns:
        the results markdown file.
    """
    start = time.perf_counter()
    region(cfg, force)
    cooccurrence(cfg, force)
    scheme = scheme_of(cfg)
    out_dir = Path(cfg.demo.out_dir)
    rows: list[dict[str, Any]] = []
    panels: list[tuple[str, Any]] = []
    lines = [
        "| prior | method | map | accuracy (%) | mIoU (%) | run (s) |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    first_tile = None
    given = list(overrides)
    if not any(o.startswith("experiment=") for o in given):
        given.append(f"experiment={cfg.demo.experiment}")
    losses: list[str | None] = [str(n) for n in (cfg.demo.get("losses") or [])] or [None]

    def add(name: str, method: str, evaluation: Any, seconds: float) -> None:
        for r in evaluation.rows():
            if r["tile"] != "all":
                continue
            argmax = str(r["map"]).startswith("prior ")
            if argmax and any(x["prior"] == name and x["method"] == "prior" for x in rows):
                continue  # the prior's argmax once per prior
            label = "prior" if argmax else method
            rows.append({"prior": name, "method": label, **r, "seconds": seconds})
            lines.append(
                f"| {name} | {label} | {r['map']} | {100 * float(r['accuracy']):.1f} "
                f"| {100 * float(r['miou']):.1f} | {'' if argmax else f'{seconds:.0f}'} |"
            )

    for name in cfg.demo.priors:
        prior_done = False
        for loss in losses:
            run_start = time.perf_counter()
            sub = compose_config([*given, f"prior={name}", *([f"loss={loss}"] if loss else [])])
            if not prior_done:
                prior(sub, force)
                prior_done = True
            train(sub, force)
            pred_manifest = predict(sub, force)
            evaluation = evaluate(sub)
            add(name, _method(sub), evaluation, time.perf_counter() - run_start)
            tile = Manifest.read(pred_manifest).tiles[0]
            first_tile = first_tile or tile
            grid = Grid.of(tile.layer(sub.region.image_layer))
            if not any(title == f"prior {name}" for title, _ in panels):
                panels.append(
                    (f"prior {name}", read_class_map(tile.layer(prior_layer(name)), grid, "prob"))
                )
            panels.append(
                (
                    f"{_method(sub).upper()} q ({name})",
                    read_class_map(tile.layer("q_class"), grid, "class"),
                )
            )
    if cfg.demo.get("epitome"):
        from lcip.stages.epitome import epitome

        run_start = time.perf_counter()
        sub = compose_config([*given, "run_name=epitome", "predict.out_dir=${epitome.out_dir}"])
        maps = Manifest.read(epitome(sub, force))
        add("nlcd", "self-epitomic LSR", evaluate(sub), time.perf_counter() - run_start)
        if first_tile is not None and first_tile.tile_id in {t.tile_id for t in maps}:
            grid = Grid.of(first_tile.layer(cfg.region.image_layer))
            q = maps.tile(first_tile.tile_id).layer("q_class")
            panels.append(("self-epitomic LSR q", read_class_map(q, grid, "class")))
    assert first_tile is not None
    from lcip.evaluation.quicklook import save_quicklook

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
    seconds = time.perf_counter() - start
    machine = machine_description()
    table = "\n".join(lines)
    title = f"# lcip demo: region {cfg.region.name}, splits {list(cfg.region.eval_splits)}"
    where = (
        f"Machine: {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['gpu'] or 'no GPU'}; torch {machine['torch']}, lcip {machine['lcip']}. "
        f"Wall-clock time of the run: {seconds / 60:.1f} min."
    )
    md = write_text(out_dir / "results.md", f"{title}\n\n{table}\n\n{where}\n")
    write_text(out_dir / "results.csv", rows_to_csv(rows))
    record = {"region": cfg.region.name, "seconds": seconds, "machine": machine, "rows": rows}
    write_text(out_dir / "results.json", json.dumps(record, indent=1, default=str))
    print(
        f"\n{table}\n\n{where}\nmaps: {cfg.paths.runs}/{cfg.region.name}/*/predictions\n"
        f"quicklook: {out_dir / 'quicklook.png'}"
    )
    return md
