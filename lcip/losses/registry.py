"""The losses by config name (``loss.name``), and building one from its settings."""

from __future__ import annotations

import inspect
from typing import Any

from lcip.errors import ConfigError
from lcip.losses.base import Loss
from lcip.losses.baselines import HardNaiveLoss, HighResLoss, NLLUnionLoss, SoftNaiveLoss
from lcip.losses.lsr import LSRLoss
from lcip.losses.qr import QRFreeEnergyLoss, QRLoss, RQLoss

__all__ = ["LOSSES", "build_loss"]

#: Loss classes by config name.
LOSSES: dict[str, type[Loss]] = {
    "qr": QRLoss,
    "qr_free_energy": QRFreeEnergyLoss,
    "rq": RQLoss,
    "soft_naive": SoftNaiveLoss,
    "hard_naive": HardNaiveLoss,
    "nll_union": NLLUnionLoss,
    "hr": HighResLoss,
    "lsr": LSRLoss,
}


def build_loss(name: str, **kwargs: Any) -> Loss:
    """Build a loss by its config name.

    Args:
        name: one of the keys of :data:`LOSSES`.
        **kwargs: constructor arguments of that loss (e.g. ``smoothing``, ``denominator``).

    Returns:
        The loss module.

    Raises:
        ConfigError: for an unknown loss name, an argument the loss does not take, or an invalid
            argument value (unknown ``input_type`` or ``denominator``, negative ``smoothing``...).
    """
    try:
        cls = LOSSES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown loss {name!r}; choose one of {list(LOSSES)}") from None
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(k for k in kwargs if k not in params)
    if unknown:
        raise ConfigError(f"loss {name!r} does not take argument(s) {unknown}; it takes {params}")
    return cls(**kwargs)
