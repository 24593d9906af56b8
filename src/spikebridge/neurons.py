"""Integrate-and-fire neurons (docs/methods.md §2).

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

from .if_kernel import fused_if_scan_, fused_if_step_

__all__ = [
    "IFNeuron",
    "IFTrace",
    "InitialPotentialCalibration",
    "if_step_",
    "input_current",
    "integrate_and_fire",
    "memory_refusal",
    "reference_if_step_",
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
    reset: str = "subtract", *, amplitude: float | None = None, extra: float = 0.0,
    negative: tuple[float, float] | None = None, memory: torch.Tensor | None = None,
) -> None:
    r"""One IF update in place (docs/methods.md §2.1): ``v`` ← ``v(t)``, ``x_out`` ← ``A s(t)``.

    :math:`m(t) = v(t-1) + c(t) + e`, :math:`s(t) = H(m(t) - \theta)`, then the reset (§2.1
    subtract: ``v = m - θs``; §2.2 zero: ``v = m(1 - s)``) and the spike value ``x = A s`` with the
    amplitude ``A`` (``None``: ``A = θ``, the weighted-spike convention; ``1``: unit spikes).
    ``e`` is a constant extra current per step (ECC's residual-elimination current η·θ/T, §7.4).

    ``negative = (θ₋, A₋)`` makes the neuron signed (§6.2): it also emits a negative spike
    when :math:`m(t) \le -\theta_-`, sending :math:`-A_-` and resetting by :math:`+\theta_-`
    (subtract) or to 0 (zero).

    ``memory`` (the net spike count ``N(t-1)``, updated in place to ``N(t)``) makes it a signed
    neuron *with memory* (§2.7): a negative spike when :math:`m(t) < 0` and :math:`N(t-1) > 0`,
    sending :math:`-A` and resetting by :math:`+\theta`; soft reset only.

    Step mode and sequence mode both call this, which is what makes them bit-identical. The
    unsigned soft-reset update runs as one fused pass (:mod:`spikebridge.if_kernel`, bit-identical
    to :func:`reference_if_step_`, tested) where it applies; everything else runs the reference.
    """
    if negative is None and memory is None and reset == "subtract" and fused_if_step_(
        v, current, threshold, x_out, value_of(threshold, amplitude), extra
    ):
        return
    reference_if_step_(v, current, threshold, x_out, reset, amplitude=amplitude, extra=extra,
                       negative=negative, memory=memory)


def reference_if_step_(
    v: torch.Tensor, current: torch.Tensor, threshold: float, x_out: torch.Tensor,
    reset: str = "subtract", *, amplitude: float | None = None, extra: float = 0.0,
    negative: tuple[float, float] | None = None, memory: torch.Tensor | None = None,
) -> None:
    """The eager reference of :func:`if_step_` (same arguments, same equations, §2.1–2.2, §2.7,
    §6.2).

    The unsigned soft-reset path is four in-place ATen kernels; the spike is written straight
    into ``x_out`` in ``v``'s dtype (a bool mask plus a conversion would cost two more passes).
    """
    v.add_(current)  # m(t) = v(t-1) + c(t)
    if extra:
        v.add_(extra)  # + η θ / T (TRE)
    value = value_of(threshold, amplitude)
    if memory is not None:
        _memory_fire_(v, memory, threshold, value, x_out)
        return
    if negative is not None:
        _signed_fire_(v, threshold, value, negative, x_out, reset)
        return
    torch.ge(v, threshold, out=x_out)  # s(t) = H(m(t) - θ), fires at equality
    if reset == "subtract":
        v.sub_(x_out, alpha=threshold)  # v(t) = m(t) - θ s(t)  (θ·s is exact for s ∈ {0, 1})
    else:
        v.addcmul_(v, x_out, value=-1.0)  # v(t) = m(t)(1 - s(t)), V_reset = 0
    if value != 1.0:
        x_out.mul_(value)  # x(t) = A s(t)


def _signed_fire_(
    v: torch.Tensor, threshold: float, value: float, negative: tuple[float, float],
    x_out: torch.Tensor, reset: str,
) -> None:
    """Fire, reset and weight a signed neuron whose potential ``v`` already holds ``m(t)``."""
    neg_threshold, neg_value = negative
    up = torch.ge(v, threshold)  # +1 spike: m(t) >= θ
    down = torch.le(v, -neg_threshold)  # -1 spike: m(t) <= -θ₋
    if reset == "subtract":
        v.sub_(up.to(v.dtype), alpha=threshold).add_(down.to(v.dtype), alpha=neg_threshold)
    else:
        v.masked_fill_(up | down, 0.0)
    torch.mul(up.to(v.dtype), value, out=x_out)
    x_out.sub_(down.to(v.dtype), alpha=neg_value)


def _memory_fire_(
    v: torch.Tensor, count: torch.Tensor, threshold: float, value: float, x_out: torch.Tensor,
) -> None:
    r"""Fire, reset and weight a signed neuron with memory (§2.7) whose ``v`` holds ``m(t)``.

    :math:`s(t) = H(m(t) - \theta) - [m(t) < 0 \wedge N(t-1) > 0]`, :math:`v(t) = m(t) - \theta
    s(t)`, :math:`N(t) = N(t-1) + s(t)`, :math:`x(t) = A s(t)`: a negative spike takes back one
    earlier positive spike, so ``N`` never goes below 0.
    """
    up = torch.ge(v, threshold)
    down = torch.lt(v, 0.0).logical_and_(torch.gt(count, 0.0))
    torch.sub(up.to(v.dtype), down.to(v.dtype), out=x_out)  # s(t) ∈ {-1, 0, 1}
    v.sub_(x_out, alpha=threshold)
    count.add_(x_out)
    if value != 1.0:
        x_out.mul_(value)


def value_of(threshold: float, amplitude: float | None) -> float:
    """The value ``A`` one spike sends on: θ for weighted spikes (``amplitude=None``)."""
    return threshold if amplitude is None else amplitude


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
    amplitude: float | None = None,
    extra: float = 0.0,
    negative: tuple[float, float] | None = None,
    memory: torch.Tensor | None = None,
    addends: torch.Tensor | None = None,
    in_place: bool = False,
) -> IFTrace:
    r"""Run an IF neuron for ``steps`` steps (docs/methods.md §2.1 soft reset, §2.2 hard reset).

    .. math::
        m(t) = v(t-1) + c(t),\quad s(t) = H(m(t) - \theta),\quad
        v(t) = \begin{cases} m(t) - \theta s(t) & \text{reset="subtract"}\\
                             m(t)(1 - s(t)) & \text{reset="zero"}\end{cases},\quad
        x(t) = \theta s(t)

    with :math:`H(u) = 1` for :math:`u \ge 0` (fires at equality). ``currents`` is ``[T', B, ...]``
    with ``T' >= steps`` (the first ``steps`` frames are used), or ``[B, ...]`` with
    ``constant=True`` (the same current every step). ``v0`` is the initial potential ``v(0)``.
    ``track_count`` records ``N`` (net count ``Σ s`` for signed neurons); ``track_extrema``
    records ``N`` and COS's ``m↓``/``m↑`` (unsigned neurons only). ``amplitude``, ``extra``,
    ``negative`` and ``memory`` are those of :func:`if_step_` (``memory``: the signed neuron with
    memory's net count ``N(0)``, evolved in place to ``N(T)``). ``addends`` (frames like
    ``currents``): a second current, e.g. a residual connection's other branch; the input is then
    ``currents + addends``, summed first (in the fused scan without writing the sum).
    ``in_place``: evolve ``v0`` itself (it becomes ``v(T)``) instead of a copy — for a caller
    whose ``v0`` is a temporary (one pass over the layer's state less).
    """
    if track_count and negative is not None and negative[1] != value_of(threshold, amplitude):
        raise ValueError("spike counts of a signed neuron need equal positive/negative amplitudes")
    if track_extrema and (negative is not None or memory is not None or extra):
        raise ValueError("extrema tracking (COS) is defined for unsigned neurons without TRE")
    if memory is not None and (negative is not None or reset != "subtract"):
        raise ValueError("a signed neuron with memory (§2.7) resets by subtraction and has no "
                         "separate negative threshold")
    if steps < 1:
        raise ValueError(f"the number of time-steps must be >= 1, got {steps}")
    if reset not in RESET_MODES:
        raise ValueError(f"reset must be one of {RESET_MODES}, got {reset!r}")
    if not constant and currents.shape[0] < steps:
        raise ValueError(f"{steps} steps requested but only {currents.shape[0]} input frames given")
    value = value_of(threshold, amplitude)
    v = v0 if in_place else v0.clone()
    output = None
    if record_output:
        output = v.new_empty((steps, *v.shape))
        if v.dim() == 4 and v.is_contiguous(memory_format=torch.channels_last):
            output = torch.empty((steps * v.shape[0], *v.shape[1:]), dtype=v.dtype,
                                 device=v.device, memory_format=torch.channels_last
                                 ).view(steps, *v.shape)
        # a residual connection's two branches: summed in the fused scan, never in memory
        # (same bits). Without an addend the per-step update below is as fast (measured).
        if (addends is not None and negative is None and memory is None and reset == "subtract"
                and not (track_count or track_extrema)
                and fused_if_scan_(v, currents, threshold, output, steps, value, extra,
                                   constant=constant, addends=addends)):
            return IFTrace(output=output, v=v)
    if addends is not None:
        currents = currents + addends
    # v's layout (channels_last included), so that the fused update applies
    scratch = torch.empty_like(v) if output is None else None
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
            if reset == "subtract":
                v.sub_(x_t, alpha=threshold)
            else:
                v.addcmul_(v, x_t, value=-1.0)
            if value != 1.0:
                x_t.mul_(value)
        else:
            if_step_(v, current, threshold, x_t, reset, amplitude=amplitude, extra=extra,
                     negative=negative, memory=memory)
        if count is not None:
            count.add_(x_t)  # A s(t); divided by A below
    if count is not None:
        count = torch.round(count / value)
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


def memory_refusal(neuron: IFNeuron) -> str | None:
    """Why ``neuron`` cannot become a signed neuron with memory (§2.7), or ``None``.

    The memory neuron's guarantee (its count is ``max(0, ⌊(v(0) + Σ c)/θ⌋)``, §2.7) rests on
    reset by subtraction and on an initial potential that is fixed before the run.
    """
    if neuron.reset != "subtract":
        return (f"resets to zero (reset={neuron.reset!r}); the memory neuron's count equation "
                "needs reset by subtraction")
    if neuron.negative is not None:
        return "already emits negative spikes at its own threshold -θ₋ (symmetric ReLU, §6.2)"
    if neuron.calibration is not None:
        return ("calibrates its initial potential per sample from unsigned pre-simulation "
                "(COS, §4); use cos-frozen (a static v(0)) or qcfs")
    return None


@dataclass
class _SequenceContext:
    steps: int
    batch_size: int


_SEQUENCE: list[_SequenceContext] = []


def input_current(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The input current of an :class:`IFNeuron` call from its positional arguments (what a
    forward pre-hook receives): ``current``, or ``current + addend`` for a fused residual
    connection (:func:`spikebridge.network.fuse_residual_currents`)."""
    return inputs[0] if len(inputs) == 1 or inputs[1] is None else inputs[0] + inputs[1]


@contextmanager
def sequence_mode(steps: int, batch_size: int) -> Iterator[None]:
    """Within this context every :class:`IFNeuron` runs in sequence mode over ``steps`` steps."""
    _SEQUENCE.append(_SequenceContext(int(steps), int(batch_size)))
    try:
        yield
    finally:
        _SEQUENCE.pop()


class IFNeuron(nn.Module):
    r"""Integrate-and-fire neuron replacing one ANN activation (docs/methods.md §2.1–2.3).

    .. math::
        m(t) = v(t-1) + c(t),\qquad s(t) = H(m(t) - \theta),\qquad
        v(t) = m(t) - \theta s(t),\qquad x(t) = \theta s(t),\qquad v(0) = \varphi\,\theta

    ``threshold`` is θ (the ANN activation's trained threshold), ``initial_fraction`` is φ
    (½ for QCFS, §3.3), ``reset`` is ``"subtract"`` (soft, the default) or ``"zero"`` (hard, for
    baselines, §2.2). ``calibration`` optionally replaces ``v(0)`` per sample (COS, §4); it
    needs sequence mode because it reads the first ρ input frames before the real run.
    ``memory=True`` makes it a signed neuron with memory (§2.7): it also emits a negative spike,
    taking back an earlier positive one, when :math:`m(t) < 0` while its net count is positive,
    so that its count follows the running sum of its input whatever the input's order.

    After a run, ``v`` holds the final membrane potential (and ``net_count`` the memory
    neuron's net spike count).
    """

    def __init__(
        self,
        threshold: float,
        initial_fraction: float = 0.5,
        reset: str = "subtract",
        calibration: InitialPotentialCalibration | None = None,
        *,
        amplitude: float | None = None,
        residual: float = 0.0,
        negative_threshold: float | None = None,
        negative_amplitude: float | None = None,
        memory: bool = False,
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
        if amplitude is not None and not (float(amplitude) > 0.0 and math.isfinite(amplitude)):
            raise ValueError(f"spike amplitude must be a finite number > 0, got {amplitude}")
        if not 0.0 <= float(residual) < 1.0:
            raise ValueError(f"the residual-current fraction η must lie in [0, 1), got {residual}")
        if calibration is not None and (negative_threshold is not None or residual):
            raise ValueError("initial-potential calibration (COS) needs an unsigned neuron "
                             "without residual current")
        self.negative: tuple[float, float] | None = None
        if negative_threshold is not None:
            # rounded like θ, which lives in a float32 buffer: ±θ thresholds stay symmetric
            neg = float(torch.tensor(float(negative_threshold), dtype=torch.float32))
            if not (neg > 0.0 and math.isfinite(neg)):
                raise ValueError(f"the negative threshold must be a finite number > 0 (it fires "
                                 f"at -θ₋), got {negative_threshold}")
            if negative_amplitude is None:
                negative_amplitude = neg if amplitude is None else amplitude
            if not (float(negative_amplitude) > 0.0 and math.isfinite(negative_amplitude)):
                raise ValueError(f"negative spike amplitude must be finite and > 0, got "
                                 f"{negative_amplitude}")
            self.negative = (neg, float(negative_amplitude))
        elif negative_amplitude is not None:
            raise ValueError("negative_amplitude needs negative_threshold")
        self.amplitude = None if amplitude is None else float(amplitude)
        self.residual = float(residual)
        self.memory = False
        self.net_count: torch.Tensor | None = None
        if memory:
            self.enable_memory()
        self.horizon: int | None = None
        self.v: torch.Tensor | None = None
        # a per-neuron v(0) [C, H, W] (no batch), replacing φθ when set (set_initial_state)
        self.register_buffer("initial_state", None)

    def set_initial_state(self, state: torch.Tensor | None) -> None:
        """Give every neuron of the layer its own static ``v(0)`` (shape: the layer's, without
        the batch dimension), replacing ``φθ``; ``None`` restores ``φθ``. Used by frozen COS
        (:mod:`spikebridge.methods.cos_frozen`), where it is a per-neuron mean of calibrated
        initial potentials."""
        if state is not None and self.calibration is not None:
            raise ValueError("a neuron that calibrates v(0) per sample cannot also have a static "
                             "one")
        self.initial_state = None if state is None else state.detach().clone()

    def enable_memory(self) -> None:
        """Make this a signed neuron with memory (§2.7); refused where it is not defined."""
        problem = memory_refusal(self)
        if problem:
            raise ValueError(f"a signed neuron with memory (§2.7) cannot replace this one: it "
                             f"{problem}")
        self.memory = True
        self.reset_state()

    def spike_value(self) -> float:
        """``A``: what one spike sends to the next layer (θ for weighted spikes)."""
        return float(self.threshold) if self.amplitude is None else self.amplitude

    def step_current(self) -> float:
        r"""The constant extra current per step, :math:`\eta\theta/T` (0 without TRE, §7.4)."""
        if not self.residual:
            return 0.0
        if self.horizon is None:
            raise RuntimeError(
                "this neuron adds a residual-elimination current ηθ/T that depends on the run "
                "length T; run it through spikebridge.simulate(), which sets it"
            )
        return self.residual * float(self.threshold) / self.horizon

    def _fire_kwargs(self) -> dict:
        return {"amplitude": self.amplitude, "extra": self.step_current(),
                "negative": self.negative}

    @property
    def signed(self) -> bool:
        """Whether the neuron also emits negative spikes."""
        return self.negative is not None or self.memory

    def negative_spike_value(self) -> float | None:
        """What one negative spike sends (``-`` this), or ``None`` for an unsigned neuron."""
        if self.negative is not None:
            return self.negative[1]
        return self.spike_value() if self.memory else None

    def reset_state(self) -> None:
        """Forget the membrane potential (done by the simulator before every batch)."""
        self.v = None
        self.net_count = None

    def forward(self, current: torch.Tensor, addend: torch.Tensor | None = None) -> torch.Tensor:
        """One step (``[B, ...]``) or, in :func:`sequence_mode`, all steps (``[T*B, ...]``).

        ``addend``: the input current is ``current + addend``. The simulator passes a residual
        connection's two branches this way (:func:`spikebridge.network.fuse_residual_currents`),
        so that the fused layer-wise scan sums them in registers instead of through memory.
        Forward pre-hooks then see both tensors; :func:`input_current` sums them.
        """
        if addend is not None and (addend.shape != current.shape or not _SEQUENCE):
            # step mode (no gain from fusing there, measured) or broadcasting: sum here, as the
            # unfused graph did
            current, addend = current + addend, None
        if _SEQUENCE:
            return self._forward_sequence(current, _SEQUENCE[-1], addend)
        return self._forward_step(current)

    def _initial_potential(self, like: torch.Tensor) -> torch.Tensor:
        if self.initial_state is not None:
            return torch.empty_like(like).copy_(self.initial_state.to(like.dtype).expand_as(like))
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
            self.net_count = torch.zeros_like(self.v) if self.memory else None
        x = torch.empty_like(current)
        if_step_(self.v, current, float(self.threshold), x, self.reset, memory=self.net_count,
                 **self._fire_kwargs())
        return x

    def _forward_sequence(self, current: torch.Tensor, ctx: _SequenceContext,
                          addend: torch.Tensor | None = None) -> torch.Tensor:
        steps, batch = ctx.steps, ctx.batch_size
        addends = None
        if current.shape[0] == steps * batch:
            constant = False
            currents = current.view(steps, batch, *current.shape[1:])
            like = currents[0]
            if addend is not None:
                addends = addend.view(steps, batch, *addend.shape[1:])
        elif current.shape[0] == batch:
            constant, currents, like, addends = True, current, current, addend
        else:
            raise RuntimeError(
                f"IF neuron got a batch of {current.shape[0]}, expected {batch} (constant input) "
                f"or {steps}×{batch} (time folded into the batch)"
            )
        theta = float(self.threshold)
        v0 = self._initial_potential(like)
        if self.calibration is not None:
            # the calibration reads the summed current of its first frames only (ρ for COS):
            # only those are summed here; the scan below sums the rest on the fly
            read = currents if addends is None else (
                currents + addends if constant
                else currents[: self.calibration.frames_read()] + addends[
                    : self.calibration.frames_read()])
            v0 = self.calibration.initial_potential(
                read, theta, v0, constant=constant, reset=self.reset
            )
            if v0.stride() != like.stride():  # keep the currents' layout (channels_last)
                v0 = torch.empty_like(like).copy_(v0)
        memory = torch.zeros_like(v0) if self.memory else None
        trace = integrate_and_fire(
            currents, theta, v0, steps, constant=constant, reset=self.reset, addends=addends,
            in_place=True, memory=memory, **self._fire_kwargs(),  # v0: this call's temporary
        )
        self.v, self.net_count = trace.v, memory
        return trace.output.view(steps * batch, *trace.output.shape[2:])

    def extra_repr(self) -> str:
        text = (
            f"threshold={float(self.threshold):.4g}, v0={self.initial_fraction:g}·θ, "
            f"reset={self.reset}"
        )
        if self.negative is not None:
            text += f", negative=(-{self.negative[0]:.4g}, -{self.negative[1]:.4g})"
        if self.memory:
            text += ", memory (signed)"
        if self.amplitude is not None:
            text += f", amplitude={self.amplitude:g}"
        if self.residual:
            text += f", residual={self.residual:g}·θ/T"
        if self.calibration is not None:
            text += f", calibration={self.calibration!r}"
        if self.initial_state is not None:
            text += ", v0 per neuron"
        return text
