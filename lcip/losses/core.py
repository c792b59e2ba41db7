"""Losses for learning a network from per-pixel prior beliefs (implicit posterior learning).

Notation (Rolf, Malkin et al., "Resolving Label Uncertainty with Implicit Posterior Models",
UAI 2022): pixel ``i`` has a prior ``p_i(l)`` over classes ``l`` and the network outputs
``q_i(l)``. The *implied posterior* is

    r_i(l) ∝ p_i(l) q_i(l) / D(l),        D(l) = sum_j q_j(l)  (j over the valid pixels of a batch)

and the losses below compare ``q`` and ``r`` (or ``q`` and ``p``) pixel by pixel, averaged over
valid pixels. For QR and RQ, ``D`` can also be taken over the batches of all ranks of a
``torch.distributed`` process group (``denominator="global"``) or be a running average over
batches (``denominator="running"``); see :class:`QRLoss`.

Conventions shared by every loss in this module:

* ``forward(output, prior, mask=None)`` takes the network ``output`` (logits or
  log-probabilities, see ``input_type``) and the ``prior`` probabilities, both shaped ``(N, C)``
  or ``(B, C, H, W)`` (any ``(B, C, *)``; the class axis is dim 1), and an optional boolean
  ``mask`` shaped like them without the class axis (True = valid pixel). Masked pixels are
  excluded from the mean *and* from the denominator; their values (even NaN or an all-zero
  prior) have no influence on the loss or its gradients. If no pixel is valid the loss is a
  zero that is still connected to ``output`` in the autograd graph (never NaN).
* Additive ``smoothing`` ``eps`` is applied to both the prior and the network's probabilities,
  followed by renormalization: ``p' = (p + eps) / (1 + C eps)``.
* Everything is computed in log space (``log_softmax`` over classes, ``logsumexp`` over pixels
  for the denominator); no ``log(0)`` is ever evaluated, and terms of the form ``0 * log 0`` are
  zero with zero gradient, so priors with exact zeros never produce NaN. (With
  ``smoothing=0`` a loss whose value really is infinite -- e.g. QR when the prior rules out a
  class the network gives mass to -- returns ``+inf``.)
* Computation is done in at least float32 (half-precision inputs are upcast).

The plain functions :func:`log_probs`, :func:`log_prior`, :func:`log_denominator` and
:func:`implied_posterior` are the single source of truth for these formulas; prediction code
uses them to compute ``q`` and ``r`` with the denominator taken over a whole tile.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Literal, get_args

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from lcip.classes import IGNORE_INDEX
from lcip.errors import ConfigError

__all__ = [
    "DEFAULT_SMOOTHING",
    "DENOMINATORS",
    "INPUT_TYPES",
    "LOSSES",
    "DenominatorScope",
    "HardNaiveLoss",
    "HighResLoss",
    "InputType",
    "LSRLoss",
    "NLLUnionLoss",
    "QRFreeEnergyLoss",
    "QRLoss",
    "RQLoss",
    "SoftNaiveLoss",
    "build_loss",
    "implied_posterior",
    "log_denominator",
    "log_prior",
    "log_probs",
]

#: What the network output passed to a loss is.
InputType = Literal["logits", "log_probs"]
#: Over which pixels the implied posterior's denominator ``D(l)`` is computed.
DenominatorScope = Literal["batch", "running", "global"]

#: The accepted values of ``input_type``.
INPUT_TYPES: tuple[str, ...] = get_args(InputType)
#: The accepted values of ``denominator``.
DENOMINATORS: tuple[str, ...] = get_args(DenominatorScope)
#: Additive smoothing of priors and network probabilities used by the paper.
DEFAULT_SMOOTHING = 1e-4

_NEG_INF = float("-inf")


# --------------------------------------------------------------------------------------------
# Formulas (shared with prediction code)
# --------------------------------------------------------------------------------------------


def log_probs(
    output: Tensor, input_type: InputType = "logits", smoothing: float = DEFAULT_SMOOTHING
) -> Tensor:
    """Smoothed log-probabilities ``log q'`` of a network output.

    ``q' = (q + eps) / (1 + C eps)``, computed as
    ``log q' = logaddexp(log q, log eps) - log(1 + C eps)``.

    Args:
        output: logits or log-probabilities, class axis at dim 1 (``(N, C)``, ``(B, C, H, W)``).
        input_type: ``"logits"`` (normalized here with ``log_softmax``) or ``"log_probs"``
            (used as given; must already be normalized over dim 1).
        smoothing: additive smoothing ``eps >= 0``.

    Returns:
        Log-probabilities with the shape of ``output``.

    Raises:
        ConfigError: if ``input_type`` is unknown or ``smoothing`` is negative.
    """
    _check_choice("input_type", input_type, INPUT_TYPES)
    _check_smoothing(smoothing)
    log_q = F.log_softmax(output, dim=1) if input_type == "logits" else output
    if smoothing > 0:
        num_classes = output.shape[1]
        log_eps = torch.full((), math.log(smoothing), dtype=log_q.dtype, device=log_q.device)
        log_q = torch.logaddexp(log_q, log_eps) - math.log1p(num_classes * smoothing)
    return log_q


def log_prior(prior: Tensor, smoothing: float = DEFAULT_SMOOTHING) -> Tensor:
    """Smoothed log prior ``log p' = log((p + eps) / (1 + C eps))``.

    With ``smoothing=0`` zero probabilities map to ``-inf`` without evaluating ``log(0)``.
    Integer priors are converted to the default floating dtype.

    Args:
        prior: prior probabilities (summing to 1 over dim 1), e.g. ``(N, C)`` or
            ``(B, C, H, W)``.
        smoothing: additive smoothing ``eps >= 0``.

    Returns:
        The log prior, shaped like ``prior``.

    Raises:
        ConfigError: if ``smoothing`` is negative.
    """
    _check_smoothing(smoothing)
    if not prior.is_floating_point():
        prior = prior.to(torch.get_default_dtype())
    if smoothing > 0:
        num_classes = prior.shape[1]
        return torch.log(prior + smoothing) - math.log1p(num_classes * smoothing)
    positive = prior > 0
    return torch.where(positive, torch.log(torch.where(positive, prior, 1.0)), _NEG_INF)


def log_denominator(log_q: Tensor, mask: Tensor | None = None) -> Tensor:
    """Log of the per-class *mean* of ``q`` over the valid pixels: ``log(sum_j q_j(l) / n)``.

    The implied posterior only needs ``D(l) = sum_j q_j(l)`` up to a factor that is the same for
    every class (it cancels when ``r`` is normalized over classes), so the mean is used: its
    scale does not depend on how many pixels there are, which lets a value computed on one set
    of pixels (a whole tile, a running average over batches) be used on another. Computed with
    ``logsumexp`` over pixels.

    If no pixel is valid the result is all zeros (a denominator that is the same for every
    class, i.e. ``r ∝ p q``), with finite gradients.

    Args:
        log_q: log-probabilities with the class axis at dim 1 (``(N, C)``, ``(B, C, H, W)``, ...).
        mask: optional boolean mask shaped like ``log_q`` without dim 1; True = valid.

    Returns:
        Tensor of shape ``(C,)``.
    """
    log_sum, count = _log_sum_and_count(log_q, mask)
    return _log_mean(log_sum, count)


def implied_posterior(log_q: Tensor, log_p: Tensor, log_denom: Tensor) -> Tensor:
    """Log implied posterior ``log r = log_softmax_l(log p + log q - log D)``.

    Args:
        log_q: network log-probabilities, class axis at dim 1.
        log_p: log prior, same shape as ``log_q``.
        log_denom: ``(C,)`` log denominator (e.g. from :func:`log_denominator`, possibly computed
            over more pixels than ``log_q`` holds, such as a whole tile when ``log_q`` is one
            window of it), broadcast over the class axis; or any tensor broadcastable to
            ``log_q``.

    Returns:
        ``log r``, shaped like ``log_q``. Pixels whose prior is zero for every class (nodata)
        give NaN: mask them.
    """
    if log_denom.ndim == 1:
        log_denom = log_denom.view(1, -1, *([1] * (log_q.ndim - 2)))
    return F.log_softmax(log_p + log_q - log_denom, dim=1)


# --------------------------------------------------------------------------------------------
# Internal helpers
# --------------------------------------------------------------------------------------------


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choose one of {list(choices)}")
    return value


def _check_smoothing(smoothing: float) -> float:
    if not (isinstance(smoothing, int | float) and math.isfinite(smoothing) and smoothing >= 0):
        raise ConfigError(f"loss smoothing must be a finite number >= 0, got {smoothing!r}")
    return float(smoothing)


def _reduce_dims(x: Tensor) -> list[int]:
    """All dims but the class axis (dim 1)."""
    return [0, *range(2, x.ndim)]


def _log_sum_and_count(log_q: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Per-class ``log sum_j q_j(l)`` over valid pixels and the number of valid pixels.

    The log-sum is ``-inf`` where no pixel is valid, with finite (zero) gradients.
    """
    dims = _reduce_dims(log_q)
    if mask is None:
        num_pixels = log_q.numel() // max(log_q.shape[1], 1)
        count = torch.full((), num_pixels, dtype=log_q.dtype, device=log_q.device)
        return torch.logsumexp(log_q, dim=dims), count
    count = mask.sum(dtype=log_q.dtype)
    any_valid = count > 0
    # Masked pixels contribute exp(-inf) = 0. If *no* pixel is valid they are filled with 0
    # instead, so that logsumexp stays finite (its backward would be NaN on an all -inf input);
    # that value is then replaced by -inf.
    fill = torch.where(any_valid, _NEG_INF, 0.0).to(log_q.dtype)
    values = torch.where(mask.unsqueeze(1), log_q, fill)
    log_sum = torch.where(any_valid, torch.logsumexp(values, dim=dims), _NEG_INF)
    return log_sum, count


