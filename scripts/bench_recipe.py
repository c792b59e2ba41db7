"""lcip's default training recipe on real data: QR on the 16 real West Virginia patches.

Runs the stages as a user would (region, cooccurrence, prior, train, predict, evaluate) with
lcip's defaults and only these settings: the region (``region=chesapeake_wv_patches``), the
paper's transductive split (trained on the ``val`` patches it is scored on) and CPU sizing
(batches of 16 crops of 64 px, 8 epochs of 100 steps, the filters given). ``--paper`` adds the
same runs with the paper's recipe (``experiment=paper_recipe``, lr 1e-4: no batch norm,
plateau schedule, early stopping and best checkpoint by val/loss). Prints the table (paper
protocol: accuracy / mIoU of the prior's argmax, q and r; whether the evaluation flagged a
collapsed map; seconds per run) and writes it, with the command and the machine, into
BENCHMARKS.md between the ``recipe-results`` markers.

Usage: python scripts/bench_recipe.py [--filters 32 128] [--paper] [--root DIR]
       [--benchmarks BENCHMARKS.md | --no-write]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
START = "<!-- recipe-results:start (written by scripts/bench_recipe.py) -->"
END = "<!-- recipe-results:end -->"
#: Region, transductive split and CPU sizing: all a run sets besides filters and recipe.
SETTINGS = [
    "region=chesapeake_wv_patches",
    "++data.train_splits=[val]",
    "++data.val_splits=[val]",
    "data.crop_size=64",
    "data.batch_size=16",
    "data.steps_per_epoch=100",
    "data.cache=true",
    "trainer.max_epochs=8",
    "trainer.enable_progress_bar=false",
]
RECIPES = {
    "lcip defaults": [],
    "paper (lr 1e-4, plateau, best)": ["experiment=paper_recipe", "optimizer.lr=1e-4"],
}


def run_one(overrides: list[str]) -> tuple[dict[str, dict[str, Any]], float]:
    """Every stage for one setting; the ``all``-tiles rows by map name, and the seconds."""
    from lcip.config import compose_config
    from lcip.stages.cooccurrence import cooccurrence
    from lcip.stages.evaluate import evaluate
    from lcip.stages.predict import predict
    from lcip.stages.prior import prior
    from lcip.stages.region import region
    from lcip.stages.train import train

    cfg = compose_config(overrides)
    start = time.perf_counter()
    region(cfg)
    cooccurrence(cfg)
    prior(cfg)
    train(cfg, force=True)
    predict(cfg, force=True)
    rows = {str(r["map"]): dict(r) for r in evaluate(cfg).rows() if r["tile"] == "all"}
    return rows, time.perf_counter() - start


def _cell(row: dict[str, Any]) -> str:
    return f"{100 * float(row['accuracy']):.1f} / {100 * float(row['miou']):.1f}"


def table(results: list[tuple[str, int, dict[str, dict[str, Any]], float]]) -> str:
    """The markdown table of the runs (prior argmax once, from the first run)."""
    lines = [
        "| recipe | filters | QR (q) acc / mIoU | QR (r) acc / mIoU | collapsed | run (s) |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    prior = next(iter(results))[2]["prior nlcd (argmax)"]
    lines.append(f"| prior argmax | | {_cell(prior)} | | | |")
    for recipe, filters, rows, seconds in results:
        q, r = rows["QR (q)"], rows["QR (r)"]
        flag = "yes" if int(q["collapsed"]) or int(r["collapsed"]) else "no"
        lines.append(f"| {recipe} | {filters} | {_cell(q)} | {_cell(r)} | {flag} | {seconds:.0f} |")
    return "\n".join(lines)


def replace_block(text: str, body: str) -> str:
    """``text`` with the block between :data:`START` and :data:`END` replaced (or appended)."""
    if text.count(START) != 1 or text.count(END) != 1:
        return f"{text.rstrip()}\n\n{START}\n{body}\n{END}\n"
    head, rest = text.split(START)
    return f"{head}{START}\n{body}\n{END}{rest.split(END)[1]}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--filters", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--paper", action="store_true", help="also the paper's recipe")
    parser.add_argument("--root", default="outputs/bench_recipe", help="paths.root of the runs")
    parser.add_argument("--benchmarks", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    from lcip.stages.demo import machine_description

    recipes = {k: v for k, v in RECIPES.items() if args.paper or not v}
    results = []
    start = time.perf_counter()
    for filters in args.filters:
        for recipe, extra in recipes.items():
            name = f"qr_{'paper' if extra else 'lcip'}_f{filters}"
            overrides = [
                *extra,
                *SETTINGS,
                f"model.num_filters={filters}",
                f"paths.root={args.root}",
                f"run_name={name}",
            ]
            print("+ run:", " ".join(overrides), flush=True)
            rows, seconds = run_one(overrides)
            results.append((recipe, filters, rows, seconds))
            print(table(results), flush=True)
    machine = machine_description()
    command = " ".join(["python", "scripts/bench_recipe.py", *map(shlex.quote, sys.argv[1:])])
    body = "\n".join(
        [
            table(results),
            "",
            f"Command: `{command}`. Every run: {' '.join(SETTINGS)}, "
            "model.num_filters=<filters>; nothing else set.",
            f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['gpu'] or 'no GPU'};"
            f" torch {machine['torch']}, lcip {machine['lcip']}. "
            f"Wall-clock time: {(time.perf_counter() - start) / 60:.1f} min.",
        ]
    )
    print(f"\n{body}")
    if not args.no_write:
        path = Path(args.benchmarks)
        path.write_text(replace_block(path.read_text(), body))
        print(f"{path}: recipe results written")


if __name__ == "__main__":
    main()
