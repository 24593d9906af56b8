"""Dense tensor representations of an event sample: frames and count images.

Notation: a sample of ``N`` events ``(x_i, y_i, t_i, p_i)`` on a ``W×H`` sensor.

**Frames** ``F`` of shape ``[T, C, H, W]`` (float32, :func:`to_frames`) count events::

    F[k, c, y, x] = #{ i : bin(i) = k, chan(p_i) = c, y_i = y, x_i = x }

- ``chan``: ``polarity="split"`` gives ``C = 2`` with channel ``p`` (0 = OFF, 1 = ON);
  ``"sum"`` gives ``C = 1``, both polarities added.
- ``bin`` with ``slicing="time"``: equal-duration windows over ``[t0, t1)``,
  ``bin(i) = floor((t_i - t0) * T / (t1 - t0))``; events outside ``[t0, t1)`` are dropped.
  Defaults: ``t0`` = first (smallest) timestamp, ``t1`` = last + 1 µs, so every event counts.
- ``bin`` with ``slicing="count"``: equal event counts, in stream order,
  ``bin(i) = floor(i * T / N)``: each frame holds ``floor(N/T)`` or ``ceil(N/T)`` events
  (exactly ``N/T`` when ``T`` divides ``N``).

Hence ``F.sum()`` is the number of events in range (all ``N`` by default).

**Down-scaling** (``out_size=(W', H')``) bins coordinates by integer division,
``x' = floor(x * W' / W)``, ``y' = floor(y * H' / H)`` (e.g. 128 → 42: ``x * 42 // 128``), before
counting; it conserves the number of events.

**Count image** (:func:`to_counts`, the CNN input) ``[C, H, W]``: the counts of the events with
``t0 <= t < t0 + duration_us`` (``t0`` = first timestamp unless given; 1.3 s by default, the
window the ECC paper uses), optionally saturated at ``max_count``, divided by a normalization
constant.

**Frames of a window** (:class:`ToFrames` with ``duration_us``): time slicing over
``[t0, t0 + duration_us)`` with ``t0`` the sample's first timestamp — the window of
:func:`to_counts` — so the ``T`` frames of a sample sum to its count image (before saturation and
normalization). ``normalization`` divides the frames: with ``normalization = scale / T`` their
mean over ``T`` is the count image divided by ``scale``.

All accumulation is one ``torch.bincount`` over flat indices ``((k*C + c)*H + y)*W + x``: no
Python loop over events.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from .denoise import background_activity_filter
from .types import SensorSize

__all__ = [
    "ToCounts",
    "ToFrames",
    "downscale_events",
    "to_counts",
    "to_frames",
]

Polarity = Literal["split", "sum"]
Slicing = Literal["time", "count"]


def _size(sensor_size) -> SensorSize:
    w, h = int(sensor_size[0]), int(sensor_size[1])
    if w <= 0 or h <= 0:
        raise ValueError(f"sensor size must be positive, got {w}x{h}")
    return SensorSize(w, h)


def _check_in_sensor(events: np.ndarray, size: SensorSize) -> None:
    if events.size == 0:
        return
    x, y = events["x"], events["y"]
    if x.min() < 0 or y.min() < 0 or x.max() >= size.width or y.max() >= size.height:
        raise ValueError(
            f"events outside the {size.width}x{size.height} sensor: "
            f"x {int(x.min())}..{int(x.max())}, y {int(y.min())}..{int(y.max())}"
        )


def downscale_events(events: np.ndarray, sensor_size, out_size) -> tuple[np.ndarray, SensorSize]:
    """Bin coordinates to a smaller grid: ``x' = x * W' // W``, ``y' = y * H' // H``.

    Returns the new event array (same length, a copy) and the new sensor size.
    """
    src, dst = _size(sensor_size), _size(out_size)
    if dst.width > src.width or dst.height > src.height:
        raise ValueError(f"out_size {dst} is larger than the sensor {src}")
    _check_in_sensor(events, src)
    out = events.copy()
    out["x"] = (events["x"].astype(np.int64) * dst.width) // src.width
    out["y"] = (events["y"].astype(np.int64) * dst.height) // src.height
    return out, dst


def _channels(polarity: Polarity) -> int:
    if polarity == "split":
        return 2
    if polarity == "sum":
        return 1
    raise ValueError(f"polarity must be 'split' or 'sum', got {polarity!r}")


def _accumulate(
    frame_idx: np.ndarray, events: np.ndarray, n_frames: int, size: SensorSize, polarity: Polarity
) -> torch.Tensor:
    """Count events into ``[n_frames, C, H, W]``; ``frame_idx < 0`` marks dropped events."""
    c = _channels(polarity)
    w, h = size.width, size.height
    keep = frame_idx >= 0
    k = frame_idx[keep].astype(np.int64)
    x = events["x"][keep].astype(np.int64)
    y = events["y"][keep].astype(np.int64)
    ch = events["p"][keep].astype(np.int64) if c == 2 else 0
    flat = ((k * c + ch) * h + y) * w + x
    counts = torch.bincount(
        torch.from_numpy(np.ascontiguousarray(flat)), minlength=n_frames * c * h * w
    )
    return counts.to(torch.float32).reshape(n_frames, c, h, w)


def to_frames(
    events: np.ndarray,
    sensor_size,
    n_frames: int,
    *,
    slicing: Slicing = "time",
    polarity: Polarity = "split",
    t_start: int | None = None,
    t_end: int | None = None,
    out_size=None,
) -> torch.Tensor:
    """Events → ``n_frames`` count frames, a float32 tensor ``[T, C, H, W]`` (see module doc).

    Args:
        events: a :data:`~.types.EVENT_DTYPE` array (stream order = non-decreasing ``t``).
        sensor_size: ``(width, height)`` of the sensor.
        n_frames: ``T``.
        slicing: ``"time"`` (equal durations) or ``"count"`` (equal event counts).
        polarity: ``"split"`` (C = 2, OFF then ON) or ``"sum"`` (C = 1).
        t_start, t_end: the window ``[t_start, t_end)`` for ``"time"`` slicing (defaults: first
            timestamp, last + 1); with ``"count"`` slicing, events outside it are dropped first.
        out_size: ``(W', H')`` to down-scale to, or ``None``.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    size = _size(sensor_size)
    _check_in_sensor(events, size)
    if out_size is not None:
        events, size = downscale_events(events, size, out_size)
    if slicing not in ("time", "count"):
        raise ValueError(f"slicing must be 'time' or 'count', got {slicing!r}")
    n = events.shape[0]
    if n == 0:
        return torch.zeros(n_frames, _channels(polarity), size.height, size.width)
    t = events["t"].astype(np.int64)
    t0 = int(t.min()) if t_start is None else int(t_start)
    t1 = int(t.max()) + 1 if t_end is None else int(t_end)
    if t1 <= t0:
        raise ValueError(f"empty time window [{t0}, {t1})")
    inside = (t >= t0) & (t < t1)
    if slicing == "time":
        idx = np.full(n, -1, dtype=np.int64)
        idx[inside] = ((t[inside] - t0) * n_frames) // (t1 - t0)
    else:
        if t_start is not None or t_end is not None:
            events = events[inside]
            n = events.shape[0]
        idx = (np.arange(n, dtype=np.int64) * n_frames) // max(n, 1)
    return _accumulate(idx, events, n_frames, size, polarity)


