"""``fashion_cnn``: the small demo CNN for 28×28 grayscale images (Fashion-MNIST).

Four 3×3 conv-BN-activation layers with two 2×2 average pools, then a 128-unit hidden linear
layer. Works for any input of at least 4×4: each 2×2 pool floors an odd size, as torch's
``AvgPool2d`` does (N-MNIST's 34×34 → 17×17 → 8×8, the last row and column of the 17×17 maps
left out), so the classifier takes ``64 · ⌊H/4⌋ · ⌊W/4⌋`` inputs.

The first pool comes right after the first convolution: this keeps the network at ≈8 M MACs per
28×28 image (about 2.4× less than pooling after two full-resolution convs) for the same accuracy
on Fashion-MNIST, which matters when every image is simulated for up to 32 time-steps on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from spikebridge.models.initialization import init_conv_bn
from spikebridge.models.registry import register_model

__all__ = ["FashionCNN", "fashion_cnn"]


def _conv_bn_act(
    in_channels: int, out_channels: int, activation: Callable[[], nn.Module]
) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        activation(),
    ]


class FashionCNN(nn.Module):
    """conv32-pool-conv32-conv64-pool-conv64-fc128-fc(num_classes), average pooling only."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        activation: Callable[[], nn.Module],
        *,
        input_size: tuple[int, int] = (28, 28),
    ) -> None:
        super().__init__()
        height, width = input_size
        if height < 4 or width < 4:
            raise ValueError(f"fashion_cnn needs H and W of at least 4, got {input_size}")
        self.features = nn.Sequential(
            *_conv_bn_act(in_channels, 32, activation),
            nn.AvgPool2d(2),
            *_conv_bn_act(32, 32, activation),
            *_conv_bn_act(32, 64, activation),
            nn.AvgPool2d(2),
            *_conv_bn_act(64, 64, activation),
        )
        self.classifier = nn.Sequential(
            nn.Linear(64 * (height // 4) * (width // 4), 128, bias=False),
            nn.BatchNorm1d(128),
            activation(),
            nn.Linear(128, num_classes),
        )
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


@register_model("fashion_cnn")
def fashion_cnn(
    num_classes: int,
    in_channels: int,
    activation: Callable[[], nn.Module],
    *,
    input_size: tuple[int, int] = (28, 28),
) -> nn.Module:
    """The demo CNN for 28×28 grayscale input (``input_size`` sets other sizes, at least 4×4,
    e.g. N-MNIST's 2×34×34 count images)."""
    return FashionCNN(num_classes, in_channels, activation, input_size=input_size)
