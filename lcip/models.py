"""Models: the paper's small fully convolutional network, with configurable depth and widths.

``torchgeo.models.FCN`` is the paper's network with its depth (5) and kernel size (3) fixed;
:class:`FCN` here is the same architecture (``FCN(4, 4, num_filters=128)`` has exactly the same
layers and parameter count) with depth, widths and kernel sizes as settings, so one class also
serves the learned prior's network (kernels 11, 7, 5).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class FCN(nn.Module):
    """Fully convolutional network: ``num_layers`` conv + LeakyReLU blocks, then a 1x1 classifier.

    Every convolution uses 'same' padding, so the output has the input's height and width.

    Args:
        in_channels: number of input bands.
        classes: number of output classes (channels of the 1x1 classifier).
        num_filters: filters of every hidden layer (an int), or one width per layer.
        kernel_sizes: kernel size of every hidden layer (an int), or one per layer.
        num_layers: number of hidden layers when both widths and kernel sizes are ints.
        negative_slope: LeakyReLU slope.
        batch_norm: add a BatchNorm after every hidden convolution (not in the paper's FCN;
            it makes small CPU runs converge in far fewer steps).
    """

    def __init__(
        self,
        in_channels: int,
        classes: int,
        num_filters: int | Sequence[int] = 128,
        kernel_sizes: int | Sequence[int] = 3,
        num_layers: int = 5,
        negative_slope: float = 0.01,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        n = _depth(num_filters, kernel_sizes, num_layers)
        widths = [num_filters] * n if isinstance(num_filters, int) else list(num_filters)
        kernels = [kernel_sizes] * n if isinstance(kernel_sizes, int) else list(kernel_sizes)
        if any(k % 2 == 0 for k in kernels):
            raise ValueError(f"kernel sizes must be odd for 'same' padding, got {kernels}")
        layers: list[nn.Module] = []
        c_in = in_channels
        for width, k in zip(widths, kernels, strict=True):
            layers.append(nn.Conv2d(c_in, width, k, padding=k // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(negative_slope, inplace=True))
            c_in = width
        self.backbone = nn.Sequential(*layers)
        self.last = nn.Conv2d(c_in, classes, kernel_size=1)
        self.in_channels = in_channels
        self.classes = classes

    @property
    def receptive_field(self) -> int:
        """Receptive field in pixels (used to choose the prediction overlap)."""
        return 1 + sum(m.kernel_size[0] - 1 for m in self.modules() if isinstance(m, nn.Conv2d))

    def forward(self, x: Tensor) -> Tensor:
        """Logits of shape (B, classes, H, W) for input (B, in_channels, H, W)."""
        out: Tensor = self.last(self.backbone(x))
        return out


def _depth(
    num_filters: int | Sequence[int], kernel_sizes: int | Sequence[int], num_layers: int
) -> int:
    lengths = {len(v) for v in (num_filters, kernel_sizes) if not isinstance(v, int)}
    if len(lengths) > 1:
        raise ValueError(
            f"num_filters and kernel_sizes have different lengths: {num_filters}, {kernel_sizes}"
        )
    n = lengths.pop() if lengths else num_layers
    if n < 1:
        raise ValueError(f"the FCN needs at least one hidden layer, got {n}")
    return n


def load_state_from_checkpoint(model: nn.Module, path: str, prefix: str = "model.") -> None:
    """Initialise a model from a Lightning checkpoint (warm start, ``init_from=``).

    Args:
        model: the model to initialise in place.
        path: Lightning ``.ckpt`` file (or a plain state dict saved with ``torch.save``).
        prefix: prefix of the model's keys inside the checkpoint's ``state_dict``.

    Raises:
        FileNotFoundError: if the checkpoint does not exist.
        ValueError: if its weights do not fit the model.
    """
    from lcip.errors import ConfigError

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"init_from={path}: checkpoint does not exist") from None
    state = ckpt.get("state_dict", ckpt)
    state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)} or state
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"init_from={path}: weights do not fit the model ({first})") from None
