"""Lightning tasks, models, callbacks and the collapse guard."""

from lcip.training.callbacks import (
    AppendingCSVLogger,
    LastCheckpoint,
)
from lcip.training.collapse_guard import (
    CollapseGuard,
    batch_counts,
    class_counts,
)
from lcip.training.models import (
    FCN,
    UNet,
    load_state_from_checkpoint,
)
from lcip.training.schedulers import CosineDecay
from lcip.training.tasks import (
    BaseTask,
    ImplicitPosteriorTask,
    SupervisedTask,
    adamw,
    unshare_metric_states,
)

__all__ = [
    "FCN",
    "AppendingCSVLogger",
    "BaseTask",
    "CollapseGuard",
    "CosineDecay",
    "ImplicitPosteriorTask",
    "LastCheckpoint",
    "SupervisedTask",
    "UNet",
    "adamw",
    "batch_counts",
    "class_counts",
    "load_state_from_checkpoint",
    "unshare_metric_states",
]