def _log_mean(log_sum: Tensor, count: Tensor) -> Tensor:
    """``log_sum - log(count)``, or zeros when ``count == 0``."""
    return torch.where(count > 0, log_sum - torch.log(count.clamp_min(1)), 0.0)


def _weighted_sum(log_w: Tensor, values: Tensor) -> Tensor:
    """``sum_l w_l * values_l`` over dim 1 with ``w = exp(log_w)`` and ``0 * anything = 0``.

    Terms with ``w_l = 0`` are exactly zero with zero gradient, even where ``values`` is
    infinite or NaN (the usual ``0 log 0 = 0`` convention, safe under autograd).
    """
    positive = log_w > _NEG_INF
    safe_values = torch.where(positive, values, 0.0)
    return torch.where(positive, log_w.exp() * safe_values, 0.0).sum(dim=1)


def _kl(log_a: Tensor, log_b: Tensor) -> Tensor:
    """Per-pixel ``KL(a || b) = sum_l a_l (log a_l - log b_l)`` over dim 1."""
    return _weighted_sum(log_a, log_a - log_b)


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum all-reduce (the backward all-reduces the gradients).

    Equivalent to ``torch.distributed.nn.functional.all_reduce``, which is deprecated.
    """

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        grad = grad_output.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class _GlobalLossSum(torch.autograd.Function):
    """Sum of a scalar over all ranks whose backward scales the local gradient by the world size.

    The forward all-reduces (sums) the detached local term ``s_k``; the backward returns
    ``R * grad_output`` to rank ``k``'s own ``s_k`` and communicates nothing. So every rank
    gets the global value while backpropagating ``R s_k``, which DDP's averaging over the
    ``R`` ranks turns back into the sum (see :class:`_ImplicitPosteriorLoss`).
    """

    @staticmethod
    def forward(ctx: Any, local: Tensor) -> Tensor:
        ctx.world_size = dist.get_world_size()
        out = local.detach().clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        return grad_output * ctx.world_size


def _global_mean(per_pixel: Tensor, mask: Tensor | None, global_count: Tensor) -> Tensor:
    """Mean of ``per_pixel`` over the valid pixels of all ranks (``global_count`` of them).

    Returns ``sum_k s_k`` on every rank, with ``s_k = sum_{i valid on rank k} x_i / N``, and the
    gradient of ``R s_k`` (0 with a grad_fn when no rank has a valid pixel).
    """
    if mask is not None:
        per_pixel = torch.where(mask, per_pixel, 0.0)
    local: Tensor = per_pixel.sum() / global_count.clamp_min(1)
    total: Tensor = _GlobalLossSum.apply(local)
    return total


def _all_reduce_log_sum(log_sum: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """Sum ``exp(log_sum)`` and ``count`` over all ranks, differentiably, in log space."""
    shift = log_sum.detach().clone()
    dist.all_reduce(shift, op=dist.ReduceOp.MAX)
    shift = torch.where(torch.isfinite(shift), shift, 0.0)
    local = torch.cat([torch.exp(log_sum - shift), count.detach().reshape(1)])
    total = _AllReduceSum.apply(local)
    sums, global_count = total[:-1], total[-1].detach()
    positive = sums > 0
    log_total = torch.where(positive, torch.log(torch.where(positive, sums, 1.0)) + shift, _NEG_INF)
    return log_total, global_count


def _check_inputs(output: Tensor, prior: Tensor, mask: Tensor | None) -> None:
    if output.ndim < 2:
        raise ValueError(
            f"loss output must have a class axis at dim 1, i.e. shape (N, C) or (B, C, H, W); "
            f"got shape {tuple(output.shape)}"
        )
    if prior.shape != output.shape:
        raise ValueError(
            f"prior shape {tuple(prior.shape)} does not match output shape {tuple(output.shape)}"
        )
    if mask is not None:
        expected = output.shape[:1] + output.shape[2:]
        if mask.shape != expected:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} does not match output shape "
                f"{tuple(output.shape)} without its class axis, {tuple(expected)}"
            )


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


class _PriorLoss(nn.Module):
    """Base class: input handling, smoothing, masking and the masked mean."""

    def __init__(self, input_type: InputType = "logits", smoothing: float = DEFAULT_SMOOTHING):
        super().__init__()
        self.input_type: InputType = _check_choice(  # type: ignore[assignment]
            "input_type", input_type, INPUT_TYPES
        )
        self.smoothing = _check_smoothing(smoothing)

    def extra_repr(self) -> str:
        return f"input_type={self.input_type!r}, smoothing={self.smoothing}"

    def _prepare(
        self, output: Tensor, prior: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """Return ``log q'``, ``log p'``, the boolean mask and the valid-pixel count.

        Masked pixels get a uniform output and prior, so that nothing computed from them can
        be NaN/inf (which would leak NaN into gradients even through ``torch.where``).
        """
        _check_inputs(output, prior, mask)
        dtype = torch.promote_types(output.dtype, torch.float32)
        output = output.to(dtype)
        prior = prior.to(dtype)
        num_classes = output.shape[1]
        if mask is None:
            count = torch.tensor(
                output.numel() // max(num_classes, 1), dtype=dtype, device=output.device
            )
        else:
            mask = mask.to(device=output.device, dtype=torch.bool)
            valid = mask.unsqueeze(1)
            output = torch.where(valid, output, -math.log(num_classes))
            prior = torch.where(valid, prior, 1.0 / num_classes)
            count = mask.sum(dtype=dtype)
        return (
            log_probs(output, self.input_type, self.smoothing),
            log_prior(prior, self.smoothing),
            mask,
            count,
        )

    @staticmethod
    def _mean(per_pixel: Tensor, mask: Tensor | None, count: Tensor) -> Tensor:
        """Mean of ``per_pixel`` over valid pixels; 0 (with a grad_fn) if there are none."""
        if mask is not None:
            per_pixel = torch.where(mask, per_pixel, 0.0)
        return per_pixel.sum() / count.clamp_min(1)


class _ImplicitPosteriorLoss(_PriorLoss):
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
      ``s_k``), with the gradient of ``R s_k`` attached (:class:`_GlobalLossSum`; unlike
      ``R s_k - (R s_k).detach() + L`` it stays ``+inf`` rather than NaN when ``L`` is
      infinite).

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
        text = f"{super().extra_repr()}, denominator={self.denominator!r}"
        if self.denominator == "running":
            text += f", momentum={self.momentum}, num_classes={self.num_classes}"
        return text

    @staticmethod
    def _divergence(log_q: Tensor, log_r: Tensor) -> Tensor:
        """Per-pixel divergence between ``q`` and ``r`` (over dim 1)."""
        raise NotImplementedError

    def _loss(self, output: Tensor, prior: Tensor, mask: Tensor | None) -> Tensor:
        log_q, log_p, mask, count = self._prepare(output, prior, mask)
        log_denom, global_count = self._log_denominator(log_q, mask)
        per_pixel = self._divergence(log_q, implied_posterior(log_q, log_p, log_denom))
        if global_count is None:
            return self._mean(per_pixel, mask, count)
        return _global_mean(per_pixel, mask, global_count)

    def _log_denominator(self, log_q: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The ``(C,)`` log denominator, and the all-ranks valid-pixel count if it is global.

        A count is returned (and the loss then averaged over every rank's valid pixels) when
        the denominator was computed from the valid pixels of all ranks of a process group.
        """
        if self.denominator == "running":
            return self._running_log_denominator(log_q, mask)
        log_sum, count = _log_sum_and_count(log_q, mask)
        if self.denominator == "global" and self.training and _distributed():
            log_sum, count = _all_reduce_log_sum(log_sum, count)
            return _log_mean(log_sum, count), count
        return _log_mean(log_sum, count), None

    def _running_log_denominator(
        self, log_q: Tensor, mask: Tensor | None
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
        log_sum, count = _log_sum_and_count(log_q, mask)
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
            valid = (count > 0).to(buffer.device)
            new = used.detach().exp().to(device=buffer.device, dtype=buffer.dtype)
            buffer.copy_(torch.where(valid, new, buffer))
            self.num_batches_tracked.add_(valid.to(self.num_batches_tracked.device, torch.long))
        return used, global_count

    def forward(self, output: Tensor, prior: Tensor, mask: Tensor | None = None) -> Tensor:
        """Compute the loss.

        Args:
            output: network logits or log-probabilities, ``(N, C)`` or ``(B, C, H, W)``.
            prior: prior probabilities, same shape.
            mask: optional boolean valid-pixel mask, ``(N,)`` or ``(B, H, W)``.

        Returns:
            Scalar loss.
        """
        return self._loss(output, prior, mask)


class QRLoss(_ImplicitPosteriorLoss):
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
      :class:`_ImplicitPosteriorLoss` for the derivation). A rank with more nodata therefore
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


