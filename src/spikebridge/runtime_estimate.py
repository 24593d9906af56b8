"""How long a simulation will take, estimated from a short probe before the real run.

The simulation cost of a converted network grows linearly in the number of samples and in the
frames it simulates (``max(T, ρ)`` for COS, one run per T for horizon-dependent methods), so
timing a few samples for a few steps predicts a long run well enough to warn before hours of
work start behind a progress bar that would sit at 0 % (``--T 100000``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from .network import SpikingNetwork
from .simulate import simulate

__all__ = ["LONG_RUN_SECONDS", "estimate_simulation_seconds", "format_duration"]

LONG_RUN_SECONDS = 600.0
"""Runs estimated to take longer than this are announced with a warning (CLI)."""

PROBE_SAMPLES = 32
PROBE_STEPS = 4
PROBE_REPEATS = 3  # the median counts: a machine busy now stays busy for the run


def _frames(snn: SpikingNetwork, steps: Sequence[int]) -> int:
    """Frames one sample costs: one run of max(T) (or one run per T if T-dependent)."""
    if snn.horizon_dependent():
        return sum(snn.frames_needed(t) for t in sorted(set(steps)))
    return snn.frames_needed(max(steps))


def estimate_simulation_seconds(
    snn: SpikingNetwork, x: torch.Tensor, steps: Sequence[int], n_samples: int, *,
    mode: str = "auto", nonfinite: str = "propagate",
) -> float:
    """Seconds to simulate ``n_samples`` inputs like ``x`` for ``steps``.

    Times ``simulate`` on the first :data:`PROBE_SAMPLES` samples of ``x`` for
    ``min(max(steps), PROBE_STEPS)`` steps (after one warm-up call; the median of
    :data:`PROBE_REPEATS` calls: the run will share the machine with whatever loads it now, so
    the fastest call would promise too little) and scales by samples × frames. The CLI sums
    the estimates of all the methods of one command before deciding to warn.
    """
    probe = x[:PROBE_SAMPLES]
    probe_steps = min(max(steps), PROBE_STEPS)
    simulate(snn, probe, probe_steps, mode=mode, nonfinite=nonfinite)  # warm-up
    timings = []
    for _ in range(PROBE_REPEATS):
        start = time.perf_counter()
        simulate(snn, probe, probe_steps, mode=mode, nonfinite=nonfinite)
        timings.append(time.perf_counter() - start)
    seconds = sorted(timings)[len(timings) // 2]
    per_sample_frame = seconds / (probe.shape[0] * snn.frames_needed(probe_steps))
    return per_sample_frame * n_samples * _frames(snn, steps)


def format_duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.4 h`` or ``2.1 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
