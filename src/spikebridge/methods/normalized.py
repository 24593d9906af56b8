r"""What the data-based methods share for plain ReLU networks (docs/methods.md §7.3, §7.9).

Rueckauer's max/robust normalization, threshold balancing, RMP-SNN, OPI and ECC all convert an
ordinary ReLU ANN the same way and differ only in four choices, which this base class holds:

* the per-layer scale :math:`\lambda_n` — a percentile of the layer's ANN activations over
  calibration (training) images (:func:`~spikebridge.calibration.activation_statistics`), or
  measured otherwise (threshold balancing overrides :meth:`DataNormalizedMethod.scales`);
* the threshold :math:`\kappa_n` of the unit-spike network (and RMP's extra factor α);
* the neuron: reset (subtract/zero), initial potential :math:`v(0) = \varphi\kappa`, and ECC's
  residual-elimination current :math:`\eta\kappa/T` per step (§7.4);
* BatchNorm folding with or without ε (§7.5).

The network is put in unit-spike form by :func:`~spikebridge.normalization.normalize_weights`
(:math:`W^n \leftarrow \kappa\lambda_{n-1}W^n/\lambda_n`,
:math:`b^n\leftarrow\kappa b^n/\lambda_n`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from ..calibration import activation_statistics, check_percentile
from ..network import SpikingNetwork
from ..neurons import RESET_MODES, IFNeuron
from ..normalization import normalize_weights
from .base import ActivationSite, ConversionMethod, Preparation

__all__ = ["DataNormalizedMethod", "check_fraction"]


def check_fraction(name: str, value: float, low: float, high: float, closed_high: bool) -> float:
    """Validate ``low <= value < high`` (or ``<= high``), naming the parameter."""
    value = float(value)
    ok = low <= value <= high if closed_high else low <= value < high
    if not ok or math.isnan(value):
        bracket = "]" if closed_high else ")"
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}{bracket}, got {value}")
    return value


class DataNormalizedMethod(ConversionMethod):
    """A ReLU-network conversion with data-based scales (see the module docstring)."""

    source_kinds: ClassVar[tuple[str, ...]] = ("relu", "clipped_relu")
    source_hint: ClassVar[str] = "spikebridge train --activation relu --out DIR"

    def __init__(
        self,
        *,
        percentile: float = 100.0,
        kappa: float = 1.0,
        reset: str = "subtract",
        initial_fraction: float = 0.0,
        residual: float = 0.0,
        fold_epsilon: bool = True,
        threshold_factor: float = 1.0,
        zeros: bool = False,
    ) -> None:
        self.percentile = check_percentile(percentile)
        # whether zero activations enter the percentile: Rueckauer's toolbox leaves them out
        self.zeros = bool(zeros)
        kappa = float(kappa)
        if not (kappa > 0.0 and math.isfinite(kappa)):
            raise ValueError(f"the threshold κ must be a finite number > 0, got {kappa}")
        self.kappa = kappa
        if reset not in RESET_MODES:
            raise ValueError(f"reset must be one of {RESET_MODES}, got {reset!r}")
        self.reset = reset
        self.initial_fraction = check_fraction("the initial potential v(0)/θ", initial_fraction,
                                               0.0, 1.0, closed_high=False)
        self.residual = check_fraction("the residual-elimination fraction η", residual, 0.0, 1.0,
                                       closed_high=False)
        self.fold_epsilon = bool(fold_epsilon)
        self.threshold_factor = check_fraction("the threshold scale α", threshold_factor, 1e-6,
                                               1.0, closed_high=True)
        self.layer_scales: dict[str, float] = {}

    def neuron(self, site: ActivationSite) -> IFNeuron:
        # The threshold is set to κ by the normalization in prepare(); 1.0 until then.
        return IFNeuron(1.0, initial_fraction=self.initial_fraction, reset=self.reset,
                        residual=self.residual)

    def bn_epsilon(self) -> float | None:
        return None if self.fold_epsilon else 0.0

    def needs_calibration_data(self) -> bool:
        return True

    def needs_preparation(self) -> bool:
        return True  # the unit-spike rewrite, even when the scales need no data

    def horizon_dependent(self) -> bool:
        return self.residual > 0.0

    def scales(self, snn: SpikingNetwork, preparation: Preparation) -> dict[str, float]:
        """:math:`\\lambda_n` per IF neuron: the ``percentile`` of the ANN layer's activations."""
        names = list(snn.neurons())
        nodes = [preparation.activation_nodes[n] for n in names]
        stats = activation_statistics(preparation.ann, nodes, preparation.data, self.percentile,
                                      device=preparation.device, zeros=self.zeros)
        return {name: stats[node] for name, node in zip(names, nodes, strict=True)}

    def prepare(self, snn: SpikingNetwork, preparation: Preparation) -> None:
        scales = self.scales(snn, preparation)
        self.layer_scales = dict(scales)
        kappa = {name: self.kappa for name in scales}
        snn.replace_network(normalize_weights(snn.network, scales, kappa,
                                              threshold_factor=self.threshold_factor))

    def params(self) -> dict[str, Any]:
        return {"percentile": self.percentile, "kappa": self.kappa, "reset": self.reset,
                "v0": self.initial_fraction, "eta": self.residual,
                "fold_epsilon": self.fold_epsilon, "scale": self.threshold_factor,
                "zeros": self.zeros}
