"""The in-memory event representation shared by every reader, transform and writer.

One sample of an event camera is a 1-D numpy *structured* array with one record per event::

    field  dtype   meaning
    x      int16   column, 0 = left edge of the sensor, < sensor width
    y      int16   row, 0 = top edge of the sensor, < sensor height
    t      int64   timestamp in microseconds (µs)
    p      uint8   polarity: 1 = ON (log-intensity rose), 0 = OFF (it fell)

(:data:`EVENT_DTYPE`, packed, 13 bytes a record). Events are in stream order, which for every
supported format is non-decreasing ``t``; nothing here sorts them. ``int16`` holds every
coordinate the supported formats can encode (AEDAT 3.1 has 15-bit x and y), ``int64`` every
timestamp (AEDAT 3.1 extends its 32-bit timestamps with a 31-bit-shifted overflow counter).

A sensor's extent is a :class:`SensorSize` ``(width, height)``; tensors built from events are
``[..., height, width]``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spikebridge.dataset_errors import DatasetFormatError

__all__ = [
    "EVENT_DTYPE",
    "SensorSize",
    "empty_events",
    "make_events",
    "validate_events",
]

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "u1")])
_INT16_MAX = np.iinfo(np.int16).max


class SensorSize(NamedTuple):
    """Width (number of columns, x range) and height (number of rows, y range) of a sensor."""

    width: int
    height: int


def empty_events(n: int = 0) -> np.ndarray:
    """A zero-filled event array of ``n`` records (``n = 0``: the empty sample)."""
    return np.zeros(n, dtype=EVENT_DTYPE)


def make_events(x, y, t, p) -> np.ndarray:
    """Pack four equally long 1-D integer (or bool, for ``p``) arrays into an event array.

    Raises:
        ValueError: the lengths differ, a value is not an integer, ``p`` is not 0/1, or ``x``/``y``
            do not fit the int16 fields.
    """
    cols = {}
    for name, values in (("x", x), ("y", y), ("t", t), ("p", p)):
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise ValueError(f"events field {name!r} must be 1-D, got shape {arr.shape}")
        if arr.size and not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise ValueError(f"events field {name!r} must be integer, got {arr.dtype}")
        cols[name] = arr
    n = cols["x"].shape[0]
    if any(c.shape[0] != n for c in cols.values()):
        lengths = {k: v.shape[0] for k, v in cols.items()}
        raise ValueError(f"events fields have different lengths: {lengths}")
    if n:
        for name in ("x", "y"):
            lo, hi = int(cols[name].min()), int(cols[name].max())
            if lo < 0 or hi > _INT16_MAX:
                raise ValueError(f"events field {name!r} outside 0..{_INT16_MAX}: {lo}..{hi}")
        if cols["p"].dtype != np.bool_ and (int(cols["p"].min()) < 0 or int(cols["p"].max()) > 1):
            raise ValueError("events field 'p' must be 0 (OFF) or 1 (ON)")
    out = np.empty(n, dtype=EVENT_DTYPE)
    for name, arr in cols.items():
        out[name] = arr
    return out


def validate_events(
    events: np.ndarray, sensor_size: SensorSize | tuple[int, int] | None = None, *, source=None
) -> np.ndarray:
    """Check an event array against :data:`EVENT_DTYPE` and, if given, the sensor extent.

    Checks: the dtype is :data:`EVENT_DTYPE`, the array is 1-D, ``p`` is 0/1, ``t >= 0`` and, with
    ``sensor_size``, ``0 <= x < width`` and ``0 <= y < height``.

    Args:
        events: the array to check.
        sensor_size: ``(width, height)``; ``None`` skips the range check of ``x`` and ``y``.
        source: the file the events came from, named in the error message.

    Returns:
        ``events`` itself, for chaining.

    Raises:
        DatasetFormatError: a check fails; the message names ``source`` and the first offending
            event (its index and values).
    """
    where = f"{source}: " if source is not None else ""
    if not isinstance(events, np.ndarray) or events.dtype != EVENT_DTYPE or events.ndim != 1:
        got = events.dtype if isinstance(events, np.ndarray) else type(events).__name__
        raise DatasetFormatError(f"{where}not a 1-D event array of {EVENT_DTYPE} (got {got})")
    if events.size == 0:
        return events
    bad = (events["p"] > 1) | (events["t"] < 0) | (events["x"] < 0) | (events["y"] < 0)
    what = "polarity must be 0/1 and x, y, t non-negative"
    if sensor_size is not None:
        width, height = int(sensor_size[0]), int(sensor_size[1])
        bad |= (events["x"] >= width) | (events["y"] >= height)
        what = f"x must be < {width}, y < {height} (sensor {width}x{height}), " + what
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        e = events[i]
        raise DatasetFormatError(
            f"{where}{int(bad.sum())} invalid event(s); first at index {i}: "
            f"x={int(e['x'])} y={int(e['y'])} t={int(e['t'])} p={int(e['p'])} ({what})"
        )
    return events
