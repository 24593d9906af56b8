r"""Counting spike events and synaptic operations while an SNN is simulated (docs/energy.md).

Each event an IF neuron emits (its output :math:`x \in \{0, +A, -A_-\}`; a nonzero value is
one event, whatever :math:`A` is, a signed spike is one event) costs its exact fan-out
(:mod:`.connectivity`). The counter is an observer: forward hooks on the IF neurons, attached from
outside the simulation engine (:func:`record_operations`, :func:`spikebridge.evaluate`).

A method that computes extra frames (COS's pre-simulation, docs/methods.md §4.5–4.6) reports
them through the method interface: each IF neuron's ``calibration.frames_read()`` (frames read)
and ``presimulation_steps()`` (frames replayed), the method's ``presimulation_steps()``. Each
pass re-delivers those frames' spikes, so it costs exactly the SOPs into that layer during those
frames again.

**Event input** (``simulate(..., input="sequence")``, ``begin(x, steps, input="sequence")``):
the input frames are spikes too, so the first layer is charged per input event, not as a
once-computed MAC layer: a frame value :math:`x_t(j) = k u` is :math:`k` events (``u`` =
``event_value``, what one event adds to a frame: 1 for raw counts, :math:`1/n` for
``ToFrames(normalization=n)``; ``k`` must be a non-negative integer), each costing the
fan-out of input element :math:`j` into the first synaptic layers
(:func:`~.connectivity.input_event_fanout`: output positions whose receptive field holds
:math:`j`, padding included, times the output channels),
:math:`\mathrm{SOP}_{in} = \sum_t\sum_j \frac{x_t(j)}{u}\,\mathrm{fanout}_{in}(j)`
(``snn_sops_input``, part of ``snn_sops``; ``input_events`` per image). These SOPs go into the
IF layer the first layer feeds like any other, so a COS layer's pre-simulation re-delivers
them too. The ``first_layer`` convention does not apply; prefix layers past the first
synaptic ones (analog values) cost MACs at every frame; the first layers' biases are one
accumulate per output per frame (``bias_acs``). Frames holding other values (not whole
multiples of ``u``, negative) are refused: they are not events.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import distributed
from .. import neurons as _neurons
from ..network import SpikingNetwork
from ..simulate import check_input_kind
from .connectivity import (
    InputFanout,
    SourceFanout,
    StaticCosts,
    event_sources,
    first_neuron_fed,
    input_event_fanout,
    static_costs,
)
from .model import EnergyModel

__all__ = ["OperationCounter", "OperationReport", "ops_from_mapping", "record_operations"]

#: Rows per exact float32 batch sum: k·A summed over at most this many rows rounds back to k.
_EXACT_ROWS = 1024
#: Relative distance from a whole number of events that a frame value x/u may have (the float32
#: rounding of a normalized count frame is ~1e-7).
_EVENT_TOLERANCE = 1e-4


def _memory_order(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``x`` ``[k, b, *dims]`` as a ``[k, b, N]`` view in memory order (no copy when possible),
    and the order of ``dims`` it follows (``(1, 2, 0)`` for channels-last ``C, H, W``)."""
    dims = list(range(x.dim() - 2))
    order = tuple(sorted(dims, key=lambda d: -x.stride(d + 2)))
    permuted = x.permute(0, 1, *(d + 2 for d in order))
    if permuted.is_contiguous():
        return permuted.reshape(x.shape[0], x.shape[1], -1), order
    return x.reshape(x.shape[0], x.shape[1], -1), tuple(dims)


