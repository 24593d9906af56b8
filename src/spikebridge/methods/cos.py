r"""COS: calibrating offset spikes (Hao et al., ICLR 2023; docs/methods.md §4).

Per sample and per neuron, each IF layer (in forward order, fed by the *calibrated* output of
the layer before) is pre-simulated for ρ steps from :math:`v(0) = \theta/2`. The residual
potential tells the sign of the offset (Theorem 1, §4.2); the initial potential is then shifted
by the distance of Theorem 2 (§4.4), which provably removes or adds exactly one spike in those
ρ frames; stage 2 replays the same frames from the shifted start for the T inference steps.

The shift rules are pure functions (:func:`offset_sign`, :func:`down_shift`, :func:`up_shift`)
so the theorems can be property-tested on their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..if_kernel import fused_presimulation
from ..limits import MAX_ITERATIONS, MAX_STEPS, ResourceLimitError, check_integer
from ..neurons import IFNeuron, integrate_and_fire
from .base import ActivationSite, ConversionMethod, require_threshold
from .registry import register_method

__all__ = [
    "COSMethod",
    "OffsetSpikeCalibration",
    "down_shift",
    "offset_sign",
    "up_shift",
]

VARIANTS = ("shift", "lightweight")


def offset_sign(
    v_final: torch.Tensor, count: torch.Tensor, steps: int, threshold: float
) -> torch.Tensor:
    r"""Sign of the offset spike from the residual potential (Theorem 1, docs/methods.md §4.2).

    * :math:`-1` (too many spikes) if :math:`N \ge 1` and :math:`v(T) < 0`;
    * :math:`+1` (too few spikes) if :math:`N < T` and :math:`v(T) \ge \theta`;
    * :math:`0` otherwise (no offset detectable).
    """
    too_many = (count >= 1) & (v_final < 0)
    too_few = (count < steps) & (v_final >= threshold)
    return too_few.to(torch.int8) - too_many.to(torch.int8)


def down_shift(fired_min: torch.Tensor, threshold: float, epsilon: float) -> torch.Tensor:
    r"""Distance to lower :math:`v(0)` by to remove exactly one spike (Theorem 2(i), §4.4).

    :math:`d_\downarrow = \max\{\theta,\ m^\downarrow - \theta + \varepsilon\}`,
    :math:`m^\downarrow` = lowest potential at a firing step, :math:`\varepsilon\in(0,\theta]`.
    """
    return torch.clamp(fired_min - threshold + epsilon, min=threshold)


def up_shift(silent_max: torch.Tensor, threshold: float, epsilon: float) -> torch.Tensor:
    r"""Distance to raise :math:`v(0)` by to add exactly one spike (Theorem 2(ii), §4.4).

    :math:`d_\uparrow = \max\{\theta,\ \theta - m^\uparrow + \varepsilon\}`,
    :math:`m^\uparrow` = highest potential at a silent step, :math:`\varepsilon\in(0,\theta)`.
    """
    return torch.clamp(threshold - silent_max + epsilon, min=threshold)


def _memory_order(t: torch.Tensor, keep: int = 0) -> torch.Tensor:
    """``t`` flattened in memory order after its first ``keep`` dims (a view for a dense
    tensor in any layout, e.g. channels_last)."""
    dims = sorted(range(keep, t.dim()), key=lambda i: -t.stride(i))
    return t.permute(*range(keep), *dims).reshape(*t.shape[:keep], -1)


def _logical_order(t: torch.Tensor, keep: int = 0) -> torch.Tensor:
    """``t`` flattened in index order after its first ``keep`` dims (may copy)."""
    return t.reshape(*t.shape[:keep], -1)


@dataclass(frozen=True)
class OffsetSpikeCalibration:
    r"""The per-neuron, per-sample initial-potential rule of COS (docs/methods.md §4.5–4.7).

    ``rho``: pre-simulation steps ρ; ``iterations``: how many ±1 corrections a neuron may get
    (§4.6; 0 disables calibration); ``variant``: ``"shift"`` (Theorems 1–2) or
    ``"lightweight"`` (§4.7: start stage 2 from :math:`v(\rho)`); ``epsilon``: ε as a fraction
    of θ (default :math:`10^{-3}`, the reference code's value).

    Iteration :math:`k` (§4.6) lowers the start of neurons whose first pre-simulation showed
    :math:`v(\rho) < -(k-1)\theta` and more than :math:`k-1` spikes, and raises neurons with
    :math:`v(\rho) \ge k\theta` (Theorem 3: :math:`\psi = \lfloor v(\rho)/\theta\rfloor`), each
    time re-running the ρ steps from the current start to get :math:`m^\downarrow, m^\uparrow`.

    Where docs/methods.md's pseudo-code shifts up on :math:`v(\rho) \ge \theta` alone, we also
    require a silent pre-simulation step (Theorem 1(ii)'s precondition "fewer than ρ spikes"):
    without one no spike can be added and the reference code's shift degenerates to ≈1000θ.
    """

    rho: int = 4
    iterations: int = 1
    variant: str = "shift"
    epsilon: float = 1e-3

    def __post_init__(self) -> None:
        # frozen dataclass: store the validated ints (a NaN or None never reaches the math)
        object.__setattr__(self, "rho", check_integer(
            self.rho, "COS's rho (pre-simulation steps)", minimum=1, maximum=MAX_STEPS))
        object.__setattr__(self, "iterations", check_integer(
            self.iterations, "COS iterations", minimum=0, maximum=MAX_ITERATIONS))
        if self.rho * (self.iterations + 1) > MAX_STEPS:
            raise ResourceLimitError(
                f"COS with rho = {self.rho:,} and {self.iterations} iteration(s) computes "
                f"{self.rho * (self.iterations + 1):,} frames per layer, above spikebridge's "
                f"bound of {MAX_STEPS:,}"
            )
        if self.variant not in VARIANTS:
            raise ValueError(f"COS variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.variant == "lightweight" and self.iterations > 1:
            raise ValueError(
                f"the lightweight COS variant makes one correction (it starts from v(ρ) of a "
                f"single pre-simulation), so iterations must be 0 or 1, got {self.iterations}"
            )
        if self.variant == "shift" and not 0.0 < self.epsilon < 1.0:
            raise ValueError(f"COS epsilon (fraction of θ) must lie in (0, 1), got {self.epsilon}")

    def frames_read(self) -> int:
        """Input frames stage 1 reads: ρ (every iteration replays the same ρ frames)."""
        return self.rho if self.iterations > 0 else 0

    def presimulation_steps(self) -> int:
        """Pre-simulation steps per layer for latency accounting: ρ·iterations (ρ if light)."""
        if self.iterations == 0:
            return 0
        return self.rho if self.variant == "lightweight" else self.rho * self.iterations

    def initial_potential(
        self,
        currents: torch.Tensor,
        threshold: float,
        v0: torch.Tensor,
        *,
        constant: bool,
        reset: str,
    ) -> torch.Tensor:
        """Calibrated ``v(0)`` for every neuron of the batch (docs/methods.md §4.5 stage 1).

        The full layer is pre-simulated once without extrema — ρ soft-reset steps, the spike
        count and Theorem 1's sign in one fused pass (:meth:`_first_presimulation`); Theorem 2's
        extrema are then computed only for the neurons Theorem 1
        flags, gathered into a compact tensor — usually a small fraction of the layer — so the
        calibration costs little more than ρ ordinary steps.
        """
        if self.iterations == 0:
            return v0
        v_first, count_first, sign_first = self._first_presimulation(
            currents, threshold, v0, constant=constant, reset=reset)
        if self.variant == "lightweight":
            return v_first
        calibrated = torch.empty_like(v0).copy_(v0)  # v0's (dense) layout
        # Neurons are addressed in memory order when currents and v0 share one dense layout
        # (channels_last included): flattening is then a view, not a copy of the layer.
        like = currents if constant else currents[0]
        flat = _memory_order if like.stride() == calibrated.stride() else _logical_order
        v_res, n_first = flat(v_first), flat(count_first)
        flagged = flat(sign_first).nonzero().squeeze(1)
        if flagged.numel() == 0:
            return v0
        frames = flat(currents)[flagged] if constant else (
            flat(currents[: self.rho], keep=1)[:, flagged]
        )
        start = self._shift(frames, threshold, flat(v0)[flagged], v_res[flagged],
                            n_first[flagged], constant=constant, reset=reset)
        target = flat(calibrated)
        target[flagged] = start
        if target.untyped_storage().data_ptr() == calibrated.untyped_storage().data_ptr():
            return calibrated  # target was a view: written in place
        return target.view(v0.shape)  # a copy in index order

    def _first_presimulation(
        self, currents: torch.Tensor, threshold: float, v0: torch.Tensor, *, constant: bool,
        reset: str,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""ρ steps from ``v0``: :math:`v(\rho)`, the count :math:`N` and Theorem 1's sign (§4.5).

        :math:`m = v + c(t)`, :math:`s = [m \ge \theta]`, :math:`v \leftarrow m - \theta s`
        (docs/methods.md §4.5 stage 1), then :func:`offset_sign`. Soft reset runs the fused
        one-pass kernel (:func:`spikebridge.if_kernel.fused_presimulation`, same bits) where it
        applies; otherwise the eager :func:`integrate_and_fire` and :func:`offset_sign`.
        """
        if reset == "subtract":
            fused = fused_presimulation(currents, threshold, v0, self.rho, constant=constant)
            if fused is not None:
                return fused
        first = integrate_and_fire(currents, threshold, v0, self.rho, constant=constant,
                                   reset=reset, record_output=False, track_count=True)
        return first.v, first.count, offset_sign(first.v, first.count, self.rho, threshold)

    def _shift(
        self, frames: torch.Tensor, threshold: float, start: torch.Tensor, v_res: torch.Tensor,
        n_first: torch.Tensor, *, constant: bool, reset: str,
    ) -> torch.Tensor:
        """Theorem 2 shifts, repeated for up to ``iterations`` rounds (§4.6), on flagged neurons."""
        eps = self.epsilon * threshold
        for k in range(1, self.iterations + 1):
            trace = integrate_and_fire(frames, threshold, start, self.rho, constant=constant,
                                       reset=reset, record_output=False, track_extrema=True)
            go_down = (v_res < -(k - 1) * threshold) & (n_first > k - 1) & (trace.count >= 1)
            go_up = (v_res >= k * threshold) & (trace.silent_max > -math.inf)
            if not bool((go_down | go_up).any()):
                break
            shift = torch.where(go_down, -down_shift(trace.fired_min, threshold, eps), 0.0)
            shift = torch.where(go_up, up_shift(trace.silent_max, threshold, eps), shift)
            start = start + shift
        return start

    def __repr__(self) -> str:
        return (
            f"COS(rho={self.rho}, iterations={self.iterations}, variant={self.variant!r}, "
            f"epsilon={self.epsilon:g}θ)"
        )


@register_method
class COSMethod(ConversionMethod):
    """QCFS conversion (§3.3) plus offset-spike calibration of every IF neuron (§4)."""

    name = "cos"
    summary = ("COS: QCFS plus per-neuron offset-spike calibration of v(0) from ρ pre-simulation "
               "steps (§4)")

    def __init__(
        self, rho: int = 4, iterations: int = 1, variant: str = "shift", epsilon: float = 1e-3
    ) -> None:
        self.calibration = OffsetSpikeCalibration(rho, iterations, variant, epsilon)

    def neuron(self, site: ActivationSite) -> IFNeuron:
        shift = 0.5 if site.shift is None else site.shift
        calibration = self.calibration if self.needs_sequence_mode() else None
        return IFNeuron(
            require_threshold(site, self.name), initial_fraction=shift, calibration=calibration
        )

    def params(self) -> dict[str, Any]:
        c = self.calibration
        return {"rho": c.rho, "iterations": c.iterations, "variant": c.variant,
                "epsilon": c.epsilon}

    def presimulation_steps(self) -> int:
        return self.calibration.presimulation_steps()

    def frames_per_layer(self, steps: int) -> int:
        """ρ·iterations pre-simulation frames plus max(T, ρ) real ones: at T < ρ every layer
        still computes ρ real frames, because the next layer's calibration reads ρ of them."""
        if not self.needs_sequence_mode():
            return steps
        return self.presimulation_steps() + max(steps, self.calibration.frames_read())

    def needs_sequence_mode(self) -> bool:
        return self.calibration.iterations > 0
