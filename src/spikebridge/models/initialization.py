"""Weight initialisation shared by every model in the registry."""

from __future__ import annotations

from torch import nn

__all__ = ["init_conv_bn"]


def init_conv_bn(model: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU gain) for convolutions; BatchNorm γ = 1, β = 0.

    Linear layers keep PyTorch's default initialisation.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
