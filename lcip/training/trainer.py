"""Building a Lightning trainer, its callbacks and logger from config dicts; choosing a resume.

Library code: everything here takes plain mappings (a ``trainer``, ``callbacks`` or ``logger``
config node as a resolved dict) and paths. ``lcip-train`` (:mod:`lcip.stages.train`) and the
learned prior (:mod:`lcip.priors.learned`) build their trainers through :func:`build_trainer`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lcip.config import instantiate
from lcip.errors import ConfigError
from lcip.io.provenance import differences

#: Config sections that define a run: a checkpoint is resumed only if they are unchanged.
RUN_IDENTITY = (
    "region",
    "prior",
    "model",
    "loss",
    "optimizer",
    "scheduler",
    "data",
    "task",
    "seed",
)


def multi_process(trainer: Mapping[str, Any]) -> bool:
    """Whether a ``trainer`` config starts several processes (DDP over devices or nodes)."""
    if int(trainer.get("num_nodes", 1) or 1) > 1:
        return True
    devices = trainer.get("devices", 1)
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        return len(devices) > 1
    if str(devices) == "auto":
        return "ddp" in str(trainer.get("strategy", "auto"))
    return str(devices) != "1"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (Linux ``/proc/cpuinfo``: AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


def trainer_arguments(trainer: Mapping[str, Any]) -> dict[str, Any]:
    """A ``trainer`` config with its precision chosen where it is left to lcip.

    A CPU trainer whose ``precision`` is null (``trainer=cpu``) gets ``bf16-mixed`` on CPUs
    with native bf16 (AVX512-BF16 or AMX: about 1.5x faster than float32 there, see
    BENCHMARKS.md) and ``32-true`` elsewhere; one without the key keeps Lightning's default.

    Args:
        trainer: ``lightning.Trainer`` arguments (with ``_target_``).

    Returns:
        a copy, with ``precision`` set.
    """
    node = dict(trainer)
    if "precision" in node and node["precision"] is None and str(node.get("accelerator")) == "cpu":
        node["precision"] = "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    return node


def build_trainer(trainer: Mapping[str, Any], **kwargs: Any) -> Any:
    """A ``lightning.Trainer`` from a trainer config that leaves lcip's samplers alone.

    The crop samplers shard by rank themselves (:mod:`lcip.data.samplers`); Lightning's automatic
    ``DistributedSampler`` would wrap them and shard each rank's share once more (and rebuild
    the resumable loader), so it is switched off. Every trainer also gets
    :class:`~lcip.training.callbacks.ReleaseProcessGroup`, so DDP ranks leave together.

    Args:
        trainer: trainer config (``_target_: lightning.Trainer`` and its arguments); its
            precision is chosen as :func:`trainer_arguments` does.
        **kwargs: further Trainer arguments (callbacks, logger, ...).

    Returns:
        the trainer.

    Raises:
        ConfigError: one line naming the ``trainer`` setting the trainer refuses.
    """
    from lcip.training.callbacks import ReleaseProcessGroup

    callbacks = [*kwargs.pop("callbacks", []), ReleaseProcessGroup()]
    node = {"trainer": trainer_arguments(trainer)}
    return instantiate(
        node,
        "trainer",
        _convert_="all",
        use_distributed_sampler=False,
        callbacks=callbacks,
        **kwargs,
    )


def build_callbacks(
    callbacks: Mapping[str, Mapping[str, Any] | None],
    given: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The callbacks of a ``callbacks`` config: one per node that is not null.

    Arguments reach them as plain Python values (Hydra's ``_convert_="all"``), so their state in
    a checkpoint loads with ``weights_only=True``.

    Args:
        callbacks: name -> ``_target_`` node (or None: that callback is off).
        given: name -> arguments the caller supplies (paths, the run's classes...); those of
            a callback that is off are dropped.

    Returns:
        name -> callback, in the config's order.

    Raises:
        ConfigError: one line naming ``callbacks.<name>`` (and its key) when one cannot be built.
    """
    given = given or {}
    root = {"callbacks": dict(callbacks)}
    return {
        name: instantiate(root, f"callbacks.{name}", _convert_="all", **dict(given.get(name, {})))
        for name, node in callbacks.items()
        if node is not None
    }


def build_logger(logger: Mapping[str, Any] | None, **kwargs: Any) -> Any:
    """The logger of a ``logger`` config node (``False``, no logger, when it is null).

    Args:
        logger: a ``_target_`` node, or None.
        **kwargs: arguments the caller supplies (its folder, ...).

    Raises:
        ConfigError: one line naming ``logger`` (and its key) when it cannot be built.
    """
    if logger is None:
        return False
    return instantiate({"logger": dict(logger)}, "logger", _convert_="all", **kwargs)


def run_identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that define a training run (:data:`RUN_IDENTITY` of a resolved config)."""
    return {k: config[k] for k in RUN_IDENTITY if k in config}


def resume_checkpoint(
    run_dir: Path,
    last: Path,
    config: Mapping[str, Any],
    saved: Mapping[str, Any],
    resume: str = "auto",
) -> Path | None:
    """The checkpoint to resume from, or None to start afresh.

    With ``resume="auto"`` an existing ``last`` is resumed when the config ``saved`` with the
    run has the same :data:`RUN_IDENTITY` as ``config``; other settings (``trainer.max_epochs``,
    prediction, ...) may change. A run made with other settings is refused in one line, so it
    is never silently continued nor overwritten.

    Args:
        run_dir: the run's folder (named in the error).
        last: its last checkpoint (need not exist).
        config: the resolved config of this run.
        saved: the resolved config saved with the run (empty when there is none).
        resume: ``auto`` or ``never`` (start afresh).

    Raises:
        ConfigError: if the run folder holds a run made with other settings.
    """
    if resume == "never" or not last.exists():
        return None
    diff = differences(run_identity(config), run_identity(saved))
    if diff:
        shown = "; ".join(diff[:3]) + (f"; ... ({len(diff)} in all)" if len(diff) > 3 else "")
        raise ConfigError(
            f"run_dir={run_dir}: holds a run made with other settings ({shown}); "
            "set train.resume=never to replace it, or run_name=<new name> to keep both"
        )
    return last


__all__ = [
    "RUN_IDENTITY",
    "build_callbacks",
    "build_logger",
    "build_trainer",
    "cpu_has_native_bf16",
    "multi_process",
    "resume_checkpoint",
    "run_identity",
    "trainer_arguments",
]
