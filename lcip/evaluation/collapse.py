"""Collapse of q's predicted classes: detection, the training guard and the evaluation flag.

QR and RQ have degenerate minima: a network ``q`` that predicts one class everywhere gives an
implied posterior ``r`` of the same class and a loss near 0. A run that falls into one makes
a map no better than one colour, and its loss looks *better* than a healthy run's. The check
here compares class histograms over valid pixels: q has *collapsed* when one class takes at
least :data:`COLLAPSE_SHARE` of the pixels while the prior's argmax spreads over several
classes (its own top class below :data:`PRIOR_SHARE`). A region that truly is one class (the
prior says so too) is not a collapse.

:class:`lcip.training.collapse_guard.CollapseGuard` runs the check during training (over the batches
of the last ``every_n_steps`` steps) and after every validation epoch, says so in one log line
naming the run, the step and the classes, records ``train/collapsed``, ``val/collapsed``
(0/1) and the dominant class's share (``train/q_top_share``, ``val/q_top_share``) in the run's
``logs/metrics.csv``, and can stop the run (``callbacks.collapse_guard.stop``). ``lcip-evaluate``
flags collapsed maps with the same check (:func:`check_collapse` on the maps' class counts).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lcip.errors import LcipError

log = logging.getLogger(__name__)

#: q has collapsed when one class takes at least this share of the valid pixels ...
COLLAPSE_SHARE = 0.95
#: ... while the prior's argmax gives its own top class less than this share.
PRIOR_SHARE = 0.80


class CollapseError(LcipError):
    """A run stopped because q collapsed to one class (``callbacks.collapse_guard.stop=true``)."""


@dataclass(frozen=True)
class Collapse:
    """The outcome of one collapse check.

    Attributes:
        collapsed: whether q collapsed (see :func:`check_collapse`).
        top_class: q's most predicted class.
        top_share: its share of the valid pixels (0 when there are none).
        prior_class: the reference's (the prior argmax's, or the labels') most frequent class.
        prior_share: its share of the valid pixels.
    """

    collapsed: bool
    top_class: int
    top_share: float
    prior_class: int
    prior_share: float

    def describe(self, classes: Sequence[str] = (), reference: str = "the prior's argmax") -> str:
        """E.g. ``q predicts 'tree' on 97.0 % of valid pixels, the prior's argmax ... 61.0 %``."""
        top, ref = _name(self.top_class, classes), _name(self.prior_class, classes)
        return (
            f"q predicts {top} on {100 * self.top_share:.1f} % of valid pixels, {reference} "
            f"{ref} on {100 * self.prior_share:.1f} %"
        )


def _name(index: int, classes: Sequence[str]) -> str:
    return repr(classes[index]) if 0 <= index < len(classes) else f"class {index}"


def check_collapse(
    q_counts: npt.ArrayLike,
    prior_counts: npt.ArrayLike,
    share: float = COLLAPSE_SHARE,
    prior_share: float = PRIOR_SHARE,
) -> Collapse:
    """Whether q's class histogram collapsed while the prior's spreads.

    Args:
        q_counts: pixels per class of q's argmax (valid pixels only).
        prior_counts: pixels per class of the prior's argmax (or of the labels) on the same
            pixels.
        share: q collapsed when its top class has at least this share ...
        prior_share: ... and the prior's top class less than this share.

    Returns:
        the check's outcome (not collapsed when there are no valid pixels).
    """
    q = np.asarray(q_counts, dtype=np.float64).ravel()
    p = np.asarray(prior_counts, dtype=np.float64).ravel()
    top, ref = int(q.argmax()), int(p.argmax())
    top_share = float(q[top] / q.sum()) if q.sum() > 0 else 0.0
    ref_share = float(p[ref] / p.sum()) if p.sum() > 0 else 0.0
    collapsed = q.sum() > 0 and p.sum() > 0 and top_share >= share and ref_share < prior_share
    return Collapse(bool(collapsed), top, top_share, ref, ref_share)


__all__ = [
    "COLLAPSE_SHARE",
    "PRIOR_SHARE",
    "Collapse",
    "CollapseError",
    "check_collapse",
]