def to_counts(
    events: np.ndarray,
    sensor_size,
    *,
    duration_us: int | None = 1_300_000,
    t_start: int | None = None,
    polarity: Polarity = "split",
    out_size=None,
    normalization: float = 1.0,
    max_count: float | None = None,
) -> torch.Tensor:
    """The CNN input: per-pixel event counts in ``[t0, t0 + duration_us)``, saturated at
    ``max_count``, / ``normalization``.

    Args:
        events, sensor_size, polarity, out_size: as for :func:`to_frames`.
        duration_us: window length in µs (1.3 s by default); ``None`` counts every event.
        t_start: ``t0``; default: the sample's first timestamp.
        normalization: the constant the counts are divided by (> 0).
        max_count: counts above it are set to it (before the division); ``None``: no limit.

    Returns:
        float32 tensor ``[C, H, W]``.
    """
    if not normalization > 0:
        raise ValueError(f"normalization must be > 0, got {normalization}")
    size = _size(sensor_size)
    _check_in_sensor(events, size)
    if out_size is not None:
        events, size = downscale_events(events, size, out_size)
    n = events.shape[0]
    idx = np.zeros(n, dtype=np.int64)
    if n and (duration_us is not None or t_start is not None):
        t = events["t"].astype(np.int64)
        t0 = int(t.min()) if t_start is None else int(t_start)
        inside = t >= t0
        if duration_us is not None:
            if duration_us <= 0:
                raise ValueError(f"duration_us must be > 0, got {duration_us}")
            inside &= t < t0 + int(duration_us)
        idx[~inside] = -1
    counts = _accumulate(idx, events, 1, size, polarity)[0]
    if max_count is not None:
        if not max_count > 0:
            raise ValueError(f"max_count must be > 0, got {max_count}")
        counts.clamp_(max=float(max_count))
    return counts / normalization if normalization != 1.0 else counts


