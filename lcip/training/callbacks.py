"""Lightning callbacks and loggers for resumable training runs."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class ReleaseProcessGroup(Callback):
    """End a multi-process run with every rank leaving the process group together.

    Without it a rank that finishes first exits while its peers still hold gloo connections
    to it; the peers then abort in the process group's teardown (``terminate called without
    an active exception``, SIGABRT) after the run finished, about one run in six here with
    ``ddp_spawn`` on CPU. In the ``teardown`` hook (the last one Lightning calls, after
    ``on_fit_end``, for ``fit``, ``validate``, ``test`` and ``predict`` alike) the ranks meet at
    a barrier and destroy the group. A no-op in a single process.
    """

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Barrier, then destroy the default process group (when one is initialized)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


class LastCheckpoint(Callback):
    """Keep ``last.ckpt`` the true last state of a run, written atomically.

    Saved every ``every_n_steps`` optimizer steps (mid-epoch, so a killed run loses at most
    that many steps), after every validation (end of epoch) and when training ends. Each save
    goes to a temporary file renamed into place, so a kill during a save leaves the previous
    ``last.ckpt`` whole.

    Args:
        path: the checkpoint file.
        every_n_steps: steps between mid-epoch saves (0: only at epoch and training end).
    """

    def __init__(self, path: str | Path, every_n_steps: int = 50) -> None:
        self.path = Path(path)
        self.every_n_steps = every_n_steps

    def _save(self, trainer: L.Trainer) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # full state: runs resume from it
        if trainer.is_global_zero:
            os.replace(tmp, self.path)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        """Mid-epoch save every ``every_n_steps`` steps."""
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save after each validation (not the sanity check)."""
        if not trainer.sanity_checking:
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save the final state."""
        self._save(trainer)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, appending to an existing ``metrics.csv`` instead of deleting it."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])


class AppendingCSVLogger(CSVLogger):
    """A CSV logger that appends to ``metrics.csv``, so a resumed run keeps its history."""

    @property
    def experiment(self) -> ExperimentWriter:
        """The writer (created on first use)."""
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        assert isinstance(self._experiment, ExperimentWriter)
        return self._experiment


__all__ = ["AppendingCSVLogger", "LastCheckpoint"]
