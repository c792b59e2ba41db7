"""Write ``lcip/conf/experiment/<name>_lcip.yaml``: each paper experiment with lcip's recipe.

The paper experiments pin the paper's training recipe (``paper_recipe.yaml``: its FCN without
batch norm, plateau scheduler, early stopping, the best checkpoint by val/loss). Each one that
trains or predicts with a network gets a variant that runs it with lcip's recipe instead
(``lcip_recipe.yaml``: lcip's defaults), same region, prior, loss, data and sizes, in its own
run folder (``<run_name>_lcip``), claiming the same published rows, so ``lcip-report`` shows
both recipes beside the published figures. Variants that start from (or predict with) another
experiment's model use that experiment's lcip variant (its ``last.ckpt``), and a warm start
keeps the paper's fine-tuning learning rate.

Usage: python scripts/make_lcip_variants.py [--check]
       (--check: exit 1, listing them, when a variant file is missing or differs)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lcip.config import compose_config
from lcip.evaluation.experiments import EXPERIMENTS, paper_settings

SUFFIX = "_lcip"
#: Experiments without a variant: sweeps (not a paper row).
SKIP = ("lr_sweep",)
#: A checkpoint of another paper experiment's run: ``.../<run_name>/checkpoints/best.ckpt``.
CHECKPOINT = re.compile(r"/(?P<run>[^/]+)/checkpoints/best\.ckpt$")


def base_experiments() -> list[str]:
    """The paper experiments that train or predict with a network (variants aside)."""
    names = []
    for path in sorted(EXPERIMENTS.glob("*.yaml")):
        name = path.stem
        paper = paper_settings(name)
        stages = paper.get("stages") or ["train"]
        if not paper or name.endswith(SUFFIX) or name in SKIP:
            continue
        if "train" in stages or "predict" in stages:
            names.append(name)
    return names


def _lcip_checkpoint(value: Any) -> str | None:
    """The lcip variant's checkpoint for another experiment's ``best.ckpt`` path, else None."""
    if not isinstance(value, str):
        return None
    match = CHECKPOINT.search(value)
    if match is None:
        return None
    return value[: match.start()] + f"/{match['run']}{SUFFIX}/checkpoints/last.ckpt"


def variant_text(name: str) -> str:
    """The YAML of ``<name>_lcip``."""
    cfg = compose_config([f"experiment={name}"])
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(raw, dict)
    lines = [
        "# @package _global_",
        f"# {name} with lcip's training recipe (lcip_recipe.yaml).",
        "# Written by scripts/make_lcip_variants.py: edit the script, not this file.",
        "defaults:",
        f"  - {name}",
        "  - lcip_recipe",
        "  - _self_",
        "",
        f"run_name: {raw['run_name']}{SUFFIX}",
    ]
    init = _lcip_checkpoint(raw["task"].get("init_from"))
    if init:
        lr = float(raw["optimizer"]["lr"])
        rate = f"  lr: {lr:.1e}   # the paper's fine-tuning rate from a warm start"
        lines += ["optimizer:", rate]
        lines += ["task:", f"  init_from: {init}"]
    checkpoint = _lcip_checkpoint(raw["predict"].get("checkpoint"))
    if checkpoint:
        lines += ["predict:", f"  checkpoint: {checkpoint}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    check = "--check" in sys.argv[1:]
    stale = []
    for name in base_experiments():
        path = EXPERIMENTS / f"{name}{SUFFIX}.yaml"
        text = variant_text(name)
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(path)
        if not check:
            Path(path).write_text(text)
    verb = "stale or missing" if check else "written"
    print(f"{len(stale)} variant(s) {verb}" + "".join(f"\n  {p}" for p in stale))
    if check and stale:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
