r"""Threshold balancing (Sengupta et al. 2019, "SpikeNorm"; docs/methods.md §7.9).

Layer by layer, in forward order, each neuron layer's threshold is set to the largest single-step
input current it receives while the SNN — with every earlier layer already balanced — is simulated
on calibration (training) images; neurons use hard reset (reset to zero) and :math:`v(0) = 0`.

In our unit-spike form a threshold :math:`\theta_n` measured with unchanged weights is the scale
:math:`\lambda_n` of §7.3 with :math:`\kappa = 1`, so the balanced network is built by the same
weight normalization as the other data-based methods (the two forms are the same network).
Differences from the paper, stated: the input is the analog image as a constant current (direct
encoding, like every method here) rather than Poisson spikes, and conv/linear biases (folded
BatchNorm) are kept — Sengupta's networks have none.

With sequence input (``CalibrationData(input="sequence")``, event frames) each calibration
sequence's first :math:`\min(\text{balance\_steps}, T)` frames are presented, one per step
(the input the SNN will see), and the starting scales are the ANN's maximum activations on the
rate input (:mod:`spikebridge.calibration`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..network import SpikingNetwork
from ..neurons import input_current
from ..normalization import normalize_weights
from ..simulate import check_steps, simulate
from .base import Preparation
from .normalized import DataNormalizedMethod
from .registry import register_method

__all__ = ["ThresholdBalancingMethod"]


@register_method
class ThresholdBalancingMethod(DataNormalizedMethod):
    """Thresholds = maximum input current, balanced layer by layer (hard reset)."""

    name = "threshold-balancing"
    summary: ClassVar[str] = ("Sengupta 2019 threshold balancing: each layer's threshold = its "
                              "max input current in simulation, layer by layer; hard reset (§7.9)")

    def __init__(self, balance_steps: int = 32, reset: str = "zero") -> None:
        super().__init__(percentile=100.0, reset=reset)
        self.balance_steps = check_steps(balance_steps)

    def scales(self, snn: SpikingNetwork, preparation: Preparation) -> dict[str, float]:
        """Balance layer by layer: one simulation pass over the calibration data per layer."""
        scales = super().scales(snn, preparation)  # start: max activations (later layers only)
        pristine = snn.network
        names = list(snn.neurons())
        for index, name in enumerate(names):
            network = normalize_weights(pristine, scales, dict.fromkeys(scales, 1.0))
            trial = SpikingNetwork(network, self, snn.sources)
            neuron = trial.neurons()[name]
            peak = [-float("inf")]

            def record(_module, inputs, peak=peak):
                peak[0] = max(peak[0], float(input_current(inputs).max()))

            handle = neuron.register_forward_pre_hook(record)
            try:
                description = f"threshold balancing: layer {index + 1}/{len(names)}"
                data = preparation.data
                for x in data.presentations(preparation.device, description):
                    if data.sequence:
                        simulate(trial, x[: self.balance_steps], input="sequence")
                    else:
                        simulate(trial, x, self.balance_steps)
            finally:
                handle.remove()
            # the neuron's input is in units of λ/κ = scales[name]; back to the ANN's units
            current = peak[0] * scales[name]
            if not current > 0.0:
                raise ValueError(
                    f"layer {name!r} received no positive input current during threshold "
                    "balancing; use more calibration samples or balance steps"
                )
            scales[name] = current
        return scales

    def prepare(self, snn: SpikingNetwork, preparation: Preparation) -> None:
        # every trial network is a fresh copy (normalize_weights never mutates its input)
        with torch.inference_mode():
            super().prepare(snn, preparation)

    def params(self) -> dict[str, Any]:
        return {"balance_steps": self.balance_steps, "reset": self.reset}
