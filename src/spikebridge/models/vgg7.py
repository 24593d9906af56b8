"""``vgg7``: the VGG-7 of the ECC paper's CIFAR10-DVS experiment, for event count images.

The ECC paper (Wu, Yi, Huang 2022, §4.5 and Figure 4) runs a "VGG-7" on CIFAR10-DVS down-scaled to
42×42 but does not give its layout, so this is our choice of a standard 7-weight-layer VGG for a
42×42×2 input (the two polarities as channels)::

    64C3 - 128C3 - AP2 - 128C3 - AP2 - 256C3 - 256C3 - AP2 - FC512 - FC(num_classes)

five 3×3 conv-BN-activation layers (a BN after every convolution, as ECC trains them; no conv
bias, BN supplies it), 2×2 average pools (never max-pools, which an integrate-and-fire network
cannot reproduce; ECC uses average pooling only), then a 512-unit hidden linear layer with
dropout 0.5 and the output layer: 6 activations, 7 weight layers.

Other input sizes: an adaptive average pool to 5×5 follows the last pool. For 42×42 the features
are 5×5 there already (42 → 21 → 10 → 5), so the pool is the identity and the network is exactly
the plain layout above (a 256·5·5 = 6400-input classifier); DVS Gesture's 64×64 or 128×128
(8×8, 16×16 features) are averaged to that 5×5 grid and N-MNIST's 34×34 (4×4) is spread over it
(adaptive pooling then repeats values), so one
classifier fits every input size and no size needs to be stored with the checkpoint.
``in_channels`` is 2 for polarity-split counts or frames, 1 for summed polarities.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from spikebridge.models.initialization import init_conv_bn
from spikebridge.models.registry import register_model
from spikebridge.models.vgg import vgg_features

__all__ = ["VGG7", "VGG7_CFG", "vgg7"]

#: Output channels of each conv layer; ``"A"`` is a 2×2 average pool.
VGG7_CFG: tuple[int | str, ...] = (64, 128, "A", 128, "A", 256, 256, "A")

#: The grid the features are averaged to before the classifier (the 42×42 input's own).
FEATURE_GRID = (5, 5)


class VGG7(nn.Module):
    """The VGG-7 above: ``features`` (convs, pools, the adaptive pool to 5×5) and
    ``classifier`` (FC512 with dropout, then the output layer)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        activation: Callable[[], nn.Module],
        *,
        hidden: int = 512,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.features, channels = vgg_features(VGG7_CFG, in_channels, activation, FEATURE_GRID)
        self.classifier = nn.Sequential(
            nn.Linear(channels * FEATURE_GRID[0] * FEATURE_GRID[1], hidden),
            activation(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # no shape checks here: the converters trace this with torch.fx
        return self.classifier(torch.flatten(x, 1))


@register_model("vgg7")
def vgg7(num_classes: int, in_channels: int, activation: Callable[[], nn.Module]) -> nn.Module:
    """VGG-7 for event count images (ECC's CIFAR10-DVS network, our layout: see the module
    docstring): 42×42×2 by default, any size ≥ 8×8 (34×34 N-MNIST, 64×64/128×128 DVS Gesture)."""
    return VGG7(num_classes, in_channels, activation)
