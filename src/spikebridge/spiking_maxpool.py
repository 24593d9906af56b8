r"""Spiking max-pooling: each window passes the spikes of its most active input (Rueckauer et
al. 2017, "Conversion of continuous-valued deep networks to efficient event-driven networks for
image classification", §2.2.2, gating by online firing-rate estimates).

Max-pooling of rates cannot be computed from one time-step's spikes: the per-step maximum of
binary spikes is their OR, whose rate overestimates the largest rate (two neurons at rate ½ in
anti-phase give rate 1). :class:`SpikingMaxPool2d` gates instead. For every input neuron
:math:`i` it accumulates what that neuron sent so far (docs/methods.md §1: :math:`x_i(t) = A
s_i(t)`, so for an IF layer this is :math:`A` times the spike count),

.. math::
    S_i(t) = \sum_{\tau \le t} x_i(\tau),

and for every pooling window :math:`P` (same kernel, stride, padding, dilation and ceil_mode as
``nn.MaxPool2d``) it keeps a *winner* :math:`w_P(t)` and outputs that unit's input:

.. math::
    M_P(t) = \max_{i \in P} S_i(t),\qquad
    w_P(t) = \begin{cases} w_P(t-1) & \text{if } t > 1 \text{ and } S_{w_P(t-1)}(t) = M_P(t)\\
        \min\{k : S_{P_k}(t) = M_P(t)\} & \text{otherwise}\end{cases},\qquad
    y_P(t) = x_{w_P(t)}(t).

**Tie-breaking** (deterministic): the incumbent keeps the window on a tie (it is replaced only
when another unit's accumulated input is *strictly* larger); a new winner (also at
:math:`t = 1`) is the first maximum in the window's row-major order (kernel row, then column:
:math:`k = k_h \cdot k_W + k_w`). Positions in the padding have :math:`S = -\infty` and never win
(``nn.MaxPool2d``'s implicit ``-inf`` padding; every window holds at least one real input). The
counts include the current step, so a window whose inputs spike at :math:`t = 1` outputs a spike
at :math:`t = 1`.

**Why accumulated counts, not a running potential.** :math:`S_i(t)/t` is neuron :math:`i`'s
empirical rate, the quantity the ANN's max acts on (docs/methods.md §2.4: rates carry the ANN
activations). A membrane potential says nothing about the rate — a soft-reset IF neuron's
potential stays in :math:`[0, \theta)` whatever its rate (§2.1) — and a leaky running estimate
forgets, so its argmax follows recent bursts. The counts are local to the pool: they need the
incoming spikes only, not the previous layer's state.

**Error.** Writing :math:`N(t) = \sum_{\tau\le t} y(\tau)` for the output and :math:`M(t)`
for the largest accumulated input of the window:

* :math:`N(t) \ge M(t)` for any real inputs (by induction: :math:`M(t) = S_{w(t)}(t) \le
  M(t-1) + x_{w(t)}(t)`);
* the excess :math:`N(t) - M(t) = \sum_{\tau \le t} [M(\tau-1) - S_{w(\tau)}(\tau-1)]` comes only
  from steps where the winner *switches* to a unit that was behind: each such step adds
  :math:`< x_{new}(\tau) - x_{old}(\tau)`. This is the over-count of the gate;
* for spikes of one amplitude, :math:`x_i(t) \in \{0, A\}` (an IF layer's output, one θ per
  layer), it vanishes: a unit can only overtake the incumbent from a tie, so
  :math:`N(t) = M(t) = A \max_i n_i(t)` **exactly, at every** :math:`t` — the output spike count
  is the largest input spike count. With the "lowest index wins ties" rule instead, two
  anti-phase trains of rate ½ would give an output rate of 1; with "keep the incumbent" they
  give ½.

Hence the output rate is the maximum of the input rates — exactly so for binary spikes, up to
the switching over-count otherwise. The pool adds no rate error of its own for binary inputs:
:math:`|N(t)/t - \max_i a_i| \le \max_i |A n_i(t)/t - a_i|` (the max is 1-Lipschitz), so an
input layer whose rates are within :math:`A/t` of the ANN's activations (regular trains) gives a
pooled rate within :math:`A/t` of the ANN's max-pool. What it does change is *when* spikes
arrive: the output train interleaves the winners' spikes, so the next IF layer integrates the
right total with a different timing (for soft reset the rate identity §2.4 still holds).

**Where the converter uses it.** Only where the pool's input changes over time (it is computed
from IF neurons' outputs, e.g. ``maxpool(relu(conv(x)))`` inside the network; the input may
also be a current — a conv of spikes — the gate then acts on accumulated currents, with the
over-count bound above). A max-pool fed only by the constant analog input (before the first IF
layer, in the time-invariant prefix, docs/methods.md §2.6) stays an ordinary ``nn.MaxPool2d``:
with a constant input the ANN's max is exact. (This module gives the same there: a constant
input keeps its first maximum as the winner, so :math:`y(t) = \max_i x_i` at every step.)

**Execution.** Step mode: ``forward`` gets one step ``[B, C, H, W]`` and keeps :math:`S` and
:math:`w` between calls. Sequence mode (:func:`spikebridge.neurons.sequence_mode`): ``[T·B, C, H,
W]``, time folded into the batch, scanned over the ``T`` frames with the same per-step update,
continuing from (and leaving) the same state — so step, layer and hybrid execution give
bit-identical outputs (the outputs are copies of input values; only the comparisons decide).
A ``[B, ...]`` input in sequence mode is constant over time and gets the plain max-pool.
:meth:`reset_state` forgets the state; a converted network resets it with its neurons'
(:meth:`spikebridge.network.SpikingNetwork.reset_state` resets every stateful layer), i.e.
whenever the simulator resets the network before a batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import neurons

__all__ = ["SpikingMaxPool2d", "pooling_output_size"]


def _pair(value: int | tuple[int, ...] | list[int], name: str) -> tuple[int, int]:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return value, value
    values = tuple(value)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                   for v in values):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return values[0], values[1]


def pooling_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int,
                        ceil_mode: bool) -> int:
    """Output length of a max-pool along one axis, PyTorch's rule (``ceil_mode``: a last window
    may run past the end, but must start inside the input or its left padding)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    if out < 1:
        raise ValueError(f"the pooling window (kernel {kernel}, dilation {dilation}) does not fit "
                         f"in the padded input ({size} + 2·{padding})")
    return out


