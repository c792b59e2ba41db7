"""Lightning task: trains a network q on imagery against a prior with an implicit-posterior loss."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from lcip.classes import IGNORE_INDEX
from lcip.errors import ConfigError
from lcip.losses import apply_loss, build_loss, implied_posterior, log_prior, log_probs
from lcip.training.collapse_guard import batch_counts
from lcip.training.models import load_state_from_checkpoint
from lcip.training.schedulers import CosineDecay

#: Losses that can fall into degenerate solutions from scratch; they get a CE warm-up by default.
_NEEDS_WARMUP = {"qr", "rq", "qr_free_energy"}

#: Default number of soft-naive CE steps before QR/RQ when training from scratch.
DEFAULT_WARMUP_STEPS = 300

#: Builds the optimizer from the parameters: a ``_partial_`` optimizer (``configs/optimizer``).
OptimizerFactory = Callable[[Iterable[Tensor]], Optimizer]
#: Builds the learning-rate scheduler from the optimizer: a ``_partial_`` scheduler
#: (``configs/scheduler``).
SchedulerFactory = Callable[[Optimizer], Any]


def adamw(lr: float = 1e-3, weight_decay: float = 1e-2) -> OptimizerFactory:
    """AdamW as an optimizer factory (the defaults are ``configs/optimizer/adamw.yaml``'s)."""
    return partial(torch.optim.AdamW, lr=lr, weight_decay=weight_decay)


class BaseTask(L.LightningModule):
    """What every lcip task shares: a network, its optimizer and its learning-rate scheduler.

    The optimizer and the scheduler come as factories (Hydra ``_partial_`` targets, as in
    lightning-hydra-template): ``optimizer(parameters)`` and ``scheduler(optimizer)``. Both are
    tried on a probe parameter when the task is made, so a bad setting fails before training.
    :meth:`configure_optimizers` steps a ``ReduceLROnPlateau`` on ``monitor`` once an epoch,
    any other scheduler at its own ``interval`` attribute (``"step"`` for
    :class:`~lcip.training.schedulers.CosineDecay`; ``"epoch"`` when it has none), and gives a
    scheduler with a ``run_length`` attribute left None the run's length, read lazily.

    Args:
        model: the network (logits, B x C x H x W).
        optimizer: optimizer factory; None: :func:`adamw` with its defaults.
        scheduler: scheduler factory; None: a constant learning rate.
        monitor: the metric a ``ReduceLROnPlateau`` scheduler watches.

    Raises:
        ConfigError: one line naming ``optimizer`` or ``scheduler`` when it cannot be built.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        monitor: str = "val/loss",
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer if optimizer is not None else adamw()
        self.scheduler_factory = scheduler
        self.monitor = monitor
        self._try_optimization()

    def _try_optimization(self) -> None:
        """Build the optimizer and the scheduler once on a probe parameter."""
        try:
            probe = self.optimizer_factory([nn.Parameter(torch.zeros(1))])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"optimizer: {_describe(self.optimizer_factory)}: {exc}") from None
        if self.scheduler_factory is None:
            return
        try:
            self.scheduler_factory(probe)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"scheduler: {_describe(self.scheduler_factory)}: {exc}") from None

    def _run_length(self) -> int:
        """The run's optimizer steps (Lightning's estimate; builds the training loader)."""
        return int(self.trainer.estimated_stepping_batches)

    def configure_optimizers(self) -> Any:
        """The optimizer over the network's parameters, and its scheduler if one is set."""
        optimizer = self.optimizer_factory(self.model.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        if hasattr(scheduler, "run_length") and scheduler.run_length is None:
            scheduler.run_length = self._run_length
        settings: dict[str, Any] = {"scheduler": scheduler}
        if isinstance(scheduler, ReduceLROnPlateau):
            settings.update(monitor=self.monitor, strict=False)
        else:
            settings["interval"] = getattr(scheduler, "interval", "epoch")
        return {"optimizer": optimizer, "lr_scheduler": settings}


def _describe(factory: Callable[..., Any]) -> str:
    """A factory as a call: ``AdamW(lr=-1, weight_decay=0.01)``."""
    if isinstance(factory, partial):
        name = getattr(factory.func, "__name__", repr(factory.func))
        shown = ", ".join(f"{k}={v!r}" for k, v in factory.keywords.items())
        return f"{name}({shown})"
    return getattr(factory, "__name__", repr(factory))


class ImplicitPosteriorTask(BaseTask):
    """Train ``q(l|x)`` so that it agrees with the implied posterior ``r ∝ p q / sum_j q_j``.

    Logs ``train/loss``, and on validation ``val/loss`` plus accuracy and mIoU of both outputs:
    ``val/q_acc``, ``val/q_miou`` (the network) and ``val/r_acc``, ``val/r_miou`` (the implied
    posterior). Labels are used only for these metrics.

    The validation ``r`` uses the denominator scope of prediction (:mod:`lcip.inference.predict`):
    the mean of ``q`` over each validation *tile's* valid pixels, not over one batch. The sums are
    accumulated per tile during the validation pass (whose crops partition each tile), then a
    second pass over the validation loader computes ``r`` with them, so the ``val/r_*``
    figures a user watches are those ``lcip-predict`` will give on the same tiles.

    Every training and validation batch also adds the class counts of q's argmax and of the
    prior's argmax over its valid pixels to :attr:`collapse_counts`, which the collapse guard
    (:class:`lcip.training.collapse_guard.CollapseGuard`) reads to tell a collapsed q.

    ``val/loss`` is the mean of the batches' losses weighted by their valid pixels. Under DDP
    each rank validates its share of the validation batches (see
    :class:`lcip.data.samplers.ShardedBatchSampler`); the per-tile sums are all-reduced before the
    second pass and every figure is a ratio of sums over the ranks, so N ranks report the
    single-process figures.

    Args:
        model: the network (logits, B x C x H x W).
        num_classes: number of target classes.
        loss: loss name (see :data:`lcip.losses.LOSSES`): the implicit-posterior losses, the
            baselines on the prior, ``lsr`` (label super-resolution; batches must carry
            ``nlcd`` and ``block``) and ``hr`` (high-res supervised: cross-entropy on the
            batch's 1 m labels, which are then used for training, not only for metrics).
        loss_kwargs: extra loss arguments (``smoothing``, ``denominator``, ...).
        optimizer: optimizer factory (see :class:`BaseTask`); None: :func:`adamw`.
        scheduler: scheduler factory; lcip's default is
            :class:`~lcip.training.schedulers.CosineDecay` (decay to 0 over the run's steps, so
            the run ends on a settled model; that matters because no monitor can pick one: QR's
            loss on its own training tiles is lowest at a collapsed q, see
            :mod:`lcip.evaluation.collapse`); the paper's is ``ReduceLROnPlateau`` on
            ``monitor`` (``configs/scheduler/plateau.yaml``); None: a constant rate.
        warmup_steps: soft-naive CE steps on the prior before the chosen loss. None means
            :data:`DEFAULT_WARMUP_STEPS` for QR/RQ trained from scratch and 0 otherwise.
        init_from: checkpoint to warm-start the model from.
        monitor: the metric of ``ReduceLROnPlateau`` (``val/loss`` needs no labels).
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        loss: str = "qr",
        loss_kwargs: dict[str, Any] | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = CosineDecay,
        warmup_steps: int | None = None,
        init_from: str | None = None,
        monitor: str = "val/loss",
    ) -> None:
        super().__init__(model, optimizer, scheduler, monitor)
        # the factories are not hyperparameters: checkpoints stay loadable with weights_only
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.loss_kwargs = dict(loss_kwargs or {})
        if self.loss_kwargs.get("denominator") == "running":
            self.loss_kwargs.setdefault("num_classes", num_classes)
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
        self.val_loss = MeanMetric()
        #: stage ("train" / "val") -> (2, C) counts of q's argmax and the prior's argmax over
        #: valid pixels since the collapse guard last read them (lcip.training.collapse_guard).
        self.collapse_counts: dict[str, Tensor] = {}

    def _count_classes(self, stage: str, logits: Tensor, batch: dict[str, Tensor]) -> None:
        """Add a batch's class counts of q and the prior to ``collapse_counts[stage]``."""
        counts = batch_counts(logits.detach(), batch)
        if counts is not None:
            previous = self.collapse_counts.get(stage)
            self.collapse_counts[stage] = counts if previous is None else previous + counts

    def setup(self, stage: str) -> None:
        """Give the metrics process-local state (see :func:`unshare_metric_states`)."""
        unshare_metric_states(self)

    def forward(self, image: Tensor) -> Tensor:
        """Logits of the network, in float32 (also under bf16/16-bit mixed precision)."""
        out: Tensor = self.model(image)
        return out.float()

    def in_warmup(self) -> bool:
        """Whether the current step still uses the soft-naive CE warm-up."""
        return self.global_step < self.warmup_steps

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step on a batch of crops."""
        logits = self(batch["image"])
        criterion = self.warmup_criterion if self.in_warmup() else self.criterion
        loss = apply_loss(criterion, logits, batch)
        self._count_classes("train", logits, batch)
        bs = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/warmup", float(self.in_warmup()), batch_size=bs)
        return loss

    def _smoothing(self) -> float:
        return float(self.loss_kwargs.get("smoothing", 1e-4))

    def on_validation_epoch_start(self) -> None:
        """Reset the per-tile sums of q and the validation class counts."""
        self.collapse_counts.pop("val", None)
        self._tile_sums: dict[int, Tensor] = {}
        self._tile_counts: dict[int, Tensor] = {}

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Loss and q accuracy/mIoU on a batch; accumulates per-tile sums of q for r."""
        logits = self(batch["image"])
        mask = batch["valid"]
        loss = apply_loss(self.criterion, logits, batch).detach()
        self._count_classes("val", logits, batch)
        bs = batch["image"].shape[0]
        valid = mask.sum().to(loss.dtype)  # 0 in a padding batch (see ShardedBatchSampler)
        self.val_loss.update(torch.where(valid > 0, loss, 0.0), weight=valid)
        self.log("val/loss", self.val_loss, prog_bar=True)
        if "label" not in batch:
            return
        log_q = log_probs(logits, "logits", self._smoothing())
        self.val_q.update(log_q.argmax(1), _target(batch))
        self.log_dict(self.val_q, batch_size=bs)
        q = log_q.detach().exp().double() * mask.unsqueeze(1)
        for tile in batch["tile"].unique().tolist():
            rows = batch["tile"] == tile
            total = q[rows].sum(dim=(0, 2, 3))
            count = mask[rows].sum().double()
            self._tile_sums[tile] = self._tile_sums.get(tile, 0) + total
            self._tile_counts[tile] = self._tile_counts.get(tile, 0) + count

    def on_validation_epoch_end(self) -> None:
        """Second pass: r with each tile's denominator, and the val/r metrics."""
        if not getattr(self, "_tile_sums", None):  # no labels (on every rank alike)
            return
        loaders = self.trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        assert loader is not None
        log_denom = self._tile_log_denominators(len(loader.dataset.tile_shapes))
        # The batches the first pass ran (fewer under limit_val_batches or the sanity check).
        trainer = self.trainer
        ran = trainer.num_sanity_val_batches if trainer.sanity_checking else trainer.num_val_batches
        limit = int(ran[0]) if ran and math.isfinite(ran[0]) else None
        smoothing = self._smoothing()
        with torch.no_grad():
            for i, batch in enumerate(loader):
                if limit is not None and i >= limit:
                    break
                batch = {k: v.to(self.device) for k, v in batch.items()}
                log_q = log_probs(self(batch["image"]), "logits", smoothing)
                denom = log_denom[batch["tile"]].to(log_q.dtype)[..., None, None]
                log_r = implied_posterior(log_q, log_prior(batch["prior"], smoothing), denom)
                self.val_r.update(log_r.argmax(1), _target(batch))
        # Logged as metrics: Lightning computes them (summed over the ranks), then resets them.
        self.log_dict(self.val_r, prog_bar=True)

    def _tile_log_denominators(self, num_tiles: int) -> Tensor:
        """(tiles, C) log of each validation tile's mean q (all-reduced under DDP).

        Args:
            num_tiles: number of validation tiles (the same on every rank, whichever tiles
                its share of the batches touched).
        """
        sums = torch.zeros(num_tiles, self.hparams["num_classes"], dtype=torch.float64)
        counts = torch.zeros(num_tiles, 1, dtype=torch.float64)
        sums, counts = sums.to(self.device), counts.to(self.device)
        for tile, total in self._tile_sums.items():
            sums[tile] = total
            counts[tile] = self._tile_counts[tile]
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        return (sums / counts.clamp_min(1)).clamp_min(1e-30).log()


def unshare_metric_states(module: nn.Module) -> None:
    """Give every torchmetrics state of ``module`` fresh memory of this process's own.

    ``ddp_spawn`` on CPU hands the module to its processes through ``torch.multiprocessing``,
    which puts every tensor in shared memory. Lightning copies the parameters and buffers back
    out, but metric states are neither: without this, all ranks would update one shared
    confusion matrix in place, racing, and report wrong sums (seen as a flaky mIoU).
    ``reset`` sets each state to a fresh copy of its default (a collection's own ``reset`` also
    keeps its compute groups' shared states).
    """
    for child in module.children():
        if isinstance(child, Metric | MetricCollection):
            child.reset()
        else:
            unshare_metric_states(child)


def _target(batch: dict[str, Tensor]) -> Tensor:
    """The batch's labels with invalid pixels set to the ignore index."""
    target = batch["label"].clone()
    target[~batch["valid"]] = IGNORE_INDEX
    return target


class SupervisedTask(BaseTask):
    """Cross-entropy on high-resolution labels (ignore index), e.g. for the learned prior's network.

    Args:
        model: the network (logits).
        num_classes: number of classes.
        optimizer: optimizer factory (see :class:`BaseTask`); None: :func:`adamw`.
        scheduler: scheduler factory; None: a constant learning rate.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__(model, optimizer, scheduler)
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE_INDEX)

    def setup(self, stage: str) -> None:
        """Give the metrics process-local state (see :func:`unshare_metric_states`)."""
        unshare_metric_states(self)

    def forward(self, image: Tensor) -> Tensor:
        """Logits of the network."""
        out: Tensor = self.model(image)
        return out

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One step of cross-entropy against the labels (invalid pixels ignored)."""
        logits = self(batch["image"])
        target = _target(batch)
        loss = nn.functional.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
        if not (target != IGNORE_INDEX).any():  # keep the graph, never NaN
            loss = logits.sum() * 0.0
        self.train_acc(logits.argmax(1), target)
        bs = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/acc", self.train_acc, prog_bar=True, batch_size=bs)
        return loss


__all__ = [
    "DEFAULT_WARMUP_STEPS",
    "BaseTask",
    "ImplicitPosteriorTask",
    "OptimizerFactory",
    "SchedulerFactory",
    "SupervisedTask",
    "adamw",
    "unshare_metric_states",
]
