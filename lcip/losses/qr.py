"""The implicit posterior losses: QR and RQ (through the implied posterior r), QR's free energy.

See :mod:`lcip.losses` for the notation and the conventions every loss follows.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lcip.errors import ConfigError
from lcip.losses.base import PriorLoss
from lcip.losses.functional import (
    _NEG_INF,
    DEFAULT_SMOOTHING,
    DENOMINATORS,
    DenominatorScope,
    InputType,
    _all_reduce_log_sum,
    _check_choice,
    _distributed,
    _global_mean,
    _kl,
    _log_mean,
    _log_sum_and_count,
    _weighted_sum,
    implied_posterior,
    log_denominator,
)

__all__ = ["ImplicitPosteriorLoss", "QRFreeEnergyLoss", "QRLoss", "RQLoss"]


class ImplicitPosteriorLoss(PriorLoss):
    """Base class of the losses that use the implied posterior ``r`` (QR and RQ).

    Subclasses define the per-pixel divergence between ``q`` and ``r``; this class computes
    ``r`` with the configured denominator scope and reduces the divergence over the valid
    pixels (over this process's pixels, or over the pixels of every rank, see
    :class:`QRLoss`).

    **Gradients under DDP** (``"global"`` and ``"running"``, in training mode, with a process
    group of ``R`` ranks). Let rank ``k`` hold the valid pixels ``I_k``, let ``N = sum_k |I_k|``
    and ``D = sum_k S_k / N`` with ``S_k = sum_{j in I_k} q_j`` (for ``"running"``, ``D`` mixes
    this batch mean with the detached EMA, which changes nothing below). The loss on the
    concatenated batch is ``L = sum_k s_k`` with ``s_k = sum_{i in I_k} KL_i(D) / N``.

    * ``D`` is computed with a differentiable all-reduce: the forward sums the ``S_k``; the
      backward on rank ``k`` receives ``dl_k/dD`` (``l_k`` = the value rank ``k``
      backpropagates) and returns ``sum_k' dl_k'/dD`` as the gradient of ``S_k / N``, since
      ``dD/d(S_k / N)`` is the identity. (The per-class ``logsumexp`` shift is the same
      constant on every rank, a ``MAX`` all-reduce of detached values, and ``N`` is detached.)
    * Each rank backpropagates ``l_k = R s_k``. Rank ``k``'s parameter gradient is then
      ``g_k = R ds_k/dθ|_D + R (sum_k' ds_k'/dD) d(S_k/N)/dθ``, the first term with ``D``
      held fixed (rank ``k``'s copy of the parameters only sees rank ``k``'s pixels). DDP
      averages over the ranks: ``(1/R) sum_k g_k = sum_k ds_k/dθ|_D + (sum_k' ds_k'/dD)
      (sum_k d(S_k/N)/dθ) = dL/dθ|_D + dL/dD dD/dθ = dL/dθ``, the single-process gradient on
      the concatenated batch. (With each rank's own mean, the former behaviour, ranks with
      more nodata weighed more.)
    * The value returned on every rank is ``sum_k s_k = L`` (a sum all-reduce of the detached
      ``s_k``), with the gradient of ``R s_k`` attached (``_GlobalLossSum`` of
      :mod:`lcip.losses.functional`; unlike ``R s_k - (R s_k).detach() + L`` it stays ``+inf``
      rather than NaN when ``L`` is infinite).

    This assumes DDP-style averaging of the parameter gradients over the ``R`` ranks (as DDP
    and Lightning's DDP strategies do). Every rank must call the loss at every such step: it
    runs collectives (three in the forward, one in the backward).
    """

    running_mean: Tensor
    num_batches_tracked: Tensor

    def __init__(
        self,
        input_type: InputType = "logits",
        smoothing: float = DEFAULT_SMOOTHING,
        denominator: DenominatorScope = "batch",
        momentum: float = 0.1,
        num_classes: int | None = None,
    ):
        super().__init__(input_type, smoothing)
        self.denominator: DenominatorScope = _check_choice(  # type: ignore[assignment]
            "denominator", denominator, DENOMINATORS
        )
        if not (isinstance(momentum, int | float) and 0 < momentum <= 1):
            raise ConfigError(f"loss momentum must be in (0, 1], got {momentum!r}")
        self.momentum = float(momentum)
        if num_classes is not None and not (
            isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes >= 1
        ):
            raise ConfigError(f"loss num_classes must be an integer >= 1, got {num_classes!r}")
        self.num_classes = num_classes
        if self.denominator == "running":
            if num_classes is None:
                raise ConfigError(
                    "loss denominator 'running' needs num_classes (the number of classes)"
                )
            self.register_buffer("running_mean", torch.zeros(num_classes))
            self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        """Settings shown by ``repr``."""
        text = f"{super().extra_repr()}, denominator={self.denominator!r}"
        if self.denominator == "running":
            text += f", momentum={self.momentum}, num_classes={self.num_classes}"
        return text

    @staticmethod
    def _divergence(log_q: Tensor, log_r: Tensor) -> Tensor:
        """Per-pixel divergence between ``q`` and ``r`` (over dim 1)."""
        raise NotImplementedError

    def _loss(self, output: Tensor, prior: Tensor, valid: Tensor | None) -> Tensor:
        log_q, log_p, valid, count = self._prepare(output, prior, valid)
        log_denom, global_count = self._log_denominator(log_q, valid)
        per_pixel = self._divergence(log_q, implied_posterior(log_q, log_p, log_denom))
        if global_count is None:
            return self._mean(per_pixel, valid, count)
        return _global_mean(per_pixel, valid, global_count)

    def _log_denominator(self, log_q: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The ``(C,)`` log denominator, and the all-ranks valid-pixel count if it is global.

        A count is returned (and the loss then averaged over every rank's valid pixels) when
        the denominator was computed from the valid pixels of all ranks of a process group.
        """
        if self.denominator == "running":
            return self._running_log_denominator(log_q, valid)
        log_sum, count = _log_sum_and_count(log_q, valid)
        if self.denominator == "global" and self.training and _distributed():
            log_sum, count = _all_reduce_log_sum(log_sum, count)
            return _log_mean(log_sum, count), count
        return _log_mean(log_sum, count), None

    def _running_log_denominator(
        self, log_q: Tensor, valid: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        num_classes = log_q.shape[1]
        if self.running_mean.shape != (num_classes,):
            raise ValueError(
                f"running denominator holds {self.running_mean.numel()} classes but the output "
                f"has {num_classes}"
            )
        # Read the buffers at the computation's dtype and device; they are only ever updated
        # in place (never replaced), so DDP and state_dict always see the same tensors.
        ema = self.running_mean.detach().to(device=log_q.device, dtype=log_q.dtype, copy=True)
        has_history = self.num_batches_tracked.to(log_q.device) > 0
        positive = ema > 0
        log_ema = torch.where(positive, torch.log(torch.where(positive, ema, 1.0)), _NEG_INF)
        log_sum, count = _log_sum_and_count(log_q, valid)
        if not self.training:
            # The stored EMA alone (like BatchNorm's running statistics); the local batch
            # denominator until a batch has been tracked. No collectives, no update.
            return torch.where(has_history, log_ema, _log_mean(log_sum, count)), None
        global_count = None
        if _distributed():
            log_sum, count = _all_reduce_log_sum(log_sum, count)
            global_count = count
        log_batch = _log_mean(log_sum, count)
        # log((1 - m) * ema + m * batch_mean); the batch part keeps its gradient.
        log_keep = math.log1p(-self.momentum) if self.momentum < 1 else _NEG_INF
        mixed = torch.logaddexp(log_ema + log_keep, log_batch + math.log(self.momentum))
        used = torch.where(has_history, mixed, log_batch)
        with torch.no_grad():
            buffer = self.running_mean
            any_valid = (count > 0).to(buffer.device)
            new = used.detach().exp().to(device=buffer.device, dtype=buffer.dtype)
            buffer.copy_(torch.where(any_valid, new, buffer))
            self.num_batches_tracked.add_(any_valid.to(self.num_batches_tracked.device, torch.long))
        return used, global_count

    def forward(self, output: Tensor, prior: Tensor, valid: Tensor | None = None) -> Tensor:
        """Compute the loss.

        Args:
            output: network logits or log-probabilities, ``(N, C)`` or ``(B, C, H, W)``.
            prior: prior probabilities, same shape.
            valid: optional boolean valid-pixel mask, ``(N,)`` or ``(B, H, W)``.

        Returns:
            Scalar loss.
        """
        return self._loss(output, prior, valid)


class QRLoss(ImplicitPosteriorLoss):
    """QR loss: mean over valid pixels of ``KL(q_i || r_i)``, the paper's best land cover loss.

    ``log r_i = log_softmax_l(log p_i + log q_i - log D)``. Gradients flow through ``r`` as well
    as ``q`` (including through the denominator).

    Denominator scopes (``denominator``):

    * ``"batch"``: ``D`` from the current batch's valid pixels (of this process only).
    * ``"global"``: with ``torch.distributed`` initialized (e.g. under DDP), ``D`` from the valid
      pixels of every rank's batch (per-class sums of ``q`` and valid-pixel counts all-reduced
      differentiably over the default process group), and the per-pixel divergence averaged
      over the valid pixels of *all* ranks. The value returned on every rank is the
      single-process loss on the concatenation of all ranks' batches, and the parameter
      gradients *after DDP's averaging over the ranks* are the single-process gradients (each
      rank backpropagates ``R`` times its share of the global sum; see
      :class:`ImplicitPosteriorLoss` for the derivation). A rank with more nodata therefore
      weighs less. Every rank must call the loss at every training step (it runs
      collectives). In eval mode (``loss.eval()``, e.g. validation, where each rank holds its
      own share of the batches) and with no process group it equals ``"batch"``.
    * ``"running"``: an exponential moving average of the per-class *mean* of ``q`` over valid
      pixels (the mean rather than the sum, so its scale does not depend on batch size; for
      ``"batch"`` the scale cancels in the class normalization anyway), kept in the buffers
      ``running_mean`` (shape ``(num_classes,)``) and ``num_batches_tracked``. They exist from
      construction (``num_classes`` is required), so they are in every ``state_dict``, are
      broadcast by DDP, and follow ``module.to(...)`` (dtype and device) like BatchNorm's;
      they are only ever updated in place.

      - *Training mode*: ``D = (1 - m) * ema + m * batch_mean`` with the stored ``ema``
        detached and the batch part differentiable; the first tracked batch uses
        ``batch_mean`` alone. The EMA is then set to that ``D`` (and ``num_batches_tracked``
        incremented), only for batches with valid pixels. Under a process group
        ``batch_mean`` is the mean over the valid pixels of all ranks (all-reduced, as for
        ``"global"``, and the loss is averaged over all ranks' pixels as for ``"global"``), so
        every rank holds the same EMA whether or not DDP broadcasts buffers, and value and
        averaged gradients equal one process on the concatenated batch.
      - *Eval mode* (``loss.eval()``): ``D`` is the stored EMA alone (no batch part, no
        gradient through ``D``), like BatchNorm's running statistics; the buffers are never
        updated. If no batch has been tracked yet (``num_batches_tracked == 0``) the batch
        denominator (this process's batch) is used instead. Eval mode runs no collectives:
        each rank averages over its own valid pixels.

    Args:
        input_type: whether ``output`` holds logits or log-probabilities.
        smoothing: additive smoothing of both prior and network probabilities.
        denominator: ``"batch"``, ``"running"`` or ``"global"``.
        momentum: EMA weight ``m`` of the current batch for ``"running"``, in (0, 1].
        num_classes: number of classes ``C``; required for ``"running"`` (it sizes the
            buffers), optional (and unused) otherwise.

    Raises:
        ConfigError: for an invalid argument, or ``denominator="running"`` without
            ``num_classes``.
    """

    @staticmethod
    def _divergence(log_q: Tensor, log_r: Tensor) -> Tensor:
        return _kl(log_q, log_r)


class RQLoss(ImplicitPosteriorLoss):
    """RQ loss: mean over valid pixels of ``KL(r_i || q_i)``.

    With one-hot priors (and ``smoothing=0``) ``r_i`` is the prior itself and the loss equals
    cross-entropy against the prior's argmax. Denominator scopes (including the distributed
    behaviour of ``"global"`` and ``"running"``, and ``"running"`` in training and eval mode)
    and arguments are as for :class:`QRLoss`.

    """

    @staticmethod
    def _divergence(log_q: Tensor, log_r: Tensor) -> Tensor:
        return _kl(log_r, log_q)


class QRFreeEnergyLoss(PriorLoss):
    """Free-energy form of QR (eq. 5): ``sum_l qbar_l log qbar_l - mean_i sum_l q_i(l) log p_i(l)``.

    ``qbar_l`` is the mean of ``q_i(l)`` over the valid pixels of the batch. This is what
    ``torchgeo.losses.QRLoss`` computes (it takes probabilities, not logits); it differs from
    :class:`QRLoss` by the per-pixel normalizer of ``r``.

    Args:
        input_type: whether ``output`` holds logits or log-probabilities.
        smoothing: additive smoothing of both prior and network probabilities.
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
        log_qbar = log_denominator(log_q, valid).unsqueeze(0)
        neg_entropy = _weighted_sum(log_qbar, log_qbar).squeeze(0)
        return neg_entropy - self._mean(_weighted_sum(log_q, log_p), valid, count)