class SpikingMaxPool2d(nn.Module):
    r"""Max-pooling of spike trains gated by accumulated input (module docstring):
    :math:`S_i(t) = \sum_{\tau\le t} x_i(\tau)`, :math:`w_P(t)` = the unit of window :math:`P`
    with the largest :math:`S` (the incumbent keeps ties, else the first in row-major window
    order), :math:`y_P(t) = x_{w_P(t)}(t)`.

    Arguments are those of ``nn.MaxPool2d`` (``return_indices`` is not supported). State:
    ``accumulated`` (:math:`S`, ``[B, C, H, W]``) and ``winner`` (the flat ``H·W`` position of
    :math:`w_P`, ``[B, C, H_out, W_out]``), both ``None`` after :meth:`reset_state`.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None or stride == () or stride == [] else (
            _pair(stride, "stride"))
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.ceil_mode = bool(ceil_mode)
        if min(*self.kernel_size, *self.stride, *self.dilation) < 1:
            raise ValueError(f"kernel_size, stride and dilation must be >= 1, got "
                             f"{self.kernel_size}, {self.stride}, {self.dilation}")
        if any(p < 0 or p > k // 2 for p, k in zip(self.padding, self.kernel_size, strict=True)):
            raise ValueError(f"padding must lie in [0, kernel_size // 2] (as for nn.MaxPool2d), "
                             f"got padding={self.padding}, kernel_size={self.kernel_size}")
        self.accumulated: torch.Tensor | None = None
        self.winner: torch.Tensor | None = None

    @classmethod
    def from_module(cls, module: nn.MaxPool2d) -> SpikingMaxPool2d:
        """The spiking counterpart of an ``nn.MaxPool2d`` (same window)."""
        if module.return_indices:
            raise ValueError("a max-pool that returns its indices (return_indices=True) has no "
                             "spiking counterpart")
        return cls(module.kernel_size, module.stride, module.padding, module.dilation,
                   module.ceil_mode)

    def reset_state(self) -> None:
        """Forget the accumulated inputs and the winners (before every batch)."""
        self.accumulated = None
        self.winner = None

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(H_out, W_out)`` for an ``H × W`` input (``nn.MaxPool2d``'s)."""
        return tuple(pooling_output_size(n, k, s, p, d, self.ceil_mode) for n, k, s, p, d in zip(
            (height, width), self.kernel_size, self.stride, self.padding, self.dilation,
            strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step (``[B, C, H, W]``) or, in :func:`~spikebridge.neurons.sequence_mode`, all
        ``T`` steps (``[T·B, C, H, W]``; a ``[B, ...]`` input is constant: plain max-pool)."""
        if x.dim() != 4:
            raise ValueError(f"SpikingMaxPool2d needs a [B, C, H, W] input, got shape "
                             f"{list(x.shape)}")
        context = neurons._SEQUENCE[-1] if neurons._SEQUENCE else None
        if context is None:
            return self._step(x)
        steps, batch = context.steps, context.batch_size
        if x.shape[0] == steps * batch:
            frames = x.view(steps, batch, *x.shape[1:])
            out = torch.empty((steps * batch, x.shape[1], *self.output_size(*x.shape[2:])),
                              dtype=x.dtype, device=x.device, memory_format=_layout(x))
            out_frames = out.view(steps, batch, *out.shape[1:])
            for t in range(steps):  # the step-mode update, frame by frame: same bits
                out_frames[t].copy_(self._step(frames[t]))
            return out
        if x.shape[0] == batch:  # the same input at every step: the gate passes its maximum
            return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                                self.ceil_mode)
        raise RuntimeError(f"SpikingMaxPool2d got a batch of {x.shape[0]}, expected {batch} "
                           f"(constant input) or {steps}×{batch} (time folded into the batch)")

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        """One time-step: accumulate, choose each window's winner, pass its input.

        ``F.max_pool2d(S, return_indices=True)`` gives each window's maximum :math:`M_P(t)` and
        the first position holding it in the window's row-major scan (padding never wins), as
        a flat index into the ``H × W`` plane; the incumbent keeps a tie; the output gathers
        ``x`` at the winners.
        """
        if self.accumulated is None or self.accumulated.shape != x.shape:
            # float32 at least: a half-precision sum stops counting after a few hundred spikes
            dtype = torch.promote_types(x.dtype, torch.float32)
            self.accumulated = torch.zeros(x.shape, dtype=dtype, device=x.device)
            self.winner = None
        self.accumulated.add_(x)  # S_i(t) = S_i(t-1) + x_i(t)
        best, first = F.max_pool2d(self.accumulated, self.kernel_size, self.stride, self.padding,
                                   self.dilation, self.ceil_mode, return_indices=True)
        plane = self.accumulated.flatten(2)  # [B, C, H·W]
        if self.winner is None:
            winner = first
        else:  # the incumbent keeps a tie
            held = plane.gather(2, self.winner.flatten(2)).view_as(best)
            winner = torch.where(held == best, self.winner, first)
        self.winner = winner
        out = x.flatten(2).gather(2, winner.flatten(2)).view(best.shape).to(x.dtype)
        return out.contiguous(memory_format=_layout(x))

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}, gate=accumulated input")


def _layout(x: torch.Tensor) -> torch.memory_format:
    return (torch.channels_last if x.dim() == 4 and x.shape[1] > 1
            and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            else torch.contiguous_format)
