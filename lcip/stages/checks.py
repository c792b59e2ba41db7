"""Up-front checks of settings a user can get wrong, each failing in one line naming the key.

The ``data``, ``train`` and ``predict`` groups are checked from their schemas
(:func:`lcip.stages.schema.validate`); the checks here cover the other groups' settings and
what spans groups (the accelerator, writable folders, the loss name, the validation splits).

Stages call these before any work starts and before anything in an output folder is touched,
so a rejected run leaves the previous one intact.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lcip.errors import ConfigError
from lcip.stages.schema import validate


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key)


def check_number(cfg: DictConfig, key: str, minimum: float, *, strict: bool = True) -> None:
    """``key`` must be a finite number ``> minimum`` (``>= minimum`` when not strict)."""
    value = _get(cfg, key)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok:
        op = ">" if strict else ">="
        raise ConfigError(f"{key}={value!r}: must be a number {op} {minimum:g}")


def check_integer(cfg: DictConfig, key: str, minimum: int) -> None:
    """``key`` must be an integer ``>= minimum``."""
    value = _get(cfg, key)
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise ConfigError(f"{key}={value!r}: must be an integer >= {minimum}")


def check_choice(cfg: DictConfig, key: str, choices: tuple[str, ...]) -> None:
    """``key`` must be one of ``choices``."""
    value = _get(cfg, key)
    if value not in choices:
        raise ConfigError(f"{key}={value!r}: choose one of {list(choices)}")


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (imports torch)."""
    import torch

    return bool(torch.cuda.is_available())


def check_device(key: str, device: str) -> None:
    """A torch device setting must name a device this machine has."""
    if device.startswith("cuda") and not cuda_available():
        raise ConfigError(f"{key}={device}: no CUDA GPU is available on this machine (use cpu)")


def check_accelerator(cfg: DictConfig) -> None:
    """``trainer.accelerator`` must be usable here."""
    accelerator = str(_get(cfg, "trainer.accelerator") or "auto")
    if accelerator in ("gpu", "cuda") and not cuda_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator}: no CUDA GPU is available on this machine "
            "(use trainer=cpu)"
        )


def check_writable(key: str, folder: str | Path) -> None:
    """``folder`` (created if needed) must accept new files."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".lcip-write-check.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{key}={folder}: cannot write there ({exc.strerror or exc})") from None


def check_loss_name(cfg: DictConfig) -> None:
    """``loss.name`` must name a loss of :data:`lcip.losses.LOSSES` (imports torch)."""
    from lcip.losses import LOSSES

    name = _get(cfg, "loss.name")
    if not isinstance(name, str) or name not in LOSSES:
        raise ConfigError(f"loss.name={name}: unknown loss {name!r}; choose one of {list(LOSSES)}")


def check_predict_settings(cfg: DictConfig) -> None:
    """The ``predict`` group's values (:class:`lcip.stages.schema.PredictConfig`)."""
    validate(cfg, "predict")


def check_training_settings(cfg: DictConfig) -> None:
    """Every training setting a user can get wrong, checked before any work starts."""
    check_loss_name(cfg)
    # any other optimizer or scheduler setting is tried by the task (lcip.training.tasks.BaseTask)
    if _get(cfg, "optimizer.lr") is not None:
        check_number(cfg, "optimizer.lr", 0)
    if _get(cfg, "optimizer.weight_decay") is not None:
        check_number(cfg, "optimizer.weight_decay", 0, strict=False)
    if _get(cfg, "task.warmup_steps") is not None:
        check_integer(cfg, "task.warmup_steps", 0)
    validate(cfg, "data")  # types and ranges of the groups with a schema (lcip.stages.schema)
    validate(cfg, "train")
    check_number(cfg, "loss.smoothing", 0, strict=False)
    if _get(cfg, "callbacks.last_checkpoint") is not None:
        check_integer(cfg, "callbacks.last_checkpoint.every_n_steps", 0)
    max_epochs = _get(cfg, "trainer.max_epochs")
    if max_epochs is not None and max_epochs != -1:
        check_integer(cfg, "trainer.max_epochs", 1)
    if not list(_get(cfg, "region.val_splits") or []):
        raise ConfigError(
            "region.val_splits=[]: training needs a validation split (it drives the best "
            "checkpoint, the learning-rate schedule and early stopping)"
        )
    check_accelerator(cfg)


__all__ = [
    "check_accelerator",
    "check_choice",
    "check_device",
    "check_integer",
    "check_loss_name",
    "check_number",
    "check_predict_settings",
    "check_training_settings",
    "check_writable",
    "cuda_available",
]