class ToFrames:
    """A picklable transform ``events -> to_frames(...) / normalization``, optionally denoising
    first.

    Args:
        sensor_size, n_frames, slicing, polarity, out_size: as for :func:`to_frames`.
        filter_time_us: if given, apply :func:`~.denoise.background_activity_filter` with this
            time window first.
        duration_us: if given, the frames cover ``[t0, t0 + duration_us)`` with ``t0`` the
            sample's first timestamp (the window of :func:`to_counts`), later events are
            dropped; ``None``: from the first to the last event.
        normalization: the constant the frames are divided by (> 0).
    """

    def __init__(
        self,
        sensor_size,
        n_frames: int,
        *,
        slicing: Slicing = "time",
        polarity: Polarity = "split",
        out_size=None,
        filter_time_us: int | None = None,
        duration_us: int | None = None,
        normalization: float = 1.0,
    ) -> None:
        if duration_us is not None and duration_us <= 0:
            raise ValueError(f"duration_us must be > 0, got {duration_us}")
        if not normalization > 0:
            raise ValueError(f"normalization must be > 0, got {normalization}")
        self.sensor_size = _size(sensor_size)
        self.n_frames, self.slicing, self.polarity = n_frames, slicing, polarity
        self.out_size, self.filter_time_us = out_size, filter_time_us
        self.duration_us, self.normalization = duration_us, float(normalization)

    def __call__(self, events: np.ndarray) -> torch.Tensor:
        if self.filter_time_us is not None:
            events = background_activity_filter(events, self.sensor_size, self.filter_time_us)
        window = {}
        if self.duration_us is not None and events.size:
            t0 = int(events["t"].min())
            window = {"t_start": t0, "t_end": t0 + int(self.duration_us)}
        frames = to_frames(
            events,
            self.sensor_size,
            self.n_frames,
            slicing=self.slicing,
            polarity=self.polarity,
            out_size=self.out_size,
            **window,
        )
        return frames / self.normalization if self.normalization != 1.0 else frames


class ToCounts:
    """A picklable transform ``events -> to_counts(...)``, optionally denoising first."""

    def __init__(
        self,
        sensor_size,
        *,
        duration_us: int | None = 1_300_000,
        polarity: Polarity = "split",
        out_size=None,
        normalization: float = 1.0,
        filter_time_us: int | None = None,
        max_count: float | None = None,
    ) -> None:
        self.sensor_size = _size(sensor_size)
        self.duration_us, self.polarity = duration_us, polarity
        self.out_size, self.normalization = out_size, normalization
        self.filter_time_us, self.max_count = filter_time_us, max_count

    def __call__(self, events: np.ndarray) -> torch.Tensor:
        if self.filter_time_us is not None:
            events = background_activity_filter(events, self.sensor_size, self.filter_time_us)
        return to_counts(
            events,
            self.sensor_size,
            duration_us=self.duration_us,
            polarity=self.polarity,
            out_size=self.out_size,
            normalization=self.normalization,
            max_count=self.max_count,
        )
