"""VGG-16 with average pooling: ``vgg16`` (CIFAR form) and ``vgg16_imagenet`` (ImageNet form).

Thirteen 3×3 conv-BN-activation layers in five stages separated by 2×2 average pools (never
max-pools, which an integrate-and-fire network cannot reproduce; the QCFS and COS codes replace
VGG's max-pools by average pools the same way), then an adaptive average pool and a 4096-4096
classifier with dropout. The CIFAR form pools to 1×1 (a 512-input classifier); the ImageNet form
is torchvision's ``vgg16_bn`` layout, pooling to 7×7 (a 512·7·7-input classifier) for 224×224
images — smaller inputs work too, the adaptive pool then repeats each value.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from spikebridge.models.initialization import init_conv_bn
from spikebridge.models.registry import register_model

__all__ = ["VGG", "VGG16_CFG", "vgg16", "vgg16_imagenet", "vgg_features"]

#: Output channels of each conv layer; ``"A"`` is a 2×2 average pool.
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "A",
    128, 128, "A",
    256, 256, 256, "A",
    512, 512, 512, "A",
    512, 512, 512, "A",
)  # fmt: skip


def vgg_features(
    cfg: tuple[int | str, ...],
    in_channels: int,
    activation: Callable[[], nn.Module],
    pool_size: tuple[int, int],
) -> tuple[nn.Sequential, int]:
    """A VGG feature extractor and its output channels: for each ``cfg`` entry a 3×3
    conv (no bias) - BN - activation of that many channels, or (``"A"``) a 2×2 average pool;
    then an adaptive average pool to ``pool_size``."""
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
    layers.append(nn.AdaptiveAvgPool2d(pool_size))
    return nn.Sequential(*layers), channels


class VGG(nn.Module):
    """VGG with BN and average pooling; ``features`` (convs, ending in an adaptive average pool
    to ``pool_size``) and ``classifier`` (linears)."""

    def __init__(
        self,
        cfg: tuple[int | str, ...],
        num_classes: int,
        in_channels: int,
        activation: Callable[[], nn.Module],
        pool_size: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__()
        self.features, channels = vgg_features(cfg, in_channels, activation, pool_size)
        self.classifier = nn.Sequential(
            nn.Linear(channels * pool_size[0] * pool_size[1], 4096),
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


@register_model("vgg16_imagenet")
def vgg16_imagenet(
    num_classes: int, in_channels: int, activation: Callable[[], nn.Module]
) -> nn.Module:
    """ImageNet VGG-16 (torchvision ``vgg16_bn`` layout, 224×224 input): max-pools replaced by
    2×2 average pools, adaptive average pool to 7×7, 25088-4096-4096 classifier (15
    activations, 138 M parameters with 1000 classes)."""
    return VGG(VGG16_CFG, num_classes, in_channels, activation, pool_size=(7, 7))
