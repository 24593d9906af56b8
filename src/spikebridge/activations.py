"""ANN-side activations whose outputs an integrate-and-fire neuron can reproduce.

Every activation here has a single scalar, per-layer upper threshold ``theta`` that becomes the
firing threshold of the IF neuron that replaces it at conversion (docs/methods.md §3.3).

* :class:`QCFS` — quantization clip-floor-shift (docs/methods.md §3.1), trainable ``theta``.
* :class:`ClippedReLU` — ``clip(z, 0, theta)``, trainable ``theta`` (the ``L → ∞`` limit of QCFS;
  the "threshold ReLU" of the stReLU paper, §6.2).
* :class:`SlipReLU` — weighted sum of a threshold-ReLU and a QCFS-like step (docs/methods.md §5.1).
* :class:`SymmetricThresholdReLU` — ``clip(z, -theta, theta)`` (stReLU, docs/methods.md §6.2,
  **reconstructed**: the paper's formulas were not recovered).
* :class:`AsymmetricLeakyReLU` — ``clip(z, 0, theta)`` above 0, ``max(alpha z, -neg_theta)``
  below (the stReLU paper's asymmetric-threshold LeakyReLU baseline, §6.2, reconstructed).
* ``torch.nn.ReLU`` is used as is for plain ReLU networks.

Activations are described by :class:`ActivationSpec` (plain data, stored in checkpoint configs)
and built with :meth:`ActivationSpec.build`, so model constructors take a factory, not a class.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import nn

__all__ = [
    "QCFS",
    "SPIKING_ACTIVATIONS",
    "ActivationSpec",
    "AsymmetricLeakyReLU",
    "ClippedReLU",
    "SlipReLU",
    "SymmetricThresholdReLU",
    "floor_ste",
]


class _FloorSTE(torch.autograd.Function):
    """``floor`` forward, identity gradient backward (docs/methods.md §3.2)."""

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
    if not (theta > 0.0 and math.isfinite(theta)):
        raise ValueError(f"the initial threshold theta must be a finite number > 0, got {theta}")
    return theta


class QCFS(nn.Module):
    r"""Quantization clip-floor-shift activation (docs/methods.md §3.1, QCFS eq. 16).

    .. math::
        a = \theta\,\mathrm{clip}\Big(\tfrac1L
            \Big\lfloor \tfrac{zL}{\theta} + \varphi\Big\rfloor, 0, 1\Big),
        \qquad \varphi = \tfrac12

    ``theta`` (the paper's :math:`\lambda^l`) is a trainable scalar; the floor has a
    straight-through gradient and the clamp PyTorch's autograd gradient, which gives exactly the
    gradients of docs/methods.md §3.2 (window :math:`-\theta/2L \le z < \theta + \theta/2L` for
    :math:`\partial a/\partial z`; :math:`(a-z)/\theta` inside it and 1 above it for
    :math:`\partial a/\partial\theta`).

    At conversion the IF neuron gets threshold ``theta`` and initial potential ``shift * theta``
    (docs/methods.md §3.3).
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
        return f"levels={self.levels}, theta={float(self.theta.detach()):.4g}, shift={self.shift}"


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
        return f"theta={float(self.theta.detach()):.4g}"


def _check_levels(levels: int, what: str) -> int:
    if isinstance(levels, bool) or int(levels) != levels or levels < 1:
        raise ValueError(f"{what} needs an integer number of levels L >= 1, got {levels!r}")
    return int(levels)


def _check_range(value: float, name: str, low: float = -math.inf, high: float = math.inf) -> float:
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        where = "be finite" if math.isinf(low) else f"lie in [{low:g}, {high:g}]"
        raise ValueError(f"{name} must {where}, got {value}")
    return value


def _check_positive(value: float, name: str) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


class SlipReLU(nn.Module):
    r"""SlipReLU (docs/methods.md §5.1): a weighted sum of a threshold ReLU and a QCFS-like step.

    .. math::
        h(z) = c\,\theta\,\mathrm{clip}\Big(\frac z\theta + \frac{\delta_1}{L}, 0, 1\Big)
             + (1-c)\,\theta\,\mathrm{clip}\Big(\frac1L\Big\lfloor \frac{Lz}{\theta}
               + \delta_2\Big\rfloor, 0, 1\Big)

    ``theta`` (θ, per layer) is trainable; ``c`` ∈ [0, 1] is fixed unless ``learn_c`` (then it is
    a parameter, clamped to [0, 1] in the forward pass); ``levels`` is ``L``; ``delta1`` (δ₁,
    default 0) shifts the threshold-ReLU branch by δ₁θ/L; ``delta2`` (δ₂, default ½) shifts the
    step branch and becomes the SNN's initial potential ``v(0) = δ₂θ`` (§5.3). The floor has a
    straight-through gradient and the clamps PyTorch's autograd gradients, which gives §5.2's
    gradients (inclusive pass-through masks).

    Special cases (§5.4), which hold *bit for bit*: ``c = 0, δ₂ = ½`` is :class:`QCFS`,
    ``c = 0, δ₂ = 0`` the quantization clip-floor (``QCFS(shift=0)``), ``c = 1, δ₁ = 0`` is
    :class:`ClippedReLU`. (The ramp branch is computed as ``clip(z + δ₁θ/L, 0, θ)``, equal to
    θ·clip(z/θ + δ₁/L, 0, 1) in exact arithmetic, so that ``c = 1`` reproduces the clipped ReLU
    exactly in floating point.)
    """

    def __init__(self, levels: int = 4, theta: float = 2.0, c: float = 0.5, delta1: float = 0.0,
                 delta2: float = 0.5, learn_c: bool = False) -> None:
        super().__init__()
        self.levels = _check_levels(levels, "SlipReLU")
        self.delta1 = _check_range(delta1, "SlipReLU delta1 (δ₁)")
        self.delta2 = _check_range(delta2, "SlipReLU delta2 (δ₂, the SNN's v(0)/θ)", 0.0, 1.0)
        self.learn_c = bool(learn_c)
        weight = torch.tensor(_check_range(c, "SlipReLU c", 0.0, 1.0))
        if self.learn_c:
            self.c = nn.Parameter(weight)
        else:
            self.register_buffer("c", weight)
        self.theta = nn.Parameter(torch.tensor(_check_theta(theta)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        theta, L = self.theta, self.levels
        shifted = z if self.delta1 == 0.0 else z + theta * (self.delta1 / L)
        ramp = torch.clamp(shifted, min=0.0).clamp(max=theta)  # θ clip(z/θ + δ₁/L, 0, 1)
        step = torch.clamp(floor_ste(z * (L / theta) + self.delta2) / L, 0.0, 1.0) * theta
        c = torch.clamp(self.c, 0.0, 1.0) if self.learn_c else self.c
        return c * ramp + (1 - c) * step

    def extra_repr(self) -> str:
        theta, c = float(self.theta.detach()), float(self.c.detach())
        return (f"levels={self.levels}, theta={theta:.4g}, c={c:.4g}"
                f"{' (learned)' if self.learn_c else ''}, delta1={self.delta1:g}, "
                f"delta2={self.delta2:g}")


class SymmetricThresholdReLU(nn.Module):
    r"""Symmetric-threshold ReLU (stReLU), :math:`a = \mathrm{clip}(z, -\theta, \theta)`.

    **Reconstruction** (docs/methods.md §6.2): only the paper's abstract was available, its formulas
    were not recovered. The abstract says stReLU has a negative threshold (so negative activations
    are carried over to the SNN) and that its two thresholds are symmetric; this class is the
    best-supported reading of that: identity between −θ and θ, one trainable θ per layer
    (gradient +1 above θ and −1 below −θ). It converts to a signed IF neuron with thresholds ±θ
    (method ``"strelu"``).
    """

    def __init__(self, theta: float = 2.0) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(_check_theta(theta)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.clamp(z, min=-self.theta, max=self.theta)

    def extra_repr(self) -> str:
        return f"theta={float(self.theta.detach()):.4g} (reconstructed stReLU)"


class AsymmetricLeakyReLU(nn.Module):
    r"""Asymmetric-threshold LeakyReLU: the stReLU paper's baseline (§6.2, reconstructed).

    .. math::
        a = \begin{cases}\min(z, \theta) & z \ge 0\\ \max(\alpha z, -\theta_-) & z < 0\end{cases}

    ``theta`` (θ) is trainable; the slope ``alpha`` (α) and the negative bound ``neg_theta``
    (θ₋) are fixed hyper-parameters, so the asymmetry θ₋ ≠ θ the baseline is about stays what
    the user chose. The paper's α and θ₋ were not recovered. It converts (method
    ``"leaky-threshold"``) to a signed IF neuron whose negative threshold is θ₋/α and whose
    negative spikes are worth θ₋, so the negative firing rate reproduces αz down to −θ₋.
    """

    def __init__(self, theta: float = 2.0, alpha: float = 0.1, neg_theta: float = 0.5) -> None:
        super().__init__()
        self.alpha = _check_positive(alpha, "AsymmetricLeakyReLU alpha (slope below 0)")
        self.neg_theta = _check_positive(neg_theta, "AsymmetricLeakyReLU neg_theta (θ₋)")
        self.theta = nn.Parameter(torch.tensor(_check_theta(theta)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        positive = torch.clamp(z, max=self.theta)
        negative = torch.clamp(z * self.alpha, min=-self.neg_theta)
        return torch.where(z >= 0, positive, negative)

    def extra_repr(self) -> str:
        return (f"theta={float(self.theta.detach()):.4g}, alpha={self.alpha:g}, "
                f"neg_theta={self.neg_theta:g}")


#: Activation modules the converter maps to IF neurons (kept as leaves when tracing).
SPIKING_ACTIVATIONS = (QCFS, ClippedReLU, SlipReLU, SymmetricThresholdReLU, AsymmetricLeakyReLU)

_KINDS = ("qcfs", "relu", "clipped_relu", "slip", "strelu", "leaky_threshold")
# The fields each kind uses (= its command-line options). ``levels`` and ``theta`` are always
# stored (older configs have them for every kind); the others only for the kinds that use them.
_OPTIONS: dict[str, tuple[str, ...]] = {
    "qcfs": ("levels", "theta"),
    "relu": (),
    "clipped_relu": ("theta",),
    "slip": ("levels", "theta", "c", "delta1", "delta2", "learn_c"),
    "strelu": ("theta",),
    "leaky_threshold": ("theta", "alpha", "neg_theta"),
}
_EXTRA_FIELDS = ("c", "delta1", "delta2", "learn_c", "alpha", "neg_theta")
_OPTION_NAMES = {"levels": "L"}
_ALIASES = {"l": "levels"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _option_list(kind: str) -> str:
    return ", ".join(_OPTION_NAMES.get(f, f) for f in _OPTIONS[kind]) or "none"


@dataclass(frozen=True)
class ActivationSpec:
    """What activation a model is trained with, as plain data (stored in ``config.json``).

    ``kind`` and the fields it uses (command line: ``kind:key=value,...``):

    * ``"qcfs"`` — ``levels`` (``L``), ``theta``: :class:`QCFS` (``qcfs:L=4,theta=2``);
    * ``"relu"`` — none: ``nn.ReLU``;
    * ``"clipped_relu"`` — ``theta``: :class:`ClippedReLU` (the threshold ReLU);
    * ``"slip"`` — ``levels``, ``theta``, ``c`` (default 0.5), ``delta1`` (0), ``delta2`` (0.5),
      ``learn_c`` (false): :class:`SlipReLU` (``slip:L=4,c=0.5,theta=2``);
    * ``"strelu"`` — ``theta``: :class:`SymmetricThresholdReLU` (reconstructed, §6.2);
    * ``"leaky_threshold"`` — ``theta``, ``alpha`` (0.1), ``neg_theta`` (0.5):
      :class:`AsymmetricLeakyReLU` (``leaky_threshold:theta=2,alpha=0.1,neg_theta=0.5``).

    ``theta`` is the initial threshold. With short training a high initial threshold (the
    reference codes use 8) stays high and costs accuracy; 2.0 is our default. Fields a kind does
    not use must keep their defaults; :meth:`to_dict` writes only ``kind``, ``levels``, ``theta``
    and the kind's own extra fields, so configs of older kinds are unchanged.
    """

    kind: str = "qcfs"
    levels: int = 4
    theta: float = 2.0
    c: float = 0.5
    delta1: float = 0.0
    delta2: float = 0.5
    learn_c: bool = False
    alpha: float = 0.1
    neg_theta: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown activation {self.kind!r}; choose one of {', '.join(_KINDS)}")
        if self.kind in ("qcfs", "slip"):
            _check_levels(self.levels, self.kind)
        if self.kind != "relu":
            _check_theta(self.theta)
        for f in fields(self):
            if f.name in _EXTRA_FIELDS and f.name not in _OPTIONS[self.kind]:
                if getattr(self, f.name) != f.default:
                    raise ValueError(
                        f"activation {self.kind!r} has no option {f.name!r} (its options: "
                        f"{_option_list(self.kind)})"
                    )
        if not isinstance(self.learn_c, bool):
            raise ValueError(f"learn_c must be true or false, got {self.learn_c!r}")
        if self.kind != "relu":
            self.build()  # the module's own checks (c ∈ [0, 1], δ₂ ∈ [0, 1], α > 0, ...)

    def build(self) -> nn.Module:
        """A fresh activation module (one per layer: each gets its own trainable threshold)."""
        if self.kind == "qcfs":
            return QCFS(levels=self.levels, theta=self.theta)
        if self.kind == "clipped_relu":
            return ClippedReLU(theta=self.theta)
        if self.kind == "slip":
            return SlipReLU(levels=self.levels, theta=self.theta, c=self.c, delta1=self.delta1,
                            delta2=self.delta2, learn_c=self.learn_c)
        if self.kind == "strelu":
            return SymmetricThresholdReLU(theta=self.theta)
        if self.kind == "leaky_threshold":
            return AsymmetricLeakyReLU(theta=self.theta, alpha=self.alpha,
                                       neg_theta=self.neg_theta)
        return nn.ReLU()

    @property
    def factory(self) -> Callable[[], nn.Module]:
        return self.build

    def to_dict(self) -> dict:
        data = {"kind": self.kind, "levels": self.levels, "theta": self.theta}
        data.update({f: getattr(self, f) for f in _EXTRA_FIELDS if f in _OPTIONS[self.kind]})
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ActivationSpec:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown activation fields {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def parse(cls, text: str) -> ActivationSpec:
        """Parse a command-line spec: ``qcfs``, ``qcfs:L=8``, ``slip:L=4,c=0.5,theta=2``,
        ``strelu:theta=2``, ``leaky_threshold:alpha=0.1,neg_theta=0.5``, ``relu``."""
        kind, _, rest = text.partition(":")
        kind = kind.strip().lower()
        if kind not in _KINDS:
            raise ValueError(f"unknown activation {kind!r}; choose one of {', '.join(_KINDS)}")
        kwargs: dict = {"kind": kind}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"activation option {item!r} must look like key=value")
            key = key.strip()
            name = _ALIASES.get(key.lower(), key.lower())
            if name not in _OPTIONS[kind]:
                raise ValueError(
                    f"unknown option {key!r} for activation {kind!r} (its options: "
                    f"{_option_list(kind)})"
                )
            kwargs[name] = _parse_option(key, name, value.strip())
        return cls(**kwargs)


def _parse_option(key: str, name: str, value: str) -> int | float | bool:
    try:
        if name == "levels":
            return int(value)
        if name == "learn_c":
            if value.lower() not in _TRUE + _FALSE:
                raise ValueError(value)
            return value.lower() in _TRUE
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(value)
        return number
    except ValueError:
        kind = {"levels": "an integer",
                "learn_c": "0/1 (or true/false)"}.get(name, "a finite number")
        raise ValueError(f"activation option {key}={value!r} must be {kind}") from None