def _event_counts(flat: torch.Tensor, source: SourceFanout
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Spike events per neuron summed over the batch, ``[k, N]``, and negative events ``[k]``.

    On CPU in float32/float64 a matrix-vector product with ones sums the batch (one fast BLAS
    pass over the spikes): the column sum is ``A·n`` up to rounding far below ``A/2``, so
    ``round(sum / A)`` is the exact count ``n``; signed neurons add a pass over ``|x|``
    (``n₊ = (Σ|x| + Σx)/2A``, ``n₋ = (Σ|x| − Σx)/2A₋``). Elsewhere (GPU, half precision):
    ``(x != 0).sum``.
    """
    k, b, _ = flat.shape
    if flat.device.type != "cpu" or flat.dtype not in (torch.float32, torch.float64):
        events = flat.ne(0).sum(dim=1)
        negative = None if source.negative_value is None else flat.lt(0).sum(dim=(1, 2))
        return events, negative

    def batch_sum(values: torch.Tensor) -> torch.Tensor:
        total = None
        for start in range(0, b, _EXACT_ROWS):
            part = values[:, start:start + _EXACT_ROWS]
            ones = part.new_ones(k, 1, part.shape[1])
            summed = torch.bmm(ones, part).squeeze(1)  # [k, N]
            total = summed if total is None else total + summed
        return total

    def nearest(values: torch.Tensor, scale: float) -> torch.Tensor:
        # ⌊v/A + ½⌋ (v >= 0) by an integer cast: torch.round/floor take a parallel path that
        # stalls for milliseconds on a loaded CPU, the cast does not
        return values.mul_(1.0 / scale).add_(0.5).to(torch.int32)

    plain = batch_sum(flat)
    if source.negative_value is None:
        return nearest(plain, source.value), None
    absolute = batch_sum(flat.abs())
    positive = nearest(absolute + plain, 2 * source.value)
    negative = nearest(absolute.sub_(plain), 2 * source.negative_value)
    return positive.add_(negative), negative.sum(dim=1)

@dataclass
class _Run:
    """Accumulators of one simulated run length (one per T for horizon-dependent methods)."""

    frames: int
    samples: int = 0
    ann_macs: float = 0.0
    prefix_macs: float = 0.0
    analog_macs_per_step: float = 0.0
    bias_per_step: float = 0.0
    neurons: dict[str, float] = field(default_factory=dict)
    ann_macs_into: dict[str, float] = field(default_factory=dict)
    ann_by_kind: dict[str, float] = field(default_factory=dict)
    events: dict[str, torch.Tensor] = field(default_factory=dict)  # [frames]
    negative: dict[str, torch.Tensor] = field(default_factory=dict)  # [frames]
    sops: dict[str, torch.Tensor] = field(default_factory=dict)  # [frames, targets]
    # event input only: events per frame, SOPs into each target per frame, and the MACs per
    # frame of prefix layers past the first synaptic ones
    input_events: torch.Tensor | None = None  # [frames]
    input_sops: dict[str, torch.Tensor] = field(default_factory=dict)  # target -> [frames]
    prefix_analog_macs: float = 0.0


class OperationCounter:
    """Counts spike events and synaptic operations while an SNN is simulated.

    ::

        counter = OperationCounter(snn)
        with counter:                          # hooks on every IF neuron
            for x, y in batches:
                counter.begin(x, steps)        # before each simulate() call
                simulate(snn, x, steps)
        report = counter.report([1, 2, 4])     # OperationReport

    :func:`spikebridge.evaluate` does this by default (``count_operations=True``). Fan-outs are
    computed once per input shape. Per step and per IF layer the hook adds one
    ``count_nonzero`` over the batch and a small matrix product; the spike tensors themselves are
    never copied.
    """

    def __init__(self, snn: SpikingNetwork, energy: EnergyModel | None = None, *,
                 event_value: float = 1.0) -> None:
        event_value = float(event_value)
        if not (math.isfinite(event_value) and event_value > 0):
            raise ValueError(f"event_value (what one input event adds to a frame) must be a "
                             f"finite number > 0, got {event_value}")
        self.snn = snn
        self.energy = energy or EnergyModel()
        self.event_value = event_value
        self._static: dict[tuple, StaticCosts] = {}
        self._input_static: dict[tuple, InputFanout] = {}
        self._input: str | None = None  # "constant" or "sequence", fixed by the first run
        self._runs: dict[int, _Run] = {}
        self._current: tuple[StaticCosts, _Run] | None = None
        self._next_step: dict[str, int] = {}
        self._checked: set[str] = set()
        self._handles: list = []
        self._device: torch.device | None = None
        self.seconds = 0.0  # wall time spent in the hooks (counting proper)
        self.setup_seconds = 0.0  # fan-outs and MACs, once per input shape

    # hooks ---------------------------------------------------------------------------------
    def __enter__(self) -> OperationCounter:
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def attach(self) -> None:
        """Register a forward hook on every event source: each IF neuron and each spiking
        max-pool (idempotent)."""
        if self._handles:
            return
        for name in event_sources(self.snn):
            layer = self.snn.network.get_submodule(name)
            self._handles.append(layer.register_forward_hook(
                lambda _m, _args, out, name=name: self._observe(name, out)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._current = None

    def begin(self, x: torch.Tensor, steps: int, key: int | None = None, *,
              input: str = "constant") -> None:
        """Announce a ``simulate(snn, x, steps, input=input)`` call: its spikes go to run
        ``key`` (``steps``). With ``input="sequence"`` the input events of ``x`` ``[T, B, ...]``
        are counted here (module docstring); one counter counts one kind of input."""
        sequence = check_input_kind(input) == "sequence"
        if self._input is not None and input != self._input:
            raise ValueError(f"this counter counted {self._input} input; count {input} input "
                             "with another OperationCounter")
        self._input = input
        shape = tuple(x.shape[2:] if sequence else x.shape[1:])
        device = x.device
        if self._device is not None and device != self._device:
            self._static.clear()
            self._input_static.clear()
        self._device = device
        if shape not in self._static:
            start = time.perf_counter()
            self._static[shape] = static_costs(self.snn, shape, device)
            self.setup_seconds += time.perf_counter() - start
        static = self._static[shape]
        key = int(steps if key is None else key)
        frames = self.snn.frames_needed(int(steps))
        run = self._runs.get(key)
        if run is None:
            run = self._runs[key] = _Run(frames)
        b = int(x.shape[1] if sequence else x.shape[0])
        if sequence:
            self._count_input(x, shape, run, b)
        run.samples += b
        run.ann_macs += static.ann.total * b
        for kind, macs in static.ann.by_kind().items():
            run.ann_by_kind[kind] = run.ann_by_kind.get(kind, 0.0) + macs * b
        run.prefix_macs += static.prefix_macs * b
        run.analog_macs_per_step += static.analog_macs_per_step * b
        run.bias_per_step += static.bias_per_step * b
        for name, source in static.sources.items():
            if not source.relay:
                run.neurons[name] = run.neurons.get(name, 0.0) + source.neurons * b
        for target, macs in static.ann_macs_into.items():
            run.ann_macs_into[target] = run.ann_macs_into.get(target, 0.0) + macs * b
        self._current = (static, run)
        self._next_step = dict.fromkeys(static.sources, 0)

    def _count_input(self, x: torch.Tensor, shape: tuple, run: _Run, batch: int) -> None:
        """Input events of the frames ``x`` ``[T, B, ...]`` and their SOPs, per frame."""
        if shape not in self._input_static:
            start = time.perf_counter()
            self._input_static[shape] = input_event_fanout(self.snn, shape, x.device)
            self.setup_seconds += time.perf_counter() - start
        fanout = self._input_static[shape]
        start = time.perf_counter()
        frames = x.shape[0]
        dtype = fanout.matrix.dtype
        counts = torch.empty(frames, fanout.matrix.shape[0], dtype=dtype, device=x.device)
        for t in range(frames):  # one frame at a time: bounded temporaries
            # events per element: x / u, whole numbers (a NaN sample, nonfinite="propagate",
            # has none: its outputs are NaN anyway)
            frame = x[t].reshape(batch, -1)
            events = torch.where(torch.isfinite(frame), frame, 0) / self.event_value
            whole = events.round()
            if bool((whole < 0).any()) or bool(
                    ((events - whole).abs() > _EVENT_TOLERANCE * whole.clamp(min=1)).any()):
                raise ValueError(
                    f"the input frames hold values that are not whole numbers of events of "
                    f"value event_value = {self.event_value:g}; with input='sequence' the first "
                    "layer is charged per input event (docs/energy.md): give count frames "
                    "(spikebridge.events.ToFrames; event_value = 1/normalization for "
                    "normalized ones), or switch counting off (count_operations=False, CLI "
                    "--no-energy)")
            counts[t] = whole.sum(dim=0, dtype=dtype)  # [N], exact
        if run.input_events is None:
            run.input_events = torch.zeros(run.frames, device=x.device, dtype=dtype)
        if frames > run.frames:
            self._grow(run, frames)
        run.input_events[:frames] += counts.sum(dim=1)
        sops = counts @ fanout.matrix  # [T, targets]
        for j, target in enumerate(fanout.targets):
            if target not in run.input_sops:
                run.input_sops[target] = torch.zeros(run.frames, device=x.device, dtype=dtype)
            run.input_sops[target][:frames] += sops[:, j]
        run.prefix_analog_macs += fanout.analog_macs * batch
        run.bias_per_step += fanout.bias_elements * batch
        self.seconds += time.perf_counter() - start

    def _observe(self, name: str, out: torch.Tensor) -> None:
        if self._current is None:
            return
        start = time.perf_counter()
        self._count(name, out)
        self.seconds += time.perf_counter() - start

    def _count(self, name: str, out: torch.Tensor) -> None:
        static, run = self._current
        source = static.sources[name]
        context = _neurons._SEQUENCE[-1] if _neurons._SEQUENCE else None
        if context is not None and out.shape[0] == context.steps * context.batch_size:
            k, b, t0 = context.steps, context.batch_size, 0
        else:
            k, b, t0 = 1, out.shape[0], self._next_step[name]
        self._next_step[name] = t0 + k
        if name not in self._checked:
            self._check_values(name, out, source)
        flat, order = _memory_order(out.view(k, b, *out.shape[1:]))
        events, negative = _event_counts(flat, source)  # [k, N] (memory order), [k] or None
        dtype = source.matrix.dtype
        events = events.to(dtype)
        if name not in run.events:
            run.events[name] = torch.zeros(run.frames, device=out.device, dtype=dtype)
            run.sops[name] = torch.zeros(run.frames, len(source.targets), device=out.device,
                                         dtype=dtype)
            if source.negative_value is not None:
                run.negative[name] = torch.zeros(run.frames, device=out.device, dtype=dtype)
        if t0 + k > run.frames:  # more frames than announced: grow
            self._grow(run, t0 + k)
        run.events[name][t0:t0 + k] += events.sum(dim=1)
        if source.targets:
            run.sops[name][t0:t0 + k] += events @ source.ordered(order)
        if negative is not None:
            run.negative[name][t0:t0 + k] += negative.to(dtype)

    @staticmethod
    def _grow(run: _Run, frames: int) -> None:
        def pad(t: torch.Tensor) -> torch.Tensor:
            extra = t.new_zeros((frames - t.shape[0], *t.shape[1:]))
            return torch.cat([t, extra])

        for store in (run.events, run.negative, run.sops, run.input_sops):
            for key in store:
                store[key] = pad(store[key])
        if run.input_events is not None:
            run.input_events = pad(run.input_events)
        run.frames = frames

    def _check_values(self, name: str, out: torch.Tensor, source: SourceFanout) -> None:
        """Every nonzero output must be one spike (+A or -A₋): never count graded values as 1."""
        allowed = out.eq(0) | out.eq(source.value)
        if source.negative_value is not None:
            allowed |= out.eq(-source.negative_value)
        if not bool(allowed.all()):
            bad = out[~allowed].flatten()[:3].tolist()
            raise ValueError(
                f"IF layer {name!r} emitted values {bad} that are not single spikes "
                f"(0, {source.value:g}" + ("" if source.negative_value is None else
                                          f", -{source.negative_value:g}") +
                "); operation counting would miscount graded (multi-bit) outputs"
            )
        self._checked.add(name)

    def sum_over_processes(self) -> None:
        """Replace every count by its sum over the processes of a multi-process run (each
        counted its own share of the images), so :meth:`report` covers the whole set. Call it
        in every process after the last batch; it does nothing in a single process."""
        if distributed.world_size() == 1:
            return
        for key in sorted(self._runs):
            run = self._runs[key]
            groups = (run.neurons, run.ann_macs_into, run.ann_by_kind)
            scalars = [run.samples, run.ann_macs, run.prefix_macs, run.analog_macs_per_step,
                       run.bias_per_step, run.prefix_analog_macs
                       ] + [g[k] for g in groups for k in sorted(g)]
            summed = distributed.all_reduce_sum(torch.tensor(scalars, dtype=torch.float64))
            values = summed.tolist()
            (samples, run.ann_macs, run.prefix_macs, run.analog_macs_per_step,
             run.bias_per_step, run.prefix_analog_macs), rest = values[:6], iter(values[6:])
            run.samples = int(samples)
            for group in groups:
                for name in sorted(group):
                    group[name] = next(rest)
            for store in (run.events, run.negative, run.sops, run.input_sops):
                for name in sorted(store):
                    store[name] = distributed.all_reduce_sum(store[name])
            if run.input_events is not None:
                run.input_events = distributed.all_reduce_sum(run.input_events)

    # results -------------------------------------------------------------------------------
    def report(self, steps: Sequence[int] | int, per_horizon: bool | None = None
               ) -> OperationReport:
        """Operation counts and energy per image at each ``T`` in ``steps``.

        ``per_horizon``: whether each ``T`` had its own run (``begin(x, T)`` for every T); by
        default inferred (a run recorded for every requested T).
        """
        step_list = sorted({int(t) for t in ([steps] if isinstance(steps, int) else steps)})
        if not self._runs:
            raise ValueError("no simulation was recorded (call begin() before simulate())")
        if per_horizon is None:
            per_horizon = len(self._runs) > 1
        horizon_key = max(self._runs)
        per_t: dict[int, dict[str, Any]] = {}
        layers: dict[str, dict[str, dict[str, float]]] = {}
        for t in step_list:
            key = t if per_horizon else horizon_key
            if key not in self._runs:
                raise ValueError(f"no run was recorded for T={t}")
            if t > self._runs[key].frames and not per_horizon:
                raise ValueError(f"T={t} exceeds the {self._runs[key].frames} simulated frames")
            totals, per_layer = self._at(self._runs[key], t)
            per_t[t] = totals
            for name, values in per_layer.items():
                layers.setdefault(name, {})[str(t)] = values
        run = self._runs[horizon_key]
        static = next(iter(self._static.values()))
        per_step = self._per_step(run)
        ann_layers = {layer.name: {"kind": layer.kind, "macs": layer.macs,
                                   "into": self._target_of(layer.name)}
                      for layer in static.ann.layers} if len(self._static) == 1 else {}
        return OperationReport(
            per_T=per_t, layers=layers, per_step=per_step,
            conventions={**self.energy.conventions(), **self._presimulation_conventions(),
                         **self._input_conventions()},
            ann_layers=ann_layers,
            seconds={"counting": self.seconds, "setup": self.setup_seconds},
        )

    def _target_of(self, layer: str) -> str:
        gm = self.snn.network
        nodes = {n.name: n for n in gm.graph.nodes}
        return first_neuron_fed(gm, nodes[layer]) if layer in nodes else "output"

    def _presimulating_layers(self) -> dict[str, tuple[int, int]]:
        """IF layers that pre-simulate: name → (frames read ρ, passes over them)."""
        found = {}
        for name, neuron in self.snn.neurons().items():
            calibration = neuron.calibration
            if calibration is None:
                continue
            frames = int(calibration.frames_read())
            if frames <= 0:
                continue
            steps = getattr(calibration, "presimulation_steps", None)
            passes = int(steps()) // frames if callable(steps) else 1
            found[name] = (frames, passes)
        return found

    def _input_conventions(self) -> dict[str, Any]:
        if self._input != "sequence":
            return {}
        return {"first_layer": "per_event", "input": (
            "event frames, one per step: the first synaptic layer is charged per input event "
            "(an event count k at an input element is k events), each costing that element's "
            "exact fan-out, padding included (snn_sops_input, in snn_sops); analog prefix "
            "layers after it cost MACs at every frame")}

    def _presimulation_conventions(self) -> dict[str, Any]:
        calibrating = self._presimulating_layers()
        if not calibrating:
            return {}
        frames, passes = next(iter(calibrating.values()))
        return {"presimulation": (
            f"each calibrating layer replays its first {frames} input frames {passes} time(s) "
            "before its real run; every pass re-delivers those frames' spikes (their SOPs into "
            "that layer counted again); the pre-simulation's own output spikes go nowhere")}

    def _into(self, run: _Run) -> dict[str, torch.Tensor]:
        """SOPs into each target per frame, summed over sources: ``{target: [frames]}``."""
        static = next(iter(self._static.values()))
        into: dict[str, torch.Tensor] = {}
        for name, sops in run.sops.items():
            for j, target in enumerate(static.sources[name].targets):
                into[target] = into.get(target, 0) + sops[:, j]
        for target, sops in run.input_sops.items():  # input events (event input only)
            into[target] = into.get(target, 0) + sops
        return into

    @staticmethod
    def _delivered(into: Mapping[str, torch.Tensor], t: int,
                   calibrating: Mapping[str, tuple[int, int]]) -> tuple[float, float]:
        """(inference, pre-simulation) SOPs of per-frame SOPs ``into`` each target at ``T=t``."""
        inference = presim = 0.0
        for target, per_frame in into.items():
            inference += float(per_frame[:t].sum())
            if target in calibrating:
                frames, passes = calibrating[target]
                # frames beyond T still run when T < ρ: the layer reads ρ frames
                inference += float(per_frame[t:frames].sum())
                presim += passes * float(per_frame[:frames].sum())
        return inference, presim

    def _at(self, run: _Run, t: int) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
        n = max(run.samples, 1)
        into = {k: v.double().cpu() for k, v in self._into(run).items()}
        calibrating = self._presimulating_layers()
        inference, presim = self._delivered(into, t, calibrating)
        frames_presented = max(t, max((f for f, _ in calibrating.values()), default=0))
        pre_steps = int(self.snn.method.presimulation_steps())
        if self._input == "sequence":
            # the first synaptic layers are charged per input event (in the SOPs); analog
            # layers after them in the prefix run at every frame
            first_macs = run.prefix_analog_macs / n * (frames_presented + pre_steps)
        else:
            first_multiplier = (1 if self.energy.first_layer == "once"
                                else frames_presented + pre_steps)
            first_macs = run.prefix_macs / n * first_multiplier
        analog_macs = run.analog_macs_per_step / n * frames_presented
        bias = run.bias_per_step / n * frames_presented
        sops = (inference + presim) / n
        ann_macs = run.ann_macs / n
        snn_macs = first_macs + analog_macs
        e_ann = self.energy.mac_pj * ann_macs
        e_snn = self.energy.mac_pj * snn_macs + self.energy.ac_pj * (
            sops + (bias if self.energy.count_bias else 0.0))
        # spikes the neurons emitted (a spiking max-pool's relayed ones are not new spikes)
        spikes = sum(float(v[:t].sum()) for name, v in run.events.items()
                     if name in run.neurons) / n
        neurons = sum(run.neurons.values()) / n
        totals = {
            "snn_sops": sops,
            "snn_sops_inference": inference / n,
            "snn_sops_presimulation": presim / n,
            "snn_first_layer_macs": snn_macs,
            "ann_macs": ann_macs,
            "sops_per_mac": sops / ann_macs if ann_macs else None,
            "energy_pj": {"snn": e_snn, "ann": e_ann},
            "ratio": e_snn / e_ann if e_ann else None,
            "spikes": spikes,
            "firing_rate": spikes / (neurons * t) if neurons else 0.0,
            "bias_acs": bias,
        }
        if self._input == "sequence":
            # the input events of the frames the layers compute (max(T, ρ) for COS), and the
            # SOPs they cause, inference and pre-simulation replays together (in snn_sops)
            into_input = {k: v.double().cpu() for k, v in run.input_sops.items()}
            totals["snn_sops_input"] = sum(self._delivered(into_input, t, calibrating)) / n
            events_in = run.input_events if run.input_events is not None else torch.zeros(1)
            totals["input_events"] = float(events_in[:frames_presented].sum()) / n
        per_layer: dict[str, dict[str, float]] = {}
        for name, events in run.events.items():
            count = float(events[:t].sum()) / n
            sops_out = float(run.sops[name][:t].sum()) / n
            if name not in run.neurons:  # a spiking max-pool: the spikes it passed on
                per_layer[name] = {"relayed_spikes": count, "sops_out": sops_out}
                continue
            size = run.neurons[name] / n
            entry = {"spikes": count, "firing_rate": count / (size * t) if size else 0.0,
                     "sops_out": sops_out}
            if name in run.negative:
                entry["negative_spikes"] = float(run.negative[name][:t].sum()) / n
            per_layer[name] = entry
        for target, per_frame in into.items():
            entry = per_layer.setdefault(target, {})
            # the frames this layer really computes, as the totals count them: a calibrating
            # layer at T < ρ runs ρ frames; its pre-simulation replays are their own part
            real = max(t, calibrating[target][0]) if target in calibrating else t
            entry["sops_in"] = float(per_frame[:real].sum()) / n
            if target in calibrating:
                frames, passes = calibrating[target]
                entry["sops_in_presimulation"] = passes * float(per_frame[:frames].sum()) / n
        for target, macs in run.ann_macs_into.items():
            per_layer.setdefault(target, {})["ann_macs_in"] = macs / n
        return totals, per_layer

    def _per_step(self, run: _Run) -> list[float]:
        n = max(run.samples, 1)
        total = None
        for per_frame in [sops.sum(dim=1) for sops in run.sops.values()] + list(
                run.input_sops.values()):
            total = per_frame if total is None else total + per_frame
        if total is None:
            return [0.0] * run.frames
        return [v / n for v in total.double().cpu().tolist()]


@dataclass
class OperationReport:
    """Operation counts and energy per image of one evaluation (:class:`OperationCounter`).

    ``per_T[T]``: ``snn_sops`` (inference + COS pre-simulation), ``snn_sops_inference``,
    ``snn_sops_presimulation``, ``snn_first_layer_macs`` (analog MACs under the first-layer
    convention), ``ann_macs``, ``sops_per_mac``, ``energy_pj`` (``snn``, ``ann``), ``ratio``
    (:math:`E_{SNN}/E_{ANN}`), ``spikes``, ``firing_rate``, ``bias_acs``.
    ``layers[name][T]``: ``spikes``, ``firing_rate``, ``sops_out`` (caused by this IF layer's
    spikes), ``sops_in`` (received by this layer; also for ``"output"``), ``ann_macs_in``.
    ``per_step``: SOPs at each simulated step of the longest run (pre-simulation excluded).
    """

    per_T: dict[int, dict[str, Any]]
    layers: dict[str, dict[str, dict[str, float]]]
    per_step: list[float]
    conventions: dict[str, Any]
    ann_layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def overhead(self, simulation_seconds: float) -> float | None:
        """Simulation time with counting over without: ``s / (s − counting − setup)``.

        ``simulation_seconds`` is the measured time including counting (``snn_seconds``).
        On CPU the hooks run synchronously, so this is the overhead measured in one run; on a
        GPU the hooks only enqueue kernels and the figure is a lower bound.
        """
        spent = self.seconds.get("counting", 0.0) + self.seconds.get("setup", 0.0)
        if simulation_seconds <= spent:
            return None
        return simulation_seconds / (simulation_seconds - spent)

    def to_dict(self) -> dict[str, Any]:
        return {"per_T": {str(t): v for t, v in self.per_T.items()}, "layers": self.layers,
                "per_step": self.per_step, "conventions": self.conventions,
                "ann_layers": self.ann_layers,
                "seconds": {k: round(v, 4) for k, v in self.seconds.items()}}

    def ops_record(self, steps: Sequence[int] | None = None) -> dict[str, dict[str, Any]]:
        """``{"T": per-T totals}`` for the requested ``steps`` (all by default)."""
        keys = self.per_T if steps is None else [int(t) for t in steps]
        return {str(t): self.per_T[t] for t in keys}


@contextmanager
def record_operations(
    counter: OperationCounter | None, x: torch.Tensor, steps: int, *, input: str = "constant"
) -> Iterator[None]:
    """Count the spikes of one ``simulate(snn, x, steps, input=input)`` call made inside this
    context (``input="sequence"``: and the input events of ``x``, module docstring).

    Hooks are attached for the call only (removed even if it fails); ``counter=None`` does
    nothing (counting switched off).
    """
    if counter is None:
        yield
        return
    counter.attach()
    try:
        counter.begin(x, steps, input=input)
        yield
    finally:
        counter.detach()


def ops_from_mapping(record: Mapping[str, Any], t: int | str) -> dict[str, Any] | None:
    """The per-T operation totals of a result record, or ``None`` if it has none."""
    ops = record.get("ops")
    if not ops:
        return None
    return ops.get(str(t))


# --------------------------------------------------------------------------------------------
# Result records, tables and plots
