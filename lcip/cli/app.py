"""The one wrapper that turns a pipeline stage into a Hydra console script."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from lcip.errors import LcipError

#: The Hydra config folder: ``$LCIP_CONFIG_DIR`` or the repository's ``configs/``.
CONFIG_DIR = Path(
    os.environ.get("LCIP_CONFIG_DIR", Path(__file__).resolve().parents[2] / "configs")
)
CONFIG_NAME = "lcip"

log = logging.getLogger("lcip")


def run_stage(stage: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run a stage; a user-caused error is printed as one line and exits with status 2."""
    try:
        return stage(cfg)
    except LcipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def hydra_app(stage: Callable[[DictConfig], Any]) -> Callable[[], None]:
    """A console-script entry point running ``stage`` on the composed ``lcip`` config.

    Args:
        stage: function of the composed config.

    Returns:
        a function taking no arguments (Hydra reads ``sys.argv``).
    """

    @hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")
    def main(cfg: DictConfig) -> None:
        run_stage(stage, cfg)

    def entry() -> None:
        if not any(a.startswith("hydra.job.name=") for a in sys.argv[1:]):
            sys.argv.append(f"hydra.job.name={stage.__name__}")
        if not (CONFIG_DIR / f"{CONFIG_NAME}.yaml").exists():
            print(
                f"error: {CONFIG_DIR} has no {CONFIG_NAME}.yaml (set LCIP_CONFIG_DIR)",
                file=sys.stderr,
            )
            sys.exit(2)
        main()

    entry.__doc__ = stage.__doc__
    return entry
