"""Label super-resolution statistics matching (Malkin et al., ICLR 2019) on 30 m NLCD blocks."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from lcip.errors import ConfigError
from lcip.losses.base import Needs, PriorLoss
from lcip.losses.functional import DEFAULT_SMOOTHING, InputType

__all__ = ["LSRLoss"]


class LSRLoss(PriorLoss):
    """Label super-resolution statistics matching (Malkin et al., ICLR 2019).

    Pixels are grouped into *units*: the valid pixels of one coarse block (a 30 m NLCD cell,
    ``block`` ids) that carry one NLCD class ``c`` (``nlcd`` indices; 0 = nodata, excluded).
    On a native 30 m grid a unit is a block; where blocks are cut by a crop edge or hold two
    NLCD classes (NLCD reprojected onto the 1 m grid) it is the part of the block with that
    class. For every unit ``B`` and target class ``l``::

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

    It needs per-pixel ``nlcd`` and ``block`` tensors (:attr:`Needs.NLCD_BLOCKS`), which the
    training stage then has the data module read. The prior is not used (it is accepted for a
    uniform call).

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

    needs = Needs.NLCD_BLOCKS
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
        valid: Tensor | None = None,
        nlcd: Tensor | None = None,
        block: Tensor | None = None,
    ) -> Tensor:
        """Compute the loss.

        Args:
            output: network logits or log-probabilities, ``(B, C, H, W)``.
            prior: prior probabilities, same shape (unused; may be None).
            valid: optional boolean valid-pixel mask ``(B, H, W)``.
            nlcd: ``(B, H, W)`` NLCD class indices 0..16 (0 = nodata).
            block: ``(B, H, W)`` ids of the coarse blocks within each crop (>= 0).

        Returns:
            Scalar loss (a zero connected to ``output`` when no pixel is valid).
        """
        if nlcd is None or block is None:
            raise ValueError("loss lsr needs the batch's 'nlcd' and 'block' tensors")
        if prior is None:
            prior = torch.full_like(output, 1.0 / output.shape[1])
        log_q, _, valid, _ = self._prepare(output, prior, valid)
        num_classes = log_q.shape[1]
        if self.eta.shape[0] != num_classes:
            raise ValueError(
                f"LSR statistics hold {self.eta.shape[0]} classes but the output has {num_classes}"
            )
        nlcd = nlcd.to(log_q.device).long()
        keep = nlcd > 0
        if valid is not None:
            keep &= valid
        num_nlcd = self.eta.shape[1]
        crop = torch.arange(nlcd.shape[0], device=nlcd.device).view(-1, *[1] * (nlcd.ndim - 1))
        num_blocks = int(block.max().item()) + 1 if block.numel() else 1
        key = ((crop * num_blocks + block.to(nlcd.device).long()) * num_nlcd + nlcd)[keep]
        units, inverse = torch.unique(key, return_inverse=True)
        q = log_q.exp().movedim(1, -1)[keep]  # (pixels, C)
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
