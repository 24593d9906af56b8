"""Frozen COS: offset-spike calibration averaged over calibration data into one static v(0) per
neuron (docs/export.md §2, "Refused"; docs/methods.md §4).

COS (:mod:`spikebridge.methods.cos`) calibrates every sample's initial potentials online, from
that sample's first ρ input frames, so a COS SNN is not a static network and cannot be exported
to NIR. This method is the static alternative, chosen explicitly: convert with COS, run the
calibration images through it layer by layer (each layer calibrating on the currents its
calibrated predecessors produce, as in an online run), and replace each neuron's per-sample
calibration by its mean over those images,

.. math::
    v_i(0) = \\frac{1}{N} \\sum_{n=1}^{N} v_i^{(n)}(0),

a fixed per-neuron initial potential. The result runs without pre-simulation (no ρ frames),
exports to NIR, and is a different network from online COS: docs/export.md measures both per T.

With sequence input (``CalibrationData(input="sequence")``, event frames) each layer calibrates
on the first ρ frames of every calibration sequence — the input the SNN will see — so the
sequences need at least ρ frames (a clear error otherwise).
"""

from __future__ import annotations

from typing import Any

import torch

from ..neurons import IFNeuron
from .base import ActivationSite, ConversionMethod, Preparation
from .cos import COSMethod
from .registry import register_method

__all__ = ["FrozenCOSMethod"]


class _Recorder:
    """Wraps a neuron's calibration: calibrates as usual and sums the ``v(0)`` it returns."""

    def __init__(self, calibration: Any) -> None:
        self.calibration, self.total, self.count = calibration, None, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.calibration, name)

    def initial_potential(self, currents: torch.Tensor, threshold: float, v0: torch.Tensor,
                          **kwargs: Any) -> torch.Tensor:
        v = self.calibration.initial_potential(currents, threshold, v0, **kwargs)
        batch = v.to(torch.float64).sum(dim=0)
        self.total = batch if self.total is None else self.total + batch
        self.count += v.shape[0]
        return v


@register_method
class FrozenCOSMethod(ConversionMethod):
    """COS calibration averaged over data into a static per-neuron v(0) (module docstring)."""

    name = "cos-frozen"
    summary = ("frozen COS: COS's calibrated v(0) averaged over calibration images into one "
               "static v(0) per neuron (exportable to NIR; docs/export.md)")

    def __init__(self, rho: int = 4, iterations: int = 1, variant: str = "shift",
                 epsilon: float = 1e-3) -> None:
        self.online = COSMethod(rho, iterations, variant, epsilon)

    def neuron(self, site: ActivationSite) -> IFNeuron:
        return self.online.neuron(site)  # calibrating, until prepare() freezes it

    def params(self) -> dict[str, Any]:
        return self.online.params()

    def needs_calibration_data(self) -> bool:
        return True

    def prepare(self, snn: Any, preparation: Preparation) -> None:
        from ..simulate import simulate

        neurons = {name: n for name, n in snn.neurons().items() if n.calibration is not None}
        recorders = {name: _Recorder(n.calibration) for name, n in neurons.items()}
        for name, neuron in neurons.items():
            neuron.calibration = recorders[name]
        try:
            snn.to(preparation.device)
            data, rho = preparation.data, snn.frames_needed(1)
            for x in data.presentations(preparation.device,
                                        description="cos-frozen: calibrating"):
                if not data.sequence:
                    simulate(snn, x, 1, mode="layer")
                    continue
                if x.shape[0] < rho:
                    raise ValueError(
                        f"cos-frozen calibrates every layer on the first ρ = {rho} frames of "
                        f"each calibration sequence, but these have {x.shape[0]}; frame the "
                        f"calibration events into at least {rho} frames or lower rho (CLI --input "
                        f"events: a largest --T of at least {rho})")
                simulate(snn, x[:rho], mode="layer", input="sequence")
        finally:
            for neuron in neurons.values():
                neuron.calibration = None
        for name, neuron in neurons.items():
            recorder = recorders[name]
            if recorder.total is None:
                raise ValueError(f"cos-frozen: neuron {name} saw no calibration image")
            neuron.set_initial_state((recorder.total / recorder.count).to(torch.float32))
        snn.reset_state()
