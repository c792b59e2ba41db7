"""The output folders a console script writes to, checked before Hydra creates its log folder.

Hydra creates ``hydra.run.dir`` (``<paths.root>/logs/<stage>/<time>``) before the stage runs,
so a ``paths.root`` under a regular file would end in Hydra's traceback there. The console
scripts' config registers :class:`OutputFolders` as a Hydra callback (``hydra.callbacks`` in
``lcip/conf/lcip.yaml``): it runs on the composed config just before that folder is made and
stops with one line naming the setting, exit status 2, as every user-caused error does.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lcip.errors import ConfigError

#: The settings naming folders the scripts create, checked in this order (the log folder last).
FOLDER_KEYS: tuple[str, ...] = ("paths.root",)


def blocking_file(path: Path) -> Path | None:
    """The file that stops ``path`` from being (or becoming) a folder, if any.

    Args:
        path: a folder to be created (need not exist).

    Returns:
        ``path`` itself or its nearest existing ancestor when that is not a folder (a regular
        file, a device, ...); None when ``path`` can be a folder.
    """
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def check_output_folders(config: DictConfig, log_key: str = "hydra.run.dir") -> None:
    """Every output folder setting must be creatable as a folder.

    Args:
        config: the composed config (with its ``hydra`` node).
        log_key: the setting of Hydra's log folder (``hydra.run.dir`` or ``hydra.sweep.dir``).

    Raises:
        ConfigError: ``<key>=<value>: <file> is a file, not a folder``.
    """
    for key in (*FOLDER_KEYS, log_key):
        try:
            value = OmegaConf.select(config, key)
        except Exception:  # an interpolation Hydra resolves later: it reports it itself
            continue
        if value is None:
            continue
        blocker = blocking_file(Path(str(value)).expanduser())
        if blocker is not None:
            raise ConfigError(f"{key}={value}: {blocker} is a file, not a folder")


class OutputFolders(Callback):
    """Hydra callback: :func:`check_output_folders` before the run's log folder is made."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check ``paths.root`` and ``hydra.run.dir`` (exits with status 2 on an error)."""
        _check_or_exit(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check ``paths.root`` and ``hydra.sweep.dir`` (exits with status 2 on an error)."""
        _check_or_exit(config, "hydra.sweep.dir")


def _check_or_exit(config: DictConfig, log_key: str) -> None:
    # Hydra turns an exception raised in a callback into a warning: exit here instead.
    try:
        check_output_folders(config, log_key)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


__all__ = ["FOLDER_KEYS", "OutputFolders", "blocking_file", "check_output_folders"]