class RQLoss(_ImplicitPosteriorLoss):
    """RQ loss: mean over valid pixels of ``KL(r_i || q_i)``.

    With one-hot priors (and ``smoothing=0``) ``r_i`` is the prior itself and the loss equals
    cross-entropy against the prior's argmax. Denominator scopes (including the distributed
    behaviour of ``"global"`` and ``"running"``, and ``"running"`` in training and eval mode)
    and arguments are as for :class:`QRLoss`.

    """

    @staticmethod
    def _divergence(log_q: Tensor, log_r: Tensor) -> Tensor:
        return _kl(log_r, log_q)


class QRFreeEnergyLoss(_PriorLoss):
    """Free-energy form of QR (eq. 5): ``sum_l qbar_l log qbar_l - mean_i sum_l q_i(l) log p_i(l)``.

    ``qbar_l`` is the mean of ``q_i(l)`` over the valid pixels of the batch. This is what
    ``torchgeo.losses.QRLoss`` computes (it takes probabilities, not logits); it differs from
    :class:`QRLoss` by the per-pixel normalizer of ``r``.

    Args:
        input_type: whether ``output`` holds logits or log-probabilities.
        smoothing: additive smoothing of both prior and network probabilities.
    """

    def forward(self, output: Tensor, prior: Tensor, mask: Tensor | None = None) -> Tensor:
        """Compute the loss.

        Args:
            output: network logits or log-probabilities, ``(N, C)`` or ``(B, C, H, W)``.
            prior: prior probabilities, same shape.
            mask: optional boolean valid-pixel mask, ``(N,)`` or ``(B, H, W)``.

        Returns:
            Scalar loss.
        """
        log_q, log_p, mask, count = self._prepare(output, prior, mask)
        log_qbar = log_denominator(log_q, mask).unsqueeze(0)
        neg_entropy = _weighted_sum(log_qbar, log_qbar).squeeze(0)
        return neg_entropy - self._mean(_weighted_sum(log_q, log_p), mask, count)


