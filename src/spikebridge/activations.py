"""ANN-side activations whose outputs an integrate-and-fire neuron can reproduce.

Every activation here has a single scalar, per-layer upper threshold ``theta`` that becomes the
firing threshold of the IF neuron that replaces it at conversion (methods.md §3.3).

* :class:`QCFS` — quantization clip-floor-shift (methods.md §3.1), trainable ``theta``.
* :class:`ClippedReLU` — ``clip(z, 0, theta)``, trainable ``theta`` (the ``L → ∞`` limit of QCFS).
* ``torch.nn.ReLU`` is used as is for plain ReLU networks.

Activations are described by :class:`ActivationSpec` (plain data, stored in checkpoint configs)
and built with :meth:`ActivationSpec.build`, so model constructors take a factory, not a class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = [
    "QCFS",
    "ActivationSpec",
    "ClippedReLU",
    "floor_ste",
]


class _FloorSTE(torch.autograd.Function):
    """``floor`` in the forward pass, identity gradient in the backward pass (methods.md §3.2)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return grad_output


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """Floor with a straight-through gradient: forward ``⌊x⌋``, backward ``∂⌊x⌋/∂x := 1``."""
    return _FloorSTE.apply(x)


def _check_theta(theta: float) -> float:
    theta = float(theta)
    if not theta > 0.0:
        raise ValueError(f"the initial threshold theta must be > 0, got {theta}")
    return theta


class QCFS(nn.Module):
    r"""Quantization clip-floor-shift activation (methods.md §3.1, QCFS eq. 16).

    .. math::
        a = \theta\,\mathrm{clip}\Big(\tfrac1L
            \Big\lfloor \tfrac{zL}{\theta} + \varphi\Big\rfloor, 0, 1\Big),
        \qquad \varphi = \tfrac12

    ``theta`` (the paper's :math:`\lambda^l`) is a trainable scalar; the floor has a
    straight-through gradient and the clamp PyTorch's autograd gradient, which gives exactly the
    gradients of methods.md §3.2 (window :math:`-\theta/2L \le z < \theta + \theta/2L` for
    :math:`\partial a/\partial z`; :math:`(a-z)/\theta` inside it and 1 above it for
    :math:`\partial a/\partial\theta`).

    At conversion the IF neuron gets threshold ``theta`` and initial potential ``shift * theta``
    (methods.md §3.3).
    """

    def __init__(self, levels: int = 4, theta: float = 2.0, shift: float = 0.5) -> None:
        super().__init__()
        if int(levels) != levels or levels < 1:
            raise ValueError(f"QCFS needs an integer number of levels L >= 1, got {levels!r}")
        if not 0.0 <= shift < 1.0:
            raise ValueError(f"QCFS shift must lie in [0, 1), got {shift}")
        self.levels = int(levels)
        self.shift = float(shift)
        self.theta = nn.Parameter(torch.tensor(_check_theta(theta)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        L = self.levels
        steps = floor_ste(z * (L / self.theta) + self.shift)
        return torch.clamp(steps / L, 0.0, 1.0) * self.theta

    def extra_repr(self) -> str:
        return f"levels={self.levels}, theta={float(self.theta):.4g}, shift={self.shift}"


class ClippedReLU(nn.Module):
    r"""Clipped ReLU with a trainable upper threshold: :math:`a = \mathrm{clip}(z, 0, \theta)`.

    The :math:`L\to\infty` limit of QCFS; converts to an IF neuron with threshold ``theta``.
    """

    def __init__(self, theta: float = 2.0) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(_check_theta(theta)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.relu(z), self.theta)

    def extra_repr(self) -> str:
        return f"theta={float(self.theta):.4g}"


_KINDS = ("qcfs", "relu", "clipped_relu")


@dataclass(frozen=True)
class ActivationSpec:
    """What activation a model is trained with, as plain data (stored in ``config.json``).

    ``kind``: ``"qcfs"`` | ``"relu"`` | ``"clipped_relu"``; ``levels``: QCFS ``L``;
    ``theta``: initial threshold (QCFS / clipped ReLU). With short training a high initial
    threshold (the reference codes use 8) stays high and costs accuracy; 2.0 is our default.
    """

    kind: str = "qcfs"
    levels: int = 4
    theta: float = 2.0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown activation {self.kind!r}; choose one of {', '.join(_KINDS)}")
        if self.kind == "qcfs" and (int(self.levels) != self.levels or self.levels < 1):
            raise ValueError(f"QCFS needs levels L >= 1, got {self.levels!r}")
        if self.kind != "relu":
            _check_theta(self.theta)

    def build(self) -> nn.Module:
        """A fresh activation module (one per layer: each gets its own trainable threshold)."""
        if self.kind == "qcfs":
            return QCFS(levels=self.levels, theta=self.theta)
        if self.kind == "clipped_relu":
            return ClippedReLU(theta=self.theta)
        return nn.ReLU()

    @property
    def factory(self) -> Callable[[], nn.Module]:
        return self.build

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ActivationSpec:
        unknown = set(data) - {"kind", "levels", "theta"}
        if unknown:
            raise ValueError(f"unknown activation fields {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def parse(cls, text: str) -> ActivationSpec:
        """Parse a command-line spec: ``qcfs``, ``qcfs:L=8``, ``qcfs:L=4,theta=2``, ``relu``."""
        kind, _, rest = text.partition(":")
        kwargs: dict = {"kind": kind.strip().lower()}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"activation option {item!r} must look like key=value")
            key = key.strip().lower()
            if key in ("l", "levels"):
                kwargs["levels"] = int(value)
            elif key == "theta":
                kwargs["theta"] = float(value)
            else:
                raise ValueError(f"unknown activation option {key!r} (known: L, theta)")
        return cls(**kwargs)
