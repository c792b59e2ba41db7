"""Models: the paper's small fully convolutional network, and a U-Net with a ResNet encoder.

``torchgeo.models.FCN`` is the paper's network with its depth (5) and kernel size (3) fixed;
:class:`FCN` here is the same architecture (``FCN(4, 4, num_filters=128)`` has exactly the same
layers and parameter count) with depth, widths and kernel sizes as settings, so one class also
serves the learned prior's network (kernels 11, 7, 5).

:class:`UNet` (beyond the paper) wraps ``segmentation_models_pytorch.Unet``, the library
TorchGeo's segmentation trainer builds on. Both take ``(B, in_channels, H, W)`` and return
logits ``(B, classes, H, W)`` for any ``H, W``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lcip.errors import ConfigError


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


class UNet(nn.Module):
    """U-Net with a ResNet (or any ``segmentation_models_pytorch``) encoder; logits like FCN.

    Inputs whose height or width is not a multiple of the encoder's output stride
    (``2 ** encoder_depth``, 32 by default) are zero-padded on the bottom and right to the
    next multiple and the logits cropped back, so any crop or prediction window works (zeros
    are what invalid pixels hold anyway); sizes that are multiples are passed through untouched.

    Args:
        in_channels: number of input bands (imagery bands plus any auxiliary bands).
        classes: number of output classes.
        encoder_name: encoder (``resnet18``, ``resnet34``, ...; see segmentation_models_pytorch).
        encoder_weights: pretrained encoder weights (e.g. ``imagenet``), downloaded from the
            internet on first use; ``None`` (the default) starts from random weights. With
            ``in_channels != 3`` the library adapts the first convolution.
        encoder_depth: number of encoder stages (3..5); the output stride is ``2 ** depth``.
        decoder_channels: decoder widths, one per stage (None: the library's default for the
            depth, 256, 128, 64, 32, 16 truncated to ``encoder_depth``).
    """

    def __init__(
        self,
        in_channels: int,
        classes: int,
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        encoder_depth: int = 5,
        decoder_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        if not 3 <= encoder_depth <= 5:
            raise ConfigError(f"model.encoder_depth must be 3, 4 or 5, got {encoder_depth}")
        channels = (256, 128, 64, 32, 16)[:encoder_depth]
        if decoder_channels is not None:
            channels = tuple(int(c) for c in decoder_channels)
            if len(channels) != encoder_depth:
                raise ConfigError(
                    f"model.decoder_channels={list(channels)}: needs one width per encoder "
                    f"stage ({encoder_depth})"
                )
        try:
            self.net = smp.Unet(
                encoder_name=encoder_name,
                encoder_weights=encoder_weights,
                encoder_depth=encoder_depth,
                decoder_channels=channels,
                in_channels=in_channels,
                classes=classes,
            )
        except (KeyError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"model.encoder_name={encoder_name}: {first}") from None
        self.stride = 2**encoder_depth
        self.in_channels = in_channels
        self.classes = classes

    @property
    def receptive_field(self) -> int:
        """A practical context size in pixels (prediction reads half of it around each window).

        A U-Net's theoretical receptive field spans hundreds of pixels; four output strides
        of context give seamless window predictions in practice.
        """
        return 4 * self.stride + 1

    def forward(self, x: Tensor) -> Tensor:
        """Logits of shape (B, classes, H, W) for input (B, in_channels, H, W)."""
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % self.stride, -w % self.stride
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h))
        out: Tensor = self.net(x)
        return out[..., :h, :w]


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