class SoftNaiveLoss(_PriorLoss):
    """Soft naive loss (cross-entropy with soft targets): ``-sum_l p_i(l) log q_i(l)``.

    Args:
        input_type: whether ``output`` holds logits or log-probabilities.
        smoothing: additive smoothing of both prior and network probabilities.
    """

    def forward(self, output: Tensor, prior: Tensor, mask: Tensor | None = None) -> Tensor:
        """Compute the loss.

        Args:
            output: network logits or log-probabilities, ``(N, C)`` or ``(B, C, H, W)``.
            prior: prior probabilities, same shape.
            mask: optional boolean valid-pixel mask, ``(N,)`` or ``(B, H, W)``.

        Returns:
            Scalar loss.
        """
        log_q, log_p, mask, count = self._prepare(output, prior, mask)
        return self._mean(-_weighted_sum(log_p, log_q), mask, count)


class HardNaiveLoss(_PriorLoss):
    """Hard naive loss: cross-entropy against ``argmax_l p_i(l)`` (ties: the first class).

    The smoothed network probabilities are used (``smoothing=0`` gives plain cross-entropy).

    Args:
        input_type: whether ``output`` holds logits or log-probabilities.
        smoothing: additive smoothing of the network probabilities (the argmax of the prior
            does not depend on smoothing).
    """

    def forward(self, output: Tensor, prior: Tensor, mask: Tensor | None = None) -> Tensor:
        """Compute the loss.

        Args:
            output: network logits or log-probabilities, ``(N, C)`` or ``(B, C, H, W)``.
            prior: prior probabilities, same shape.
            mask: optional boolean valid-pixel mask, ``(N,)`` or ``(B, H, W)``.

        Returns:
            Scalar loss.
        """
        log_q, log_p, mask, count = self._prepare(output, prior, mask)
        target = log_p.argmax(dim=1, keepdim=True)
        return self._mean(-log_q.gather(1, target).squeeze(1), mask, count)


