"""The one wrapper that turns a pipeline stage into a Hydra console script.

A console script imports only Hydra and this module at start-up; the stage's module (and with
it torch or Lightning, when the stage needs them) is imported when the stage runs, so
``--help`` and light stages start quickly. Hydra's own flags (``--help``, ``--info``,
``--cfg job``, ``--multirun``, ...) work as in any Hydra app; a bare ``--cfg`` means
``--cfg job``.

An error composing the config (a value of the wrong type, an unknown key, a config that does
not exist: :func:`lcip.config.composition_error`) is printed as one line naming the key, exit
status 2, as a user-caused error in a stage is; Hydra's own report (several lines and a hint
at ``HYDRA_FULL_ERROR``) is kept for a user who sets ``HYDRA_FULL_ERROR`` themselves.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from lcip.config import CONFIG_DIR, CONFIG_NAME, composition_error
from lcip.errors import LcipError
from lcip.stages.schema import check_keys

#: Hydra re-raises composition errors (instead of printing them) while this is set: the
#: console scripts set it until the config is composed, to report those errors in one line.
FULL_ERROR = "HYDRA_FULL_ERROR"


def run_stage(stage: Callable[..., Any], cfg: DictConfig, overrides: list[str]) -> Any:
    """Run a stage; a user-caused error is printed as one line and exits with status 2."""
    kwargs = {"overrides": overrides} if "overrides" in inspect.signature(stage).parameters else {}
    try:
        check_keys(cfg)  # a key added past the schemas (+data.foo=1)
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
    owned: list[bool] = []  # [True] while composing, when entry() set HYDRA_FULL_ERROR

    def main(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        if owned:  # composed: the stage's own errors are reported as Hydra reports them
            os.environ.pop(FULL_ERROR, None)
            owned.clear()
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

        if FULL_ERROR not in os.environ:  # Hydra raises composition errors: reported below
            os.environ[FULL_ERROR] = "1"
            owned.append(True)
        try:
            hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")(
                main
            )()
        except Exception as exc:
            line = composition_error(exc, [a for a in sys.argv[1:] if not a.startswith("-")])
            if not owned or line is None:  # the user's HYDRA_FULL_ERROR, or not composing
                raise
            print(f"error: {line}", file=sys.stderr)
            sys.exit(2)
        finally:
            if owned:
                os.environ.pop(FULL_ERROR, None)
                owned.clear()

    entry.__doc__ = description
    return entry
