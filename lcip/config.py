"""The lcip Hydra config: where it lives, and composing it without a running Hydra app.

The console scripts compose ``lcip/conf/lcip.yaml`` through ``@hydra.main``; library code and
tests call :func:`compose_config` with the same overrides a user would type, and then call a
stage function (:mod:`lcip.stages`) on the result. No stage reads Hydra's global state.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: The Hydra config folder: ``$LCIP_CONFIG_DIR`` or the package's own ``lcip/conf`` (package
#: data: a wheel carries it; ``configs/`` at the repository root links to it).
CONFIG_DIR = Path(os.environ.get("LCIP_CONFIG_DIR", Path(__file__).resolve().parent / "conf"))
#: The primary config's name.
CONFIG_NAME = "lcip"


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose the lcip config as the console scripts do.

    Works inside or outside a running Hydra app (the app's global state is restored after).

    Args:
        overrides: command-line style overrides, e.g. ``["region=tiny", "loss=rq"]``.

    Returns:
        the composed config (without the ``hydra`` node).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    previous = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name=CONFIG_NAME, overrides=list(overrides))
    finally:
        GlobalHydra.instance().hydra = previous


def to_dict(node: Any) -> dict[str, Any]:
    """A config node as a plain, resolved dict."""
    out = OmegaConf.to_container(node, resolve=True)
    assert isinstance(out, dict)
    return {str(k): v for k, v in out.items()}


__all__ = ["CONFIG_DIR", "CONFIG_NAME", "compose_config", "to_dict"]