class NLLUnionLoss(_PriorLoss):
    """NLL-union loss: ``-log sum_l p_i(l) q_i(l)``, computed as ``-logsumexp(log p + log q)``.

    Args:
        input_type: whether ``output`` holds logits or log-probabilities.
        smoothing: additive smoothing of both prior and network probabilities.
    """

    def forward(self, output: Tensor, prior: Tensor, mask: Tensor | None = None) -> Tensor:
        """Compute the loss.

        Args:
            output: network logits or log-probabilities, ``(N, C)`` or ``(B, C, H, W)``.
            prior: prior probabilities, same shape.
            mask: optional boolean valid-pixel mask, ``(N,)`` or ``(B, H, W)``.

        Returns:
            Scalar loss.
        """
        log_q, log_p, mask, count = self._prepare(output, prior, mask)
        return self._mean(-torch.logsumexp(log_p + log_q, dim=1), mask, count)


class HighResLoss(nn.Module):
    """High-resolution supervised loss: cross-entropy on 1 m labels (ignore index).

    The baseline "HR" of the paper's EnviroAtlas tables: ``-log q_i(y_i)`` averaged over the
    pixels whose label is not :data:`~lcip.classes.IGNORE_INDEX` (and that the mask keeps).
    ``target = "label"`` tells the task to pass the batch's labels instead of the prior.

    Args:
        input_type: whether ``output`` holds logits or log-probabilities.
        smoothing: additive smoothing of the network probabilities (0: plain cross-entropy).
    """

    #: What the task passes as the second argument of ``forward``.
    target = "label"

    def __init__(self, input_type: InputType = "logits", smoothing: float = 0.0):
        super().__init__()
        self.input_type: InputType = _check_choice(  # type: ignore[assignment]
            "input_type", input_type, INPUT_TYPES
        )
        self.smoothing = _check_smoothing(smoothing)

    def forward(self, output: Tensor, label: Tensor, mask: Tensor | None = None) -> Tensor:
        """Compute the loss.

        Args:
            output: network logits or log-probabilities, ``(N, C)`` or ``(B, C, H, W)``.
            label: class indices, ``(N,)`` or ``(B, H, W)``; ``IGNORE_INDEX`` = unlabelled.
            mask: optional boolean valid-pixel mask shaped like ``label``.

        Returns:
            Scalar loss (a zero connected to ``output`` if no pixel is labelled).
        """
        dtype = torch.promote_types(output.dtype, torch.float32)
        log_q = log_probs(output.to(dtype), self.input_type, self.smoothing)
        valid = label != IGNORE_INDEX
        if mask is not None:
            valid &= mask.to(device=label.device, dtype=torch.bool)
        safe = torch.where(valid, label, 0).long().clamp(0, output.shape[1] - 1)
        nll = -log_q.gather(1, safe.unsqueeze(1)).squeeze(1)
        nll = torch.where(valid, nll, 0.0)
        return nll.sum() / valid.sum().clamp_min(1).to(dtype)


