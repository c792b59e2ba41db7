"""The baselines: losses on the prior without the implied posterior, and high-res supervision.

Soft naive (cross-entropy with soft targets), hard naive (cross-entropy on the prior's argmax),
NLL-union, and HR (cross-entropy on 1 m labels). See :mod:`lcip.losses` for the conventions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lcip.classes import IGNORE_INDEX
from lcip.losses.base import Loss, Needs, PriorLoss
from lcip.losses.functional import InputType, _weighted_sum, log_probs

__all__ = ["HardNaiveLoss", "HighResLoss", "NLLUnionLoss", "PixelwisePriorLoss", "SoftNaiveLoss"]


class PixelwisePriorLoss(PriorLoss):
    """Base class of the losses that are a mean over valid pixels of a per-pixel term.

    Subclasses define :meth:`pixel_loss` on the smoothed log-probabilities.
    """

    def forward(self, output: Tensor, prior: Tensor, valid: Tensor | None = None) -> Tensor:
        """Compute the loss.

        Args:
            output: network logits or log-probabilities, ``(N, C)`` or ``(B, C, H, W)``.
            prior: prior probabilities, same shape.
            valid: optional boolean valid-pixel mask, ``(N,)`` or ``(B, H, W)``.

        Returns:
            Scalar loss.
        """
        log_q, log_p, valid, count = self._prepare(output, prior, valid)
        return self._mean(self.pixel_loss(log_q, log_p), valid, count)

    def pixel_loss(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        """The per-pixel loss, ``(N,)`` or ``(B, H, W)``, from ``log q'`` and ``log p'``."""
        raise NotImplementedError


class SoftNaiveLoss(PixelwisePriorLoss):
    """Soft naive loss (cross-entropy with soft targets): ``-sum_l p_i(l) log q_i(l)``.

    Args:
        input_type: whether ``output`` holds logits or log-probabilities.
        smoothing: additive smoothing of both prior and network probabilities.
    """

    def pixel_loss(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        """``-sum_l p_i(l) log q_i(l)``."""
        return -_weighted_sum(log_p, log_q)


class HardNaiveLoss(PixelwisePriorLoss):
    """Hard naive loss: cross-entropy against ``argmax_l p_i(l)`` (ties: the first class).

    The smoothed network probabilities are used (``smoothing=0`` gives plain cross-entropy).

    Args:
        input_type: whether ``output`` holds logits or log-probabilities.
        smoothing: additive smoothing of the network probabilities (the argmax of the prior
            does not depend on smoothing).
    """

    def pixel_loss(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        """``-log q_i(argmax_l p_i(l))``."""
        return -log_q.gather(1, log_p.argmax(dim=1, keepdim=True)).squeeze(1)


class NLLUnionLoss(PixelwisePriorLoss):
    """NLL-union loss: ``-log sum_l p_i(l) q_i(l)``, computed as ``-logsumexp(log p + log q)``.

    Args:
        input_type: whether ``output`` holds logits or log-probabilities.
        smoothing: additive smoothing of both prior and network probabilities.
    """

    def pixel_loss(self, log_q: Tensor, log_p: Tensor) -> Tensor:
        """``-log sum_l p_i(l) q_i(l)``."""
        return -torch.logsumexp(log_p + log_q, dim=1)


class HighResLoss(Loss):
    """High-resolution supervised loss: cross-entropy on 1 m labels (ignore index).

    The baseline "HR" of the paper's EnviroAtlas tables: ``-log q_i(y_i)`` averaged over the
    valid pixels whose label is not :data:`~lcip.classes.IGNORE_INDEX`. It needs the batch's
    labels (:attr:`Needs.LABEL`), which training then uses instead of the prior.

    Args:
        input_type: whether ``output`` holds logits or log-probabilities.
        smoothing: additive smoothing of the network probabilities (0: plain cross-entropy).
    """

    needs = Needs.LABEL

    def __init__(self, input_type: InputType = "logits", smoothing: float = 0.0):
        super().__init__(input_type, smoothing)

    def forward(self, output: Tensor, label: Tensor, valid: Tensor | None = None) -> Tensor:
        """Compute the loss.

        Args:
            output: network logits or log-probabilities, ``(N, C)`` or ``(B, C, H, W)``.
            label: class indices, ``(N,)`` or ``(B, H, W)``; ``IGNORE_INDEX`` = unlabelled.
            valid: optional boolean valid-pixel mask shaped like ``label``.

        Returns:
            Scalar loss (a zero connected to ``output`` if no pixel is labelled).
        """
        dtype = torch.promote_types(output.dtype, torch.float32)
        log_q = log_probs(output.to(dtype), self.input_type, self.smoothing)
        keep = label != IGNORE_INDEX
        if valid is not None:
            keep &= valid.to(device=label.device, dtype=torch.bool)
        safe = torch.where(keep, label, 0).long().clamp(0, output.shape[1] - 1)
        nll = -log_q.gather(1, safe.unsqueeze(1)).squeeze(1)
        nll = torch.where(keep, nll, 0.0)
        return nll.sum() / keep.sum().clamp_min(1).to(dtype)
