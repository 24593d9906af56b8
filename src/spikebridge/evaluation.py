"""The evaluation harness: accuracy of an SNN at every t <= T over a data set, with observers
attached from outside.

:func:`evaluate` runs :func:`spikebridge.simulate` batch by batch, reads the running output
sum at every step (docs/methods.md §2.6: one run gives every ``t <= T``), sums the counts over
processes, and — when asked — attaches an :class:`spikebridge.energy.OperationCounter` around
each simulation call. The engine below knows nothing of the counter: it only runs the network.
Batches are images presented at every step (``input="constant"``) or frame sequences
``[T, B, ...]`` (``input="sequence"``, event data), as for :func:`spikebridge.simulate`.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from .calibration import rate_input
from .devices import resolve_device
from .energy import OperationCounter, record_operations
from .input_checks import check_nonfinite_policy
from .limits import UsageError, check_steps
from .network import SpikingNetwork
from .simulate import check_input_kind, check_labels, correct_over_time, output_width, simulate

__all__ = ["Evaluation", "evaluate"]


@dataclass
class Evaluation:
    """Accuracies (fractions in [0, 1]) of one evaluation run."""

    snn_accuracy: dict[int, float]
    n_samples: int
    ann_accuracy: float | None = None
    snn_seconds: float = 0.0
    ann_seconds: float = 0.0
    params: dict = field(default_factory=dict)
    # operation counts and energy per T (spikebridge.energy.OperationReport); None if not counted
    operations: Any = None

    def at(self, steps: int | Sequence[int]) -> float | dict[int, float]:
        """SNN accuracy at ``steps``: one T gives a float, a sequence of T a ``{T: accuracy}``.

        Raises :class:`~spikebridge.limits.UsageError` for a T that was not simulated."""
        wanted = [steps] if isinstance(steps, numbers.Integral) else list(steps)
        missing = [t for t in wanted if t not in self.snn_accuracy]
        if missing:
            have = sorted(self.snn_accuracy)
            shown = (f"T = 1…{have[-1]}" if have == list(range(1, len(have) + 1))
                     else "T in " + ", ".join(map(str, have)))
            raise UsageError(f"no accuracy at T = {', '.join(map(str, missing))}: this evaluation "
                             f"simulated {shown}; evaluate again with those steps")
        if isinstance(steps, numbers.Integral):
            return self.snn_accuracy[steps]
        return {t: self.snn_accuracy[t] for t in wanted}


def evaluate(
    snn: SpikingNetwork,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    steps: int | Sequence[int],
    *,
    ann: nn.Module | None = None,
    mode: str = "auto",
    device: torch.device | str | None = None,
    progress: bool = False,
    description: str = "simulating",
    count_operations: bool = True,
    energy: Any = None,
    nonfinite: str = "error",
    input: str = "constant",
    event_value: float = 1.0,
) -> Evaluation:
    """Accuracy of ``snn`` at every ``t <= max(steps)`` from one run, and of ``ann`` if given.

    ``batches`` yields ``(x, y)`` pairs (e.g. a :class:`spikebridge.data.BatchLoader`).
    ``count_operations`` (default on) also counts spike events, synaptic operations and energy
    per T (``Evaluation.operations``, :mod:`spikebridge.energy`, docs/energy.md) under the
    ``energy`` model (a :class:`spikebridge.energy.EnergyModel`; default 45 nm).
    ``nonfinite``: ``"error"`` (default) refuses batches holding NaN/±inf; ``"propagate"``
    counts such samples as wrong for the SNN and the ANN alike (see :func:`simulate`).

    ``input="sequence"``: ``batches`` yields ``(frames [T, B, ...], labels [B])`` (e.g. an
    :class:`spikebridge.events.EventBatchLoader` with :class:`~spikebridge.events.ToFrames`)
    with ``T = max(steps)`` frames — anything else is refused. The accuracy at ``t`` is that of
    the first ``t`` frames, from the same one run; a horizon-dependent method (ECC's TRE) runs
    each requested ``T`` on the first ``T`` frames. The ANN (if given) sees the rate input,
    :math:`\\bar x = \\frac{1}{T}\\sum_t x_t` (:func:`spikebridge.calibration.rate_input`),
    the image whose ANN response the SNN's firing rates approximate. Operations are counted
    with the first layer charged per input event (:mod:`spikebridge.energy.counter`), a frame
    value ``x`` being ``x / event_value`` events (1 for raw count frames, ``1/n`` for
    ``ToFrames(normalization=n)``).

    In a multi-process run (:mod:`spikebridge.distributed`) ``batches`` is this process's share
    (:func:`spikebridge.data.pipeline.evaluation_loader`): the counts — correct per T, samples,
    operations — are summed over all processes, so every process returns the result for the
    whole set, exactly the one-process accuracies.
    """
    check_nonfinite_policy(nonfinite)
    sequence = check_input_kind(input) == "sequence"
    if isinstance(steps, numbers.Real) or steps is None:
        step_list = [steps]
    elif isinstance(steps, Iterable) and not isinstance(steps, str | bytes):
        step_list = list(steps)
    else:
        raise UsageError(f"steps must be a number of time-steps T or a list of them, got "
                         f"{steps!r}")
    if not step_list:
        raise UsageError("give at least one number of time-steps T")
    step_list = [check_steps(t) for t in step_list]
    horizon = max(step_list)
    device = resolve_device(device) if device is not None else next(
        (p.device for p in snn.parameters()), torch.device("cpu")
    )
    snn.to(device).eval()
    if ann is not None:
        ann.to(device).eval()
    # A neuron whose dynamics depend on T (ECC's TRE current ηθ/T) needs one run per T; any
    # other network gives every t <= max(T) from a single run.
    per_horizon = snn.horizon_dependent()
    counter = (OperationCounter(snn, energy, event_value=event_value) if count_operations
               else None)
    correct = torch.zeros(horizon, dtype=torch.long)
    ann_correct = n = 0
    snn_seconds = ann_seconds = 0.0
    total = len(batches) if hasattr(batches, "__len__") else None
    classes = output_width(snn)
    for x, y in tqdm(batches, total=total, desc=description, disable=not progress, leave=False):
        if sequence:
            _check_frame_count(x, horizon)
        y = check_labels(y, x[0] if sequence else x, classes)
        x, y = x.to(device), y.to(device)
        start = time.perf_counter()
        if per_horizon:
            for t in sorted(set(step_list)):
                x_t = x[:t] if sequence else x
                with record_operations(counter, x_t, t, input=input):
                    outputs = simulate(snn, x_t, t, mode=mode, nonfinite=nonfinite, input=input)
                correct[t - 1] += correct_over_time(outputs, y)[-1].cpu()
        else:
            with record_operations(counter, x, horizon, input=input):
                outputs = simulate(snn, x, horizon, mode=mode, nonfinite=nonfinite, input=input)
            correct += correct_over_time(outputs, y).cpu()
        snn_seconds += time.perf_counter() - start
        if ann is not None:
            start = time.perf_counter()
            with torch.inference_mode():
                image = rate_input(x) if sequence else x
                ann_correct += int(correct_over_time(ann(image).unsqueeze(0), y)[0])
            ann_seconds += time.perf_counter() - start
        n += int(y.shape[0])
    # every process's counts, summed exactly (integers); the slowest process's times
    idle = int(n == 0)
    totals = distributed.all_reduce_sum(torch.cat([correct, torch.tensor([ann_correct, n, idle])]))
    correct, (ann_correct, n, idle) = totals[:horizon], totals[horizon:].tolist()
    snn_seconds, ann_seconds = distributed.all_reduce_max(
        torch.tensor([snn_seconds, ann_seconds], dtype=torch.float64)).tolist()
    if n == 0:
        raise ValueError("evaluate() got no samples")
    if counter is not None and idle:
        raise ValueError(f"{idle} process(es) had no images to evaluate; operation counting "
                         "needs images in every process (use fewer processes)")
    if counter is not None:
        counter.sum_over_processes()
    reported = sorted(set(step_list)) if per_horizon else range(1, horizon + 1)
    accuracy = {t: float(correct[t - 1]) / n for t in reported}
    operations = None if counter is None else counter.report(step_list, per_horizon=per_horizon)
    return Evaluation(
        snn_accuracy=accuracy,
        n_samples=n,
        ann_accuracy=None if ann is None else ann_correct / n,
        snn_seconds=snn_seconds,
        ann_seconds=ann_seconds,
        params={"method": snn.method.name, **snn.method.params(),
                **({"weight_bits": snn.weight_bits} if snn.weight_bits else {})},
        operations=operations,
    )


def _check_frame_count(x: object, horizon: int) -> None:
    """A batch of ``input="sequence"`` must hold ``max(steps)`` frames ``[T, B, ...]``."""
    if not isinstance(x, torch.Tensor) or x.dim() < 3:
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise UsageError(f"input='sequence': the loader must yield frames [T, B, ...] (time "
                         f"first), got {shape}")
    if x.shape[0] != horizon:
        raise UsageError(
            f"input='sequence': the loader yields {x.shape[0]} frames per sample but "
            f"T = max(steps) = {horizon}; the accuracy at every t <= T comes from one run over "
            f"T frames, so frame the events into {horizon} frames (e.g. "
            f"ToFrames(..., n_frames={horizon})) or make max(steps) = {x.shape[0]}"
        )
