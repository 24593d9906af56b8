"""Integrate-and-fire neurons (methods.md §2).

One neuron model, two execution styles:

* **step mode** — ``forward`` gets one time-step's input current ``[B, ...]`` and keeps the
  membrane potential between calls (reset with :meth:`IFNeuron.reset_state`);
* **sequence mode** — ``forward`` gets all ``T`` steps at once, time folded into the batch
  (``[T*B, ...]``), or a single ``[B, ...]`` current that is the same at every step (a layer fed
  directly by the analog input), and scans the neuron over ``T`` in one call.

The simulator (:mod:`spikebridge.simulate`) switches modes with :func:`sequence_mode`. Both
styles run exactly the same floating-point operations in the same order, so their outputs are
bit-identical (a test checks this).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

__all__ = [
    "IFNeuron",
    "IFTrace",
    "InitialPotentialCalibration",
    "if_step_",
    "integrate_and_fire",
    "sequence_mode",
]

RESET_MODES = ("subtract", "zero")


@dataclass
class IFTrace:
    """What :func:`integrate_and_fire` observed.

    ``output``: postsynaptic potentials ``x(t) = θ s(t)``, shape ``[T, B, ...]`` (``None`` when
    not recorded); ``v``: ``v(T)``; ``count``: ``N = Σ_t s(t)``; ``fired_min``: the lowest
    ``m(t)`` at a firing step (``+inf`` if it never fired); ``silent_max``: the highest ``m(t)``
    at a silent step (``-inf`` if it fired at every step). The extrema feed COS's Theorem 2.
    """

    output: torch.Tensor | None
    v: torch.Tensor
    count: torch.Tensor | None = None
    fired_min: torch.Tensor | None = None
    silent_max: torch.Tensor | None = None


def if_step_(
    v: torch.Tensor, current: torch.Tensor, threshold: float, x_out: torch.Tensor,
    reset: str = "subtract",
) -> None:
    r"""One IF update in place (methods.md §2.1): ``v`` ← ``v(t)``, ``x_out`` ← ``θ s(t)``.

    :math:`m(t) = v(t-1) + c(t)`, :math:`s(t) = H(m(t) - \theta)`, then the reset. Step mode and
    sequence mode both call this, which is what makes them bit-identical. Four in-place kernels
    per step; the spike is written straight into ``x_out`` in ``v``'s dtype (a bool mask plus a
    conversion would cost two more passes over memory).
    """
    v.add_(current)  # m(t) = v(t-1) + c(t)
    torch.ge(v, threshold, out=x_out)  # s(t) = H(m(t) - θ), fires at equality
    _reset_and_weight(v, threshold, x_out, reset)


def _reset_and_weight(v: torch.Tensor, threshold: float, s: torch.Tensor, reset: str) -> None:
    """Given ``s`` ∈ {0, 1}: apply the reset to ``v`` and turn ``s`` into ``x = θ s``."""
    if reset == "subtract":
        s.mul_(threshold)  # x(t) = θ s(t)
        v.sub_(s)  # v(t) = m(t) - θ s(t)
    else:
        v.addcmul_(v, s, value=-1.0)  # v(t) = m(t)(1 - s(t)), V_reset = 0
        s.mul_(threshold)


def integrate_and_fire(
    currents: torch.Tensor,
    threshold: float,
    v0: torch.Tensor,
    steps: int,
    *,
    constant: bool = False,
    reset: str = "subtract",
    record_output: bool = True,
    track_count: bool = False,
    track_extrema: bool = False,
) -> IFTrace:
    r"""Run an IF neuron for ``steps`` steps (methods.md §2.1 soft reset, §2.2 hard reset).

    .. math::
        m(t) = v(t-1) + c(t),\quad s(t) = H(m(t) - \theta),\quad
        v(t) = \begin{cases} m(t) - \theta s(t) & \text{reset="subtract"}\\
                             m(t)(1 - s(t)) & \text{reset="zero"}\end{cases},\quad
        x(t) = \theta s(t)

    with :math:`H(u) = 1` for :math:`u \ge 0` (fires at equality). ``currents`` is ``[T', B, ...]``
    with ``T' >= steps`` (the first ``steps`` frames are used), or ``[B, ...]`` with
    ``constant=True`` (the same current every step). ``v0`` is the initial potential ``v(0)``.
    ``track_count`` records ``N``; ``track_extrema`` records ``N`` and COS's ``m↓``/``m↑``.
    """
    if steps < 1:
        raise ValueError(f"the number of time-steps must be >= 1, got {steps}")
    if reset not in RESET_MODES:
        raise ValueError(f"reset must be one of {RESET_MODES}, got {reset!r}")
    if not constant and currents.shape[0] < steps:
        raise ValueError(f"{steps} steps requested but only {currents.shape[0]} input frames given")
    v = v0.clone()
    output = None
    if record_output:
        output = v.new_empty((steps, *v.shape))
        if v.dim() == 4 and v.is_contiguous(memory_format=torch.channels_last):
            output = v.new_empty((steps * v.shape[0], *v.shape[1:])).contiguous(
                memory_format=torch.channels_last
            ).view(steps, *v.shape)
    scratch = v.new_empty(v.shape) if output is None else None
    count = fired_min = silent_max = None
    if track_count or track_extrema:
        count = torch.zeros_like(v)
    if track_extrema:
        fired_min = torch.full_like(v, math.inf)
        silent_max = torch.full_like(v, -math.inf)
    for t in range(steps):
        x_t = output[t] if output is not None else scratch
        current = currents if constant else currents[t]
        if track_extrema:
            v.add_(current)
            torch.ge(v, threshold, out=x_t)
            fire = x_t.bool()
            torch.minimum(fired_min, torch.where(fire, v, math.inf), out=fired_min)
            torch.maximum(silent_max, torch.where(fire, -math.inf, v), out=silent_max)
            _reset_and_weight(v, threshold, x_t, reset)
        else:
            if_step_(v, current, threshold, x_t, reset)
        if count is not None:
            count.add_(x_t)  # θ s(t); divided by θ below
    if count is not None:
        count = torch.round(count / threshold)
    return IFTrace(output=output, v=v, count=count, fired_min=fired_min, silent_max=silent_max)


class InitialPotentialCalibration(Protocol):
    """A per-sample rule that chooses ``v(0)`` from the layer's input currents (e.g. COS, §4)."""

    def initial_potential(
        self,
        currents: torch.Tensor,
        threshold: float,
        v0: torch.Tensor,
        *,
        constant: bool,
        reset: str,
    ) -> torch.Tensor:
        """Return the calibrated initial potential, same shape as ``v0``."""
        ...

    def frames_read(self) -> int:
        """How many input frames the calibration reads before the real run (ρ; 0 if none)."""
        ...


@dataclass
class _SequenceContext:
    steps: int
    batch_size: int


_SEQUENCE: list[_SequenceContext] = []


@contextmanager
def sequence_mode(steps: int, batch_size: int) -> Iterator[None]:
    """Within this context every :class:`IFNeuron` runs in sequence mode over ``steps`` steps."""
    _SEQUENCE.append(_SequenceContext(int(steps), int(batch_size)))
    try:
        yield
    finally:
        _SEQUENCE.pop()


class IFNeuron(nn.Module):
    r"""Integrate-and-fire neuron replacing one ANN activation (methods.md §2.1–2.3).

    .. math::
        m(t) = v(t-1) + c(t),\qquad s(t) = H(m(t) - \theta),\qquad
        v(t) = m(t) - \theta s(t),\qquad x(t) = \theta s(t),\qquad v(0) = \varphi\,\theta

    ``threshold`` is θ (the ANN activation's trained threshold), ``initial_fraction`` is φ
    (½ for QCFS, §3.3), ``reset`` is ``"subtract"`` (soft, the default) or ``"zero"`` (hard, for
    baselines, §2.2). ``calibration`` optionally replaces ``v(0)`` per sample (COS, §4); it
    needs sequence mode because it reads the first ρ input frames before the real run.

    After a run, ``v`` holds the final membrane potential.
    """

    def __init__(
        self,
        threshold: float,
        initial_fraction: float = 0.5,
        reset: str = "subtract",
        calibration: InitialPotentialCalibration | None = None,
    ) -> None:
        super().__init__()
        threshold = float(threshold)
        if not (threshold > 0.0 and math.isfinite(threshold)):
            raise ValueError(f"an IF neuron needs a finite threshold > 0, got {threshold}")
        if reset not in RESET_MODES:
            raise ValueError(f"reset must be one of {RESET_MODES}, got {reset!r}")
        self.register_buffer("threshold", torch.tensor(threshold))
        self.initial_fraction = float(initial_fraction)
        self.reset = reset
        self.calibration = calibration
        self.v: torch.Tensor | None = None

    def reset_state(self) -> None:
        """Forget the membrane potential (done by the simulator before every batch)."""
        self.v = None

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        if _SEQUENCE:
            return self._forward_sequence(current, _SEQUENCE[-1])
        return self._forward_step(current)

    def _initial_potential(self, like: torch.Tensor) -> torch.Tensor:
        return torch.full_like(like, self.initial_fraction * float(self.threshold))

    def _forward_step(self, current: torch.Tensor) -> torch.Tensor:
        if self.v is None or self.v.shape != current.shape:
            if self.calibration is not None:
                raise RuntimeError(
                    "this neuron calibrates its initial potential from its first input frames "
                    "(COS): start it in sequence (layer-wise) mode; step mode can only continue "
                    "a calibrated run (simulate(..., mode='layer' or 'hybrid'))"
                )
            self.v = self._initial_potential(current)
        x = torch.empty_like(current)
        if_step_(self.v, current, float(self.threshold), x, self.reset)
        return x

    def _forward_sequence(self, current: torch.Tensor, ctx: _SequenceContext) -> torch.Tensor:
        steps, batch = ctx.steps, ctx.batch_size
        if current.shape[0] == steps * batch:
            constant = False
            currents = current.view(steps, batch, *current.shape[1:])
            like = currents[0]
        elif current.shape[0] == batch:
            constant, currents, like = True, current, current
        else:
            raise RuntimeError(
                f"IF neuron got a batch of {current.shape[0]}, expected {batch} (constant input) "
                f"or {steps}×{batch} (time folded into the batch)"
            )
        theta = float(self.threshold)
        v0 = self._initial_potential(like)
        if self.calibration is not None:
            v0 = self.calibration.initial_potential(
                currents, theta, v0, constant=constant, reset=self.reset
            )
        trace = integrate_and_fire(
            currents, theta, v0, steps, constant=constant, reset=self.reset
        )
        self.v = trace.v
        return trace.output.view(steps * batch, *trace.output.shape[2:])

    def extra_repr(self) -> str:
        text = (
            f"threshold={float(self.threshold):.4g}, v0={self.initial_fraction:g}·θ, "
            f"reset={self.reset}"
        )
        if self.calibration is not None:
            text += f", calibration={self.calibration!r}"
        return text
