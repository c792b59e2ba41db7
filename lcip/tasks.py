"""Lightning task: trains a network q on imagery against a prior with an implicit-posterior loss."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from lcip.classes import IGNORE_INDEX
from lcip.losses import build_loss, implied_posterior, log_denominator, log_prior, log_probs
from lcip.models import load_state_from_checkpoint

#: Losses that can fall into degenerate solutions from scratch; they get a CE warm-up by default.
_NEEDS_WARMUP = {"qr", "rq", "qr_free_energy"}

#: Default number of soft-naive CE steps before QR/RQ when training from scratch.
DEFAULT_WARMUP_STEPS = 300


class ImplicitPosteriorTask(L.LightningModule):
    """Train ``q(l|x)`` so that it agrees with the implied posterior ``r ∝ p q / sum_j q_j``.

    Logs ``train/loss``, and on validation ``val/loss`` plus accuracy and mIoU of both outputs:
    ``val/q_acc``, ``val/q_miou`` (the network) and ``val/r_acc``, ``val/r_miou`` (the implied
    posterior, denominator over the validation batch). Labels are used only for these metrics.

    Args:
        model: the network (logits, B x C x H x W).
        num_classes: number of target classes.
        loss: loss name (see :data:`lcip.losses.LOSSES`).
        loss_kwargs: extra loss arguments (``smoothing``, ``denominator``, ...).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        lr_patience: ReduceLROnPlateau patience (epochs without improvement of the monitor).
        lr_factor: ReduceLROnPlateau factor.
        warmup_steps: soft-naive CE steps on the prior before the chosen loss. None means
            :data:`DEFAULT_WARMUP_STEPS` for QR/RQ trained from scratch and 0 otherwise.
        init_from: checkpoint to warm-start the model from.
        monitor: metric for the LR scheduler (``val/loss`` needs no labels).
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        loss: str = "qr",
        loss_kwargs: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        lr_patience: int = 3,
        lr_factor: float = 0.5,
        warmup_steps: int | None = None,
        init_from: str | None = None,
        monitor: str = "val/loss",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.loss_kwargs = dict(loss_kwargs or {})
        self.criterion = build_loss(loss, **self.loss_kwargs)
        self.warmup_criterion = build_loss(
            "soft_naive", smoothing=self.loss_kwargs.get("smoothing", 1e-4)
        )
        if warmup_steps is None:
            warmup_steps = (
                DEFAULT_WARMUP_STEPS if (loss in _NEEDS_WARMUP and init_from is None) else 0
            )
        self.warmup_steps = warmup_steps
        if init_from:
            load_state_from_checkpoint(self.model, init_from)
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE_INDEX),
                "miou": MulticlassJaccardIndex(
                    num_classes, average="macro", ignore_index=IGNORE_INDEX
                ),
            }
        )
        self.val_q = metrics.clone(prefix="val/q_")
        self.val_r = metrics.clone(prefix="val/r_")

    def forward(self, image: Tensor) -> Tensor:
        """Logits of the network."""
        out: Tensor = self.model(image)
        return out

    def in_warmup(self) -> bool:
        """Whether the current step still uses the soft-naive CE warm-up."""
        return self.global_step < self.warmup_steps

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step on a batch of crops."""
        logits = self(batch["image"])
        criterion = self.warmup_criterion if self.in_warmup() else self.criterion
        loss: Tensor = criterion(logits, batch["prior"], batch["mask"])
        bs = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/warmup", float(self.in_warmup()), batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Loss, and q/r accuracy and mIoU against the labels, on a validation batch."""
        logits = self(batch["image"])
        mask = batch["mask"]
        loss = self.criterion(logits, batch["prior"], mask)
        bs = batch["image"].shape[0]
        self.log("val/loss", loss, prog_bar=True, batch_size=bs)
        if "label" not in batch:
            return
        smoothing = self.loss_kwargs.get("smoothing", 1e-4)
        log_q = log_probs(logits, "logits", smoothing)
        log_r = implied_posterior(
            log_q, log_prior(batch["prior"], smoothing), log_denominator(log_q, mask)
        )
        target = batch["label"].clone()
        target[~mask] = IGNORE_INDEX
        self.val_q.update(log_q.argmax(1), target)
        self.val_r.update(log_r.argmax(1), target)
        self.log_dict(self.val_q, batch_size=bs)
        self.log_dict(self.val_r, prog_bar=True, batch_size=bs)

    def configure_optimizers(self) -> Any:
        """AdamW with ReduceLROnPlateau on the monitored metric."""
        optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=self.hparams["lr"],
            weight_decay=self.hparams["weight_decay"],
        )
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="min",
            factor=self.hparams["lr_factor"],
            patience=self.hparams["lr_patience"],
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": self.hparams["monitor"],
                "strict": False,
            },
        }


class SupervisedTask(L.LightningModule):
    """Cross-entropy on high-resolution labels (ignore index), e.g. for the learned prior's network.

    Args:
        model: the network (logits).
        num_classes: number of classes.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
    """

    def __init__(
        self, model: nn.Module, num_classes: int, lr: float = 1e-3, weight_decay: float = 1e-2
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE_INDEX)

    def forward(self, image: Tensor) -> Tensor:
        """Logits of the network."""
        out: Tensor = self.model(image)
        return out

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One step of cross-entropy against the labels (invalid pixels ignored)."""
        logits = self(batch["image"])
        target = batch["label"].clone()
        target[~batch["mask"]] = IGNORE_INDEX
        loss = nn.functional.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
        if not (target != IGNORE_INDEX).any():  # keep the graph, never NaN
            loss = logits.sum() * 0.0
        self.train_acc(logits.argmax(1), target)
        bs = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/acc", self.train_acc, prog_bar=True, batch_size=bs)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW."""
        return torch.optim.AdamW(
            self.model.parameters(),
            lr=self.hparams["lr"],
            weight_decay=self.hparams["weight_decay"],
        )
