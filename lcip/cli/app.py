"""The one wrapper that turns a pipeline stage into a Hydra console script.

A console script imports only Hydra and this module at start-up; the stage's module (and with
it torch or Lightning, when the stage needs them) is imported when the stage runs, so
``--help`` and light stages start quickly. Hydra's own flags (``--help``, ``--info``,
``--cfg job``, ``--multirun``, ...) work as in any Hydra app; a bare ``--cfg`` means
``--cfg job``.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from lcip.config import CONFIG_DIR, CONFIG_NAME
from lcip.errors import LcipError


def run_stage(stage: Callable[..., Any], cfg: DictConfig, overrides: list[str]) -> Any:
    """Run a stage; a user-caused error is printed as one line and exits with status 2."""
    kwargs = {"overrides": overrides} if "overrides" in inspect.signature(stage).parameters else {}
    try:
        return stage(cfg, **kwargs)
    except LcipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def _fix_bare_cfg(argv: list[str]) -> list[str]:
    """``--cfg``/``-c`` without a value means ``--cfg job``."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg in ("--cfg", "-c") and (
            i + 1 == len(out) or out[i + 1] not in ("job", "hydra", "all")
        ):
            out.insert(i + 1, "job")
            break
    return out


def hydra_app(name: str, target: str, description: str) -> Callable[[], None]:
    """A console-script entry point running a stage on the composed ``lcip`` config.

    Args:
        name: the stage's name (Hydra's job name: log folders are ``<root>/logs/<name>/``).
        target: ``module:function`` of the stage, imported when the stage runs.
        description: one paragraph shown at the top of ``--help``.

    Returns:
        a function taking no arguments (Hydra reads ``sys.argv``).
    """

    def main(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        module, function = target.split(":")
        stage = getattr(importlib.import_module(module), function)
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        run_stage(stage, cfg, overrides)

    # Hydra names the job after the task function's module: make it the stage's name.
    main.__module__ = f"lcip.stages.{name}"

    def entry() -> None:
        if not (CONFIG_DIR / f"{CONFIG_NAME}.yaml").exists():
            print(
                f"error: {CONFIG_DIR} has no {CONFIG_NAME}.yaml (set LCIP_CONFIG_DIR)",
                file=sys.stderr,
            )
            sys.exit(2)
        sys.argv[1:] = _fix_bare_cfg(sys.argv[1:])
        if any(a in ("--help", "-h") for a in sys.argv[1:]):
            print(f"lcip-{name}: {description}\n")
        import hydra

        hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")(main)()

    entry.__doc__ = description
    return entry
