"""Model factories for tests/test_cli_own_model.py: what a user's own module looks like (plain
PyTorch, nothing spikebridge-specific), plus the wrong things a factory can be."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DigitsCNN(nn.Module):
    """A user's ReLU CNN for 8×8 grey digits: BatchNorm, nn.ReLU and F.relu, max-pooling (or
    average pooling: ``pool="avg"``), global average pooling by x.mean."""

    def __init__(self, width: int = 8, num_classes: int = 10, pool: str = "max") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.bn1(self.conv1(x))))
        x = F.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


def digits_cnn(width: int = 8, num_classes: int = 10, pool: str = "max") -> nn.Module:
    return DigitsCNN(width, num_classes, pool)


class _Custom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x) + 1.0


class Unconvertible(nn.Module):
    """Four obstacles at once: GELU, LeakyReLU, MaxPool3d and a custom module (a sigmoid)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.gelu, self.leaky = nn.Conv3d(1, 4, 3), nn.GELU(), nn.LeakyReLU()
        self.pool, self.custom, self.fc = nn.MaxPool3d(2), _Custom(), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.leaky(self.gelu(self.conv(x))))
        return self.fc(self.custom(x).mean((2, 3, 4)))


def unconvertible() -> nn.Module:
    return Unconvertible()


NOT_CALLABLE = 3


def not_a_model() -> dict:
    return {"conv": nn.Conv2d(1, 1, 1)}


def broken() -> nn.Module:
    raise RuntimeError("the user's factory failed")
