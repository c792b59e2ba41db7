"""Run one paper experiment: every stage its config lists, in order, with the same settings.

An experiment config (``lcip/conf/experiment/<name>.yaml``) lists its stages under
``paper.stages`` (default: cooccurrence, prior, train, predict, evaluate); ``paper.multirun``
runs each stage as a Hydra multirun (``-m``: e.g. NY and PA for the NY + PA rows). Every
stage is idempotent, so re-running a finished experiment redoes nothing.

Usage: python scripts/run_experiment.py <name> [overrides ...] [--dry-run]
       (``make experiment EXP=<name> ARGS="..."``)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from lcip.evaluation.experiments import commands


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--dry-run"]
    if not args:
        raise SystemExit(__doc__)
    name, overrides = args[0], args[1:]
    bin_dir = Path(sys.executable).parent
    for cmd in commands(name, overrides):
        print("+", " ".join(cmd), flush=True)
        if "--dry-run" in sys.argv:
            continue
        exe = bin_dir / cmd[0]
        program = str(exe) if exe.exists() else (shutil.which(cmd[0]) or cmd[0])
        result = subprocess.run([program, *cmd[1:]], check=False)
        if result.returncode != 0:
            raise SystemExit(result.returncode)


if __name__ == "__main__":
    main()
