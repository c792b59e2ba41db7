"""The collapse guard: a Lightning callback that watches q's predicted classes while training.

See :mod:`lcip.evaluation.collapse` for the check itself (kept free of Lightning, so
``lcip-evaluate`` uses it without importing the trainer).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lcip.evaluation.collapse import COLLAPSE_SHARE, PRIOR_SHARE, Collapse, check_collapse

log = logging.getLogger("lcip.evaluation.collapse")


def class_counts(pred: Tensor, valid: Tensor, num_classes: int) -> Tensor:
    """Pixels per class (float64) of a tensor of class indices where ``valid``.

    A scatter-add over every pixel (invalid ones weigh 0): no boolean indexing, so no device
    synchronisation on a GPU.
    """
    index = pred.long().clamp(0, num_classes - 1).flatten()
    counts = torch.zeros(num_classes, dtype=torch.float64, device=pred.device)
    return counts.scatter_add_(0, index, valid.flatten().to(torch.float64))


def batch_counts(logits: Tensor, batch: dict[str, Tensor]) -> Tensor | None:
    """(2, C) class counts of q's argmax and of the reference's over a batch's valid pixels.

    The reference is the prior's argmax, or the labels when the batch has no prior (then only
    the labelled pixels count). None when the batch has neither.
    """
    num_classes = int(logits.shape[1])
    with torch.no_grad():
        valid = batch["valid"]
        if "prior" in batch:
            reference = batch["prior"].argmax(1)
        elif "label" in batch:
            reference = batch["label"]
            valid = valid & (reference >= 0) & (reference < num_classes)
        else:
            return None
        q = class_counts(logits.argmax(1), valid, num_classes)
        return torch.stack([q, class_counts(reference, valid, num_classes)])


class CollapseGuard(Callback):
    """Check q for collapse in training and validation, log it, and optionally stop the run.

    Reads the class counts the task accumulates (``pl_module.collapse_counts``: stage name
    -> (2, C) tensor of q's and the prior's argmax counts over valid pixels, see
    :class:`lcip.training.tasks.ImplicitPosteriorTask`), summed over DDP ranks. A training check
    runs every ``every_n_steps`` steps, over the batches since the previous check; a validation
    check after every validation epoch (not the sanity check), over the validation tiles.
    Checks start at step ``after_steps`` and after the task's soft-naive warm-up
    (``warmup_steps``): the degenerate minima are the chosen loss's, and a network still
    fitting the prior may lean on its top class for a while (seen at the end of the warm-up
    of a 128-filter FCN on the real WV patches, which then trained well). Each check records
    ``<stage>/collapsed`` (0/1) and ``<stage>/q_top_share`` (the share of q's dominant class)
    in the run's ``metrics.csv`` (``val/q_top_share`` also before checks start). A
    check that finds a collapse the previous check of its stage did not writes one warning
    line naming the run, the step and the classes (kept in :attr:`fired`); one info line says
    when it is gone. With ``stop`` the run ends at the first collapse found and
    :attr:`stopped` holds the message (``lcip-train`` then fails with it, see
    :class:`lcip.evaluation.collapse.CollapseError`).

    Args:
        run: the run's name for the messages (e.g. its folder).
        classes: class names (index = class id).
        share: see :func:`lcip.evaluation.collapse.check_collapse`.
        prior_share: see :func:`lcip.evaluation.collapse.check_collapse`.
        every_n_steps: steps between training checks (0: validation checks only).
        after_steps: no check before this step (a fresh network may predict one class for
            its first steps).
        stop: stop the run at the first collapse found.
    """

    def __init__(
        self,
        run: str,
        classes: Sequence[str] = (),
        share: float = COLLAPSE_SHARE,
        prior_share: float = PRIOR_SHARE,
        every_n_steps: int = 50,
        after_steps: int = 100,
        stop: bool = False,
    ) -> None:
        self.run = run
        self.classes = tuple(classes)
        self.share = float(share)
        self.prior_share = float(prior_share)
        self.every_n_steps = int(every_n_steps)
        self.after_steps = int(after_steps)
        self.stop = bool(stop)
        self.stopped: str | None = None
        self.fired: list[str] = []
        self._collapsed = {"train": False, "val": False}
        self._train_share: float | None = None

    def _counts(
        self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str
    ) -> Tensor | None:
        """The stage's accumulated counts, summed over the ranks, and reset; None if none."""
        store: dict[str, Tensor] = getattr(pl_module, "collapse_counts", {})
        counts = store.pop(stage, None)
        if trainer.world_size > 1:  # every rank reaches the same checks: reduce on all
            num_classes = int(pl_module.hparams.get("num_classes", 0))
            local = counts if counts is not None else torch.zeros(2, num_classes)
            reduced = trainer.strategy.reduce(
                local.to(pl_module.device, torch.float64), reduce_op="sum"
            )
            counts = reduced if isinstance(reduced, Tensor) and reduced.sum() > 0 else None
        return counts

    def active(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        """Whether checks run at this step: from ``after_steps`` on and after the warm-up."""
        step = int(trainer.global_step)
        warmup = int(getattr(pl_module, "warmup_steps", 0) or 0)
        return step >= self.after_steps and (warmup == 0 or step > warmup)

    def _check(self, trainer: L.Trainer, stage: str, counts: Tensor) -> Collapse:
        found = check_collapse(
            counts[0].cpu().numpy(), counts[1].cpu().numpy(), self.share, self.prior_share
        )
        step = int(trainer.global_step)
        if found.collapsed and not self._collapsed[stage]:
            where = "training batches" if stage == "train" else "validation tiles"
            what = found.describe(self.classes)
            line = f"q collapsed: run {self.run}, step {step} ({where}): {what}"
            self.fired.append(line)
            log.warning(line)
            if self.stop and self.stopped is None:
                self.stopped = f"{line}; run stopped (callbacks.collapse_guard.stop=true)"
                trainer.should_stop = True
        elif self._collapsed[stage] and not found.collapsed:
            log.info(
                "q no longer collapsed: run %s, step %d: %s",
                self.run,
                step,
                found.describe(self.classes),
            )
        self._collapsed[stage] = found.collapsed
        return found

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """A training check every ``every_n_steps`` steps; the latest one is logged each step."""
        step = int(trainer.global_step)
        if self.every_n_steps > 0 and step % self.every_n_steps == 0:
            counts = self._counts(trainer, pl_module, "train")
            if counts is not None and self.active(trainer, pl_module):
                self._train_share = self._check(trainer, "train", counts).top_share
        if self._train_share is not None:
            pl_module.log("train/collapsed", float(self._collapsed["train"]), rank_zero_only=True)
            pl_module.log("train/q_top_share", self._train_share, rank_zero_only=True)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The validation check over the validation tiles (skipped in the sanity check)."""
        counts = self._counts(trainer, pl_module, "val")
        if trainer.sanity_checking or counts is None:
            return
        if not self.active(trainer, pl_module):
            q = counts[0]
            share = float(q.max() / q.sum()) if q.sum() > 0 else 0.0
            pl_module.log("val/q_top_share", share, rank_zero_only=True)
            return
        found = self._check(trainer, "val", counts)
        pl_module.log("val/collapsed", float(found.collapsed), rank_zero_only=True)
        pl_module.log("val/q_top_share", found.top_share, rank_zero_only=True)


__all__ = ["CollapseGuard", "batch_counts", "class_counts"]
