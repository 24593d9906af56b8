"""ResNets with average pooling only: CIFAR forms ``resnet18``, ``resnet34``, ``resnet20`` and
the ImageNet form ``resnet34_imagenet``.

No max-pool anywhere. The CIFAR stem is a single stride-1 3×3 conv; the ImageNet stem is
torchvision's 7×7 stride-2 conv followed by a 3×3 stride-2 *average* pool (padding 1, padding
counted) in place of its max-pool, as the QCFS/COS codes replace it. Stages downsample with a
stride-2 first conv, and the head is a global average pool. Each :class:`BasicBlock` owns two
separate activation modules (after its first conv and after the residual sum), so that every
activation is used exactly once in the forward pass and becomes its own spiking neuron at
conversion.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from spikebridge.models.initialization import init_conv_bn
from spikebridge.models.registry import register_model

__all__ = ["BasicBlock", "ResNet", "resnet18", "resnet20", "resnet34", "resnet34_imagenet"]


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-act1-conv3x3-BN, then ``act2(residual + shortcut(x))``.

    The shortcut is a 1×1 conv (with ``stride``) + BN when the shape changes, else identity.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        activation: Callable[[], nn.Module],
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = activation()
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()
        self.act2 = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv-BN-act, stages of :class:`BasicBlock`, global average pool, linear head.

    ``stem="cifar"``: a stride-1 3×3 stem conv. ``stem="imagenet"``: a 7×7 stride-2 stem conv,
    then a 3×3 stride-2 average pool (padding 1).
    """

    def __init__(
        self,
        blocks_per_stage: Sequence[int],
        widths: Sequence[int],
        num_classes: int,
        in_channels: int,
        activation: Callable[[], nn.Module],
        stem: str = "cifar",
    ) -> None:
        super().__init__()
        if len(blocks_per_stage) != len(widths):
            raise ValueError("blocks_per_stage and widths must have the same length")
        if stem == "cifar":
            self.conv1 = _conv3x3(in_channels, widths[0])
            self.stem_pool: nn.Module | None = None
        elif stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
            self.stem_pool = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)
        else:
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = activation()
        stages: list[nn.Module] = []
        channels = widths[0]
        for index, (num_blocks, width) in enumerate(zip(blocks_per_stage, widths, strict=True)):
            stride = 1 if index == 0 else 2
            blocks: list[nn.Module] = []
            for block_index in range(num_blocks):
                blocks.append(
                    BasicBlock(channels, width, stride if block_index == 0 else 1, activation)
                )
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        if self.stem_pool is not None:
            x = self.stem_pool(x)
        x = self.layers(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


@register_model("resnet18")
def resnet18(num_classes: int, in_channels: int, activation: Callable[[], nn.Module]) -> nn.Module:
    """CIFAR ResNet-18: widths 64-128-256-512, [2, 2, 2, 2] basic blocks (17 activations)."""
    return ResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes, in_channels, activation)


@register_model("resnet34")
def resnet34(num_classes: int, in_channels: int, activation: Callable[[], nn.Module]) -> nn.Module:
    """CIFAR ResNet-34: widths 64-128-256-512, [3, 4, 6, 3] basic blocks (33 activations)."""
    return ResNet((3, 4, 6, 3), (64, 128, 256, 512), num_classes, in_channels, activation)


@register_model("resnet20")
def resnet20(num_classes: int, in_channels: int, activation: Callable[[], nn.Module]) -> nn.Module:
    """He et al. CIFAR ResNet-20: widths 16-32-64, 3 basic blocks per stage (19 activations)."""
    return ResNet((3, 3, 3), (16, 32, 64), num_classes, in_channels, activation)


@register_model("resnet34_imagenet")
def resnet34_imagenet(
    num_classes: int, in_channels: int, activation: Callable[[], nn.Module]
) -> nn.Module:
    """ImageNet ResNet-34 (torchvision layout, 224×224 input): 7×7/2 stem, 3×3/2 average pool
    instead of the max-pool, [3, 4, 6, 3] basic blocks of 64-128-256-512 (33 activations)."""
    return ResNet((3, 4, 6, 3), (64, 128, 256, 512), num_classes, in_channels, activation,
                  stem="imagenet")
