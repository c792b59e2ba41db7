"""lcip's own learning-rate schedulers (``configs/scheduler/*.yaml`` name them by ``_target_``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class CosineDecay(LRScheduler):
    """Per-step cosine decay of every learning rate from its base value to 0 over the run.

    A closed form of the step (no recursion on the previous rate), so a resumed run sets the
    rate of its step exactly. The run's length is ``total_steps`` when given; otherwise it is
    read from :attr:`run_length` (the task sets it to the trainer's estimated stepping batches)
    at the first step after the first, and only then: asking Lightning for it inside
    ``configure_optimizers`` builds the training loader before a resumed run restores its
    position, and the resumed run then drew other crops than an uninterrupted one. Neither the
    length nor :attr:`run_length` is saved in the state dict, so a resumed run with another
    ``trainer.max_epochs`` decays over its new length.

    Args:
        optimizer: the optimizer whose rates decay.
        total_steps: optimizer steps of the run; None: read from :attr:`run_length`.
        last_epoch: the last step done (-1: a new run), as torch's schedulers.
    """

    #: Lightning steps it after every optimizer step, not every epoch.
    interval = "step"

    def __init__(
        self, optimizer: Optimizer, total_steps: int | None = None, last_epoch: int = -1
    ) -> None:
        self.total_steps = total_steps
        #: Returns the run's length in optimizer steps (read lazily; see the class docstring).
        self.run_length: Callable[[], int] | None = None
        self._length: int | None = total_steps
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """The factor of the base rates at ``step`` (1 at step 0, 0 at the run's end)."""
        if step == 0:  # the scheduler's first call, made when the task builds it
            return 1.0
        if self._length is None:
            if self.run_length is None:
                raise RuntimeError("CosineDecay: no total_steps and no run_length to read it from")
            self._length = max(int(self.run_length()), 1)
        return cosine(step, self._length)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        """The rates at the current step (closed form)."""
        factor = self.factor(self.last_epoch)
        return [float(base) * factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        """Torch's scheduler state without the run's length and how to read it."""
        state = super().state_dict()
        for key in ("run_length", "_length", "total_steps"):
            state.pop(key, None)
        return state


def cosine(step: int, total: int) -> float:
    """The cosine decay's factor of the base learning rate at ``step`` of ``total`` (1 -> 0)."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


__all__ = ["CosineDecay", "cosine"]
