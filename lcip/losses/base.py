"""What a loss needs from a batch, the base classes of the losses, and the call with a batch.

A loss declares what it compares the network's output to through its :attr:`Loss.needs`
(a :class:`Needs` flag), and :func:`apply_loss` is the one place that calls a loss with a
batch (a dict of the keys documented in :mod:`lcip.data.datasets`). The training stage asks
the same attribute what the data must carry (NLCD blocks for label super-resolution).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import ClassVar, Protocol

import torch
from torch import Tensor, nn

from lcip.losses.functional import (
    DEFAULT_SMOOTHING,
    INPUT_TYPES,
    InputType,
    _check_choice,
    _check_inputs,
    _check_smoothing,
    log_prior,
    log_probs,
)

__all__ = ["BatchLoss", "Loss", "Needs", "PriorLoss", "apply_loss"]


class Needs(enum.Flag):
    """What a loss compares the network's output to, i.e. what it needs from a batch.

    Every loss also gets the batch's ``valid`` pixels.
    """

    #: The prior probabilities, ``batch["prior"]`` (the implicit-posterior losses, baselines).
    PRIOR = enum.auto()
    #: The 1 m labels, ``batch["label"]`` (high-res supervised training).
    LABEL = enum.auto()
    #: Per-pixel NLCD classes and 30 m block ids, ``batch["nlcd"]`` and ``batch["block"]``
    #: (label super-resolution); the data module reads them only for a loss that needs them.
    NLCD_BLOCKS = enum.auto()


class BatchLoss(Protocol):
    """What :func:`apply_loss` asks of a loss: what it needs, and how it is called.

    ``loss(output, target, valid, **blocks)``: the network ``output`` (``B x C x H x W``), the
    ``target`` it compares that output to (the prior for :attr:`Needs.PRIOR`, the labels for
    :attr:`Needs.LABEL`, None when it needs neither), the boolean ``valid`` pixels
    (``B x H x W``) and, for :attr:`Needs.NLCD_BLOCKS`, the keyword tensors ``nlcd`` and
    ``block``. Returns the scalar loss.
    """

    #: What the loss needs from a batch.
    needs: ClassVar[Needs]

    def __call__(
        self, output: Tensor, target: Tensor | None, valid: Tensor | None = None, **blocks: Tensor
    ) -> Tensor:
        """The loss of ``output`` against ``target`` over the ``valid`` pixels."""
        ...


def apply_loss(loss: BatchLoss, output: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
    """Call a loss with what it compares the network's output to (its :attr:`~Loss.needs`).

    :attr:`Needs.PRIOR`: ``loss(output, batch["prior"], batch["valid"])``;
    :attr:`Needs.LABEL`: ``loss(output, batch["label"], batch["valid"])``;
    :attr:`Needs.NLCD_BLOCKS` (without the prior): ``loss(output, None, batch["valid"],
    nlcd=batch["nlcd"], block=batch["block"])``.

    Args:
        loss: the loss.
        output: the network's output (logits or log-probabilities, as the loss takes them).
        batch: the batch (keys: :mod:`lcip.data.datasets`).

    Returns:
        The loss's value.

    Raises:
        KeyError: when the batch lacks a tensor the loss needs.
    """
    needs = loss.needs
    target: Tensor | None = None
    if Needs.LABEL in needs:
        target = batch["label"]
    elif Needs.PRIOR in needs:
        target = batch["prior"]
    blocks = {"nlcd": batch["nlcd"], "block": batch["block"]} if Needs.NLCD_BLOCKS in needs else {}
    return loss(output, target, batch["valid"], **blocks)


class Loss(nn.Module):
    """Base class of lcip's losses: the network output's type and smoothing, and its needs.

    Args:
        input_type: whether ``output`` holds logits or log-probabilities.
        smoothing: additive smoothing of the probabilities.

    Raises:
        ConfigError: for an unknown ``input_type`` or a negative ``smoothing``.
    """

    #: What the loss needs from a batch (see :func:`apply_loss`).
    needs: ClassVar[Needs] = Needs.PRIOR

    def __init__(self, input_type: InputType = "logits", smoothing: float = DEFAULT_SMOOTHING):
        super().__init__()
        self.input_type: InputType = _check_choice(  # type: ignore[assignment]
            "input_type", input_type, INPUT_TYPES
        )
        self.smoothing = _check_smoothing(smoothing)

    def extra_repr(self) -> str:
        """Settings shown by ``repr``."""
        return f"input_type={self.input_type!r}, smoothing={self.smoothing}"


class PriorLoss(Loss):
    """Base class of the losses on a prior: input checks, smoothing, masking, the masked mean."""

    def _prepare(
        self, output: Tensor, prior: Tensor, valid: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """Return ``log q'``, ``log p'``, the boolean valid mask and the valid-pixel count.

        Invalid pixels get a uniform output and prior, so that nothing computed from them can
        be NaN/inf (which would leak NaN into gradients even through ``torch.where``).
        """
        _check_inputs(output, prior, valid)
        dtype = torch.promote_types(output.dtype, torch.float32)
        output = output.to(dtype)
        prior = prior.to(dtype)
        num_classes = output.shape[1]
        if valid is None:
            count = torch.tensor(
                output.numel() // max(num_classes, 1), dtype=dtype, device=output.device
            )
        else:
            valid = valid.to(device=output.device, dtype=torch.bool)
            keep = valid.unsqueeze(1)
            output = torch.where(keep, output, -math.log(num_classes))
            prior = torch.where(keep, prior, 1.0 / num_classes)
            count = valid.sum(dtype=dtype)
        return (
            log_probs(output, self.input_type, self.smoothing),
            log_prior(prior, self.smoothing),
            valid,
            count,
        )

    @staticmethod
    def _mean(per_pixel: Tensor, valid: Tensor | None, count: Tensor) -> Tensor:
        """Mean of ``per_pixel`` over valid pixels; 0 (with a grad_fn) if there are none."""
        if valid is not None:
            per_pixel = torch.where(valid, per_pixel, 0.0)
        return per_pixel.sum() / count.clamp_min(1)
