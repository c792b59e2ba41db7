"""Losses for learning a network from per-pixel prior beliefs (implicit posterior learning).

Notation (Rolf, Malkin et al., "Resolving Label Uncertainty with Implicit Posterior Models",
UAI 2022): pixel ``i`` has a prior ``p_i(l)`` over classes ``l`` and the network outputs
``q_i(l)``. The *implied posterior* is

    r_i(l) ∝ p_i(l) q_i(l) / D(l),        D(l) = sum_j q_j(l)  (j over the valid pixels of a batch)

and the losses below compare ``q`` and ``r`` (or ``q`` and ``p``) pixel by pixel, averaged over
valid pixels. For QR and RQ, ``D`` can also be taken over the batches of all ranks of a
``torch.distributed`` process group (``denominator="global"``) or be a running average over
batches (``denominator="running"``); see :class:`QRLoss`.

Conventions shared by every loss of this package:

* ``forward(output, prior, valid=None)`` takes the network ``output`` (logits or
  log-probabilities, see ``input_type``) and the ``prior`` probabilities, both shaped ``(N, C)``
  or ``(B, C, H, W)`` (any ``(B, C, *)``; the class axis is dim 1), and an optional boolean
  ``valid`` mask shaped like them without the class axis (True = valid pixel). Invalid pixels
  are excluded from the mean *and* from the denominator; their values (even NaN or an all-zero
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
:func:`implied_posterior` (:mod:`lcip.losses.functional`) are the single source of truth for
these formulas; prediction code uses them to compute ``q`` and ``r`` with the denominator taken
over a whole tile.

Each loss declares what it compares the network to (:class:`Needs`: the prior, the 1 m labels,
or NLCD blocks) in its ``needs`` attribute, and :func:`apply_loss` calls any loss with a batch.
Modules: :mod:`~lcip.losses.functional` (formulas), :mod:`~lcip.losses.base` (needs, base
classes, the call with a batch), :mod:`~lcip.losses.qr` (QR, RQ, QR's free energy),
:mod:`~lcip.losses.baselines` (naive, NLL-union, HR), :mod:`~lcip.losses.lsr` (label
super-resolution), :mod:`~lcip.losses.registry` (the losses by config name).
"""

from lcip.losses.base import (
    BatchLoss,
    Loss,
    Needs,
    PriorLoss,
    apply_loss,
)
from lcip.losses.baselines import (
    HardNaiveLoss,
    HighResLoss,
    NLLUnionLoss,
    PixelwisePriorLoss,
    SoftNaiveLoss,
)
from lcip.losses.functional import (
    DEFAULT_SMOOTHING,
    DENOMINATORS,
    INPUT_TYPES,
    DenominatorScope,
    InputType,
    implied_posterior,
    log_denominator,
    log_prior,
    log_probs,
)
from lcip.losses.lsr import LSRLoss
from lcip.losses.qr import (
    ImplicitPosteriorLoss,
    QRFreeEnergyLoss,
    QRLoss,
    RQLoss,
)
from lcip.losses.registry import LOSSES, build_loss

__all__ = [
    "DEFAULT_SMOOTHING",
    "DENOMINATORS",
    "INPUT_TYPES",
    "LOSSES",
    "BatchLoss",
    "DenominatorScope",
    "HardNaiveLoss",
    "HighResLoss",
    "ImplicitPosteriorLoss",
    "InputType",
    "LSRLoss",
    "Loss",
    "NLLUnionLoss",
    "Needs",
    "PixelwisePriorLoss",
    "PriorLoss",
    "QRFreeEnergyLoss",
    "QRLoss",
    "RQLoss",
    "SoftNaiveLoss",
    "apply_loss",
    "build_loss",
    "implied_posterior",
    "log_denominator",
    "log_prior",
    "log_probs",
]
