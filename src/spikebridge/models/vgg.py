"""``vgg16``: the CIFAR-form VGG-16 used by the QCFS and COS papers, with average pooling.

Thirteen 3×3 conv-BN-activation layers in five stages separated by 2×2 average pools (never
max-pools, which an integrate-and-fire network cannot reproduce), then an adaptive average pool
to 1×1 and a 4096-4096 classifier with dropout.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from spikebridge.models import register_model
from spikebridge.models.initialization import init_conv_bn

__all__ = ["VGG", "VGG16_CFG", "vgg16"]

#: Output channels of each conv layer; ``"A"`` is a 2×2 average pool.
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "A",
    128, 128, "A",
    256, 256, 256, "A",
    512, 512, 512, "A",
    512, 512, 512, "A",
)  # fmt: skip


class VGG(nn.Module):
    """VGG with BN and average pooling; ``features`` (convs) and ``classifier`` (linears)."""

    def __init__(
        self,
        cfg: tuple[int | str, ...],
        num_classes: int,
        in_channels: int,
        activation: Callable[[], nn.Module],
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in cfg:
            if item == "A":
                layers.append(nn.AvgPool2d(2))
            else:
                assert isinstance(item, int)
                layers += [
                    nn.Conv2d(channels, item, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(item),
                    activation(),
                ]
                channels = item
        layers.append(nn.AdaptiveAvgPool2d((1, 1)))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(channels, 4096),
            activation(),
            nn.Dropout(0.5),
            nn.Linear(4096, 4096),
            activation(),
            nn.Dropout(0.5),
            nn.Linear(4096, num_classes),
        )
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


@register_model("vgg16")
def vgg16(num_classes: int, in_channels: int, activation: Callable[[], nn.Module]) -> nn.Module:
    """CIFAR VGG-16 (13 conv + 3 linear layers, 15 activations), average pooling only."""
    return VGG(VGG16_CFG, num_classes, in_channels, activation)
