"""The formulas of implicit posterior learning, and the checks and sums the losses share.

:func:`log_probs`, :func:`log_prior`, :func:`log_denominator` and :func:`implied_posterior`
are the single source of truth for the formulas (see :mod:`lcip.losses` for the notation and
the conventions every loss follows); prediction code uses them to compute ``q`` and ``r`` with
the denominator taken over a whole tile. The private helpers below (argument checks, masked
sums in log space, the differentiable all-reduces of the ``"global"`` and ``"running"``
denominators) are shared by the loss modules of this package.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from lcip.errors import ConfigError

__all__ = [
    "DEFAULT_SMOOTHING",
    "DENOMINATORS",
    "INPUT_TYPES",
    "DenominatorScope",
    "InputType",
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


def log_denominator(log_q: Tensor, valid: Tensor | None = None) -> Tensor:
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
        valid: optional boolean valid-pixel mask shaped like ``log_q`` without dim 1.

    Returns:
        Tensor of shape ``(C,)``.
    """
    log_sum, count = _log_sum_and_count(log_q, valid)
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


def _log_sum_and_count(log_q: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """Per-class ``log sum_j q_j(l)`` over valid pixels and the number of valid pixels.

    The log-sum is ``-inf`` where no pixel is valid, with finite (zero) gradients.
    """
    dims = _reduce_dims(log_q)
    if valid is None:
        num_pixels = log_q.numel() // max(log_q.shape[1], 1)
        count = torch.full((), num_pixels, dtype=log_q.dtype, device=log_q.device)
        return torch.logsumexp(log_q, dim=dims), count
    count = valid.sum(dtype=log_q.dtype)
    any_valid = count > 0
    # Masked pixels contribute exp(-inf) = 0. If *no* pixel is valid they are filled with 0
    # instead, so that logsumexp stays finite (its backward would be NaN on an all -inf input);
    # that value is then replaced by -inf.
    fill = torch.where(any_valid, _NEG_INF, 0.0).to(log_q.dtype)
    values = torch.where(valid.unsqueeze(1), log_q, fill)
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
    ``R`` ranks turns back into the sum (see :class:`~lcip.losses.qr.ImplicitPosteriorLoss`).
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


def _global_mean(per_pixel: Tensor, valid: Tensor | None, global_count: Tensor) -> Tensor:
    """Mean of ``per_pixel`` over the valid pixels of all ranks (``global_count`` of them).

    Returns ``sum_k s_k`` on every rank, with ``s_k = sum_{i valid on rank k} x_i / N``, and the
    gradient of ``R s_k`` (0 with a grad_fn when no rank has a valid pixel).
    """
    if valid is not None:
        per_pixel = torch.where(valid, per_pixel, 0.0)
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


def _check_inputs(output: Tensor, prior: Tensor, valid: Tensor | None) -> None:
    if output.ndim < 2:
        raise ValueError(
            f"loss output must have a class axis at dim 1, i.e. shape (N, C) or (B, C, H, W); "
            f"got shape {tuple(output.shape)}"
        )
    if prior.shape != output.shape:
        raise ValueError(
            f"prior shape {tuple(prior.shape)} does not match output shape {tuple(output.shape)}"
        )
    if valid is not None:
        expected = output.shape[:1] + output.shape[2:]
        if valid.shape != expected:
            raise ValueError(
                f"valid mask shape {tuple(valid.shape)} does not match output shape "
                f"{tuple(output.shape)} without its class axis, {tuple(expected)}"
            )