class LSRLoss(_PriorLoss):
    """Label super-resolution statistics matching (Malkin et al., ICLR 2019).

    Pixels are grouped into *units*: the valid pixels of one coarse block (a 30 m NLCD cell,
    ``block`` ids) that carry one NLCD class ``c`` (``nlcd`` indices; 0 = nodata, excluded).
    On a native 30 m grid a unit is a block; where blocks are cut by a crop edge or hold two
    NLCD classes (NLCD reprojected onto the 1 m grid) it is the part of the block with that
    class. For every unit ``B`` and target class ``l``:

        mu_l  = mean_{i in B} q_il,        var_l = sum_{i in B} q_il (1 - q_il) / |B|^2,
        v_l   = var_l + max(rho2[l, c], min_variance),
        nll_B = sum_l 0.5 (mu_l - eta[l, c])^2 / v_l + 0.5 log(2 pi v_l),

    and the loss is ``sum_B |B| nll_B / sum_B |B|``: units are weighted by their number of
    valid pixels, so a sliver of a block at a crop edge counts by the pixels it has, not as
    much as a whole block (its variance term is larger, its weight smaller). ``eta`` and
    ``rho2`` (C x 17, NLCD columns in :data:`lcip.classes.NLCD_CODES` order) are the mean and
    variance over training blocks of each target class's fraction in blocks of each NLCD class
    (:class:`lcip.priors.cooccurrence.LSRStatistics`). ``min_variance`` keeps the Gaussian
    proper where ``rho2`` is 0 (e.g. open-water blocks that are all water): without it the
    loss is unbounded below as ``q`` saturates.

    ``target = "blocks"`` tells the task (and the data pipeline) to provide per-pixel ``nlcd``
    and ``block`` tensors. The prior is not used (it is accepted for a uniform call).

    Args:
        input_type: whether ``output`` holds logits or log-probabilities.
        smoothing: additive smoothing of the network probabilities.
        statistics: ``lsr_statistics.json`` (or the cooccurrence folder holding it), as
            ``lcip-cooccurrence`` writes it; or give ``eta`` and ``rho2`` directly.
        eta: (C, 17) expected class fractions per NLCD class.
        rho2: (C, 17) variances of those fractions.
        min_variance: lower bound of ``rho2``.

    Raises:
        ConfigError: without statistics, or for an unreadable statistics file.
    """

    target = "blocks"
    eta: Tensor
    rho2: Tensor

    def __init__(
        self,
        input_type: InputType = "logits",
        smoothing: float = DEFAULT_SMOOTHING,
        statistics: str | None = None,
        eta: Any = None,
        rho2: Any = None,
        min_variance: float = 1e-3,
    ):
        super().__init__(input_type, smoothing)
        if statistics is not None:
            from lcip.priors.cooccurrence import LSRStatistics

            stats = LSRStatistics.read(statistics, setting="loss.statistics")
            eta, rho2 = stats.eta, stats.rho2
        if eta is None or rho2 is None:
            raise ConfigError("loss lsr needs statistics (loss.statistics=<lsr_statistics.json>)")
        eta_t = torch.as_tensor(eta, dtype=torch.float64)
        rho2_t = torch.as_tensor(rho2, dtype=torch.float64)
        if eta_t.ndim != 2 or eta_t.shape != rho2_t.shape:
            raise ConfigError(
                f"loss lsr: eta and rho2 must both be (classes, 17), got {tuple(eta_t.shape)} "
                f"and {tuple(rho2_t.shape)}"
            )
        if not (isinstance(min_variance, int | float) and min_variance > 0):
            raise ConfigError(f"loss min_variance must be > 0, got {min_variance!r}")
        self.min_variance = float(min_variance)
        self.register_buffer("eta", eta_t, persistent=False)
        self.register_buffer("rho2", rho2_t, persistent=False)

    def extra_repr(self) -> str:
        """Settings shown by ``repr``."""
        return f"{super().extra_repr()}, min_variance={self.min_variance}"

    def forward(
        self,
        output: Tensor,
        prior: Tensor | None = None,
        mask: Tensor | None = None,
        nlcd: Tensor | None = None,
        block: Tensor | None = None,
    ) -> Tensor:
        """Compute the loss.

        Args:
            output: network logits or log-probabilities, ``(B, C, H, W)``.
            prior: prior probabilities, same shape (unused; may be None).
            mask: optional boolean valid-pixel mask ``(B, H, W)``.
            nlcd: ``(B, H, W)`` NLCD class indices 0..16 (0 = nodata).
            block: ``(B, H, W)`` ids of the coarse blocks within each crop (>= 0).

        Returns:
            Scalar loss (a zero connected to ``output`` when no pixel is valid).
        """
        if nlcd is None or block is None:
            raise ValueError("loss lsr needs the batch's 'nlcd' and 'block' tensors")
        if prior is None:
            prior = torch.full_like(output, 1.0 / output.shape[1])
        log_q, _, mask, _ = self._prepare(output, prior, mask)
        num_classes = log_q.shape[1]
        if self.eta.shape[0] != num_classes:
            raise ValueError(
                f"LSR statistics hold {self.eta.shape[0]} classes but the output has {num_classes}"
            )
        nlcd = nlcd.to(log_q.device).long()
        valid = nlcd > 0
        if mask is not None:
            valid &= mask
        num_nlcd = self.eta.shape[1]
        crop = torch.arange(nlcd.shape[0], device=nlcd.device).view(-1, *[1] * (nlcd.ndim - 1))
        num_blocks = int(block.max().item()) + 1 if block.numel() else 1
        key = ((crop * num_blocks + block.to(nlcd.device).long()) * num_nlcd + nlcd)[valid]
        units, inverse = torch.unique(key, return_inverse=True)
        q = log_q.exp().movedim(1, -1)[valid]  # (pixels, C)
        zeros = q.new_zeros((len(units), num_classes))
        size = q.new_zeros(len(units)).index_add_(0, inverse, q.new_ones(len(inverse)))
        mean = zeros.index_add(0, inverse, q) / size.clamp_min(1)[:, None]
        var = zeros.index_add(0, inverse, q * (1 - q)) / size.clamp_min(1)[:, None] ** 2
        cls = units % num_nlcd
        eta = self.eta.to(q.dtype).T[cls]
        total_var = var + self.rho2.to(q.dtype).clamp_min(self.min_variance).T[cls]
        nll = 0.5 * (mean - eta) ** 2 / total_var + 0.5 * torch.log(2 * math.pi * total_var)
        loss = (nll.sum(dim=1) * size).sum() / size.sum().clamp_min(1)
        return loss + 0.0 * log_q.sum() if not len(units) else loss


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

#: Loss classes by config name.
LOSSES: dict[str, type[nn.Module]] = {
    "qr": QRLoss,
    "qr_free_energy": QRFreeEnergyLoss,
    "rq": RQLoss,
    "soft_naive": SoftNaiveLoss,
    "hard_naive": HardNaiveLoss,
    "nll_union": NLLUnionLoss,
    "hr": HighResLoss,
    "lsr": LSRLoss,
}


def build_loss(name: str, **kwargs: Any) -> nn.Module:
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
