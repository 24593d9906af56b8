"""Bounds on every size a user can pass, and the memory a run would take (docs/reliability.md,
"Sizes").

A number of time-steps T, COS's ρ and iteration count, a batch size: each is an integer in a
stated range, checked before any work, so that ``simulate(snn, x, 10**20)`` is a one-line refusal
instead of a run that never ends, and ``T = NaN`` or ``None`` is our error rather than a raw
``int()`` one. The ranges are far beyond what the methods are used with (the papers' largest T is
2048) yet small enough that one batch finishes in minutes on a CPU.

What grows with T is checked against the machine as well: :func:`check_memory` compares an
estimate with the memory this machine (or GPU) has and refuses above it, in one line, before the
first allocation.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from pathlib import Path

__all__ = [
    "MAX_BATCH",
    "MAX_ITERATIONS",
    "MAX_STEPS",
    "ResourceLimitError",
    "UsageError",
    "check_integer",
    "check_memory",
    "check_steps",
    "machine_memory",
    "simulation_bytes",
]

MAX_STEPS = 100_000
"""Largest T, ρ, and frames one layer may compute (ρ·iterations + max(T, ρ) for COS)."""

MAX_ITERATIONS = 64
"""Largest number of COS calibration iterations (each costs ρ pre-simulation frames)."""

MAX_BATCH = 1 << 20
"""Largest batch size (images per simulated batch)."""


class UsageError(ValueError):
    """A value passed to spikebridge is of the wrong kind or outside its documented range."""


class ResourceLimitError(UsageError):
    """A run would exceed a size bound or the memory this machine has; nothing was started."""


def check_integer(value: object, name: str, *, minimum: int, maximum: int) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``; integral floats (``4.0``) are taken.

    Raises:
        UsageError: ``value`` is ``None``, a bool, a string, NaN, ±inf or a non-integral number.
        ResourceLimitError: ``value`` is an integer above ``maximum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f"{name} must be an integer >= {minimum}, got {value!r} "
                         f"({type(value).__name__})")
    if isinstance(value, numbers.Integral):
        number = int(value)
    else:
        if not math.isfinite(float(value)) or float(value) != int(float(value)):
            raise UsageError(f"{name} must be an integer >= {minimum}, got {value!r}")
        number = int(float(value))
    if number < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {number}")
    if number > maximum:
        raise ResourceLimitError(
            f"{name} = {number:,} is above spikebridge's bound of {maximum:,}; a run that long "
            "would not finish (docs/reliability.md, \"Sizes\")"
        )
    return number


def check_steps(steps: object, name: str = "the number of time-steps T") -> int:
    """A number of time-steps T: an integer in ``[1, MAX_STEPS]``."""
    return check_integer(steps, name, minimum=1, maximum=MAX_STEPS)


def _cgroup_limit() -> int | None:
    """The memory limit of this process's cgroup (v2 or v1), if one is set."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):
            return int(text)
    return None


@functools.lru_cache(maxsize=8)
def _memory_of(kind: str, index: int | None) -> int | None:
    if kind == "cuda":
        import torch

        try:
            return int(torch.cuda.get_device_properties(index or 0).total_memory)
        except (RuntimeError, AssertionError):
            return None
    if kind not in ("cpu", "meta"):
        return None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    limit = _cgroup_limit()
    return min(total, limit) if limit else total


def machine_memory(device: object = "cpu") -> int | None:
    """Bytes of memory a run on ``device`` can use: a CUDA device's total memory, else the
    physical memory of this machine (lowered to the cgroup's limit where one is set);
    ``None`` when it cannot be told."""
    kind = getattr(device, "type", str(device).split(":")[0])
    # read once per device and process: simulate() checks it before every batch
    return _memory_of(kind, getattr(device, "index", None))


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:,.1f} GiB"


def check_memory(nbytes: int, what: str, device: object = "cpu", *, hint: str = "") -> None:
    """Refuse, with :class:`ResourceLimitError`, work estimated to need more than the memory of
    ``device`` (:func:`machine_memory`). ``what`` names the work (``"simulating T = 10⁵ ..."``)."""
    available = machine_memory(device)
    if available is None or nbytes <= available:
        return
    raise ResourceLimitError(
        f"{what} would need about {_gib(nbytes)} of memory, more than the {_gib(available)} "
        f"this machine has{'; ' + hint if hint else ''}"
    )


def simulation_bytes(frames: int, batch: int, classes: int, itemsize: int = 4) -> int:
    """The memory of one simulated batch that grows with T: the per-step outputs
    ``[frames, B, K]``, held three times over (stacked, concatenated across chunks, and their
    running sum for the accuracy at every t). Layer activations do not grow with T: layer-wise
    execution processes the batch in chunks of at most 512 frames (``simulate``)."""
    return 3 * int(frames) * int(batch) * int(classes) * int(itemsize)
