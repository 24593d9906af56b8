"""The N-MNIST / N-Caltech101 ``.bin`` event file format: reading and writing.

A file is a bare sequence of 40-bit (5-byte) events, no header, no trailer::

    byte 0        x address (pixels)
    byte 1        y address (pixels)
    byte 2 bit 7  polarity (1 = ON, 0 = OFF)
    bytes 2..4    bits 22..0: timestamp in µs, big-endian:
                  ts = ((b2 & 0x7F) << 16) | (b3 << 8) | b4

as in the dataset's own description ("bit 39-32 Xaddress, 31-24 Yaddress, bit 23 polarity,
bits 22-0 timestamp"), Orchard's ``Read_Ndataset.m`` / ``eventvision.py`` and tonic's
``tonic.io.read_mnist_file``. N-MNIST is recorded on a 34×34 pixel window of an ATIS sensor.

Timestamp overflow markers: the reference Python reader (``eventvision.py``, reproduced by tonic)
treats an event with ``y == 240`` as a marker, not an event: it is dropped and every later
timestamp is increased by ``2**13`` µs. We reproduce that convention exactly (including its
``2**13``, although the field is 23 bits wide) so both readers decode identical events; real
N-MNIST recordings (~300 ms, far below 2**23 µs) contain no markers.

A file whose length is not a multiple of 5 bytes is truncated mid-event and refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spikebridge.dataset_errors import DatasetFormatError

from .types import EVENT_DTYPE, SensorSize, validate_events

__all__ = [
    "NMNIST_OVERFLOW_INCREMENT",
    "NMNIST_OVERFLOW_Y",
    "NMNIST_SENSOR",
    "NMNIST_TIMESTAMP_LIMIT",
    "decode_nmnist",
    "encode_nmnist",
    "read_nmnist_file",
    "write_nmnist_file",
]

NMNIST_SENSOR = SensorSize(34, 34)
NMNIST_EVENT_BYTES = 5
NMNIST_OVERFLOW_Y = 240
NMNIST_OVERFLOW_INCREMENT = 2**13
NMNIST_TIMESTAMP_LIMIT = 2**23  # timestamps are 23-bit: 0 <= ts < 2**23 µs


def decode_nmnist(
    raw: bytes | bytearray | memoryview | np.ndarray,
    *,
    source=None,
    sensor_size: SensorSize | tuple[int, int] | None = NMNIST_SENSOR,
) -> np.ndarray:
    """Decode the bytes of one ``.bin`` file into an event array (:data:`EVENT_DTYPE`).

    Args:
        raw: the file's bytes.
        source: the file name, for error messages.
        sensor_size: ``(width, height)`` the events must lie in (34×34 for N-MNIST); ``None``
            skips the check (N-Caltech101 recordings have varying extents).

    Raises:
        DatasetFormatError: the length is not a multiple of 5 (truncated mid-event), or an event
            lies outside ``sensor_size``.
    """
    buf = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw
    where = f"{source}: " if source is not None else ""
    if buf.size % NMNIST_EVENT_BYTES:
        n_full = buf.size // NMNIST_EVENT_BYTES
        raise DatasetFormatError(
            f"{where}N-MNIST event file truncated mid-event: {buf.size} bytes is not a multiple "
            f"of {NMNIST_EVENT_BYTES} ({n_full} whole events, {buf.size % NMNIST_EVENT_BYTES} "
            "stray bytes)"
        )
    rec = buf.reshape(-1, NMNIST_EVENT_BYTES)
    b2 = rec[:, 2]
    ts = (
        ((b2 & 0x7F).astype(np.int64) << 16)
        | (rec[:, 3].astype(np.int64) << 8)
        | rec[:, 4].astype(np.int64)
    )
    is_marker = rec[:, 1] == NMNIST_OVERFLOW_Y
    if is_marker.any():
        # marker k (0-based) adds 2**13 to itself and every later event: a cumulative count
        ts += np.cumsum(is_marker, dtype=np.int64) * NMNIST_OVERFLOW_INCREMENT
        keep = ~is_marker
        rec, ts, b2 = rec[keep], ts[keep], b2[keep]
    out = np.empty(rec.shape[0], dtype=EVENT_DTYPE)
    out["x"] = rec[:, 0]
    out["y"] = rec[:, 1]
    out["t"] = ts
    out["p"] = b2 >> 7
    if sensor_size is not None:
        validate_events(out, sensor_size, source=source)
    return out


def read_nmnist_file(
    path: str | os.PathLike[str],
    *,
    sensor_size: SensorSize | tuple[int, int] | None = NMNIST_SENSOR,
) -> np.ndarray:
    """Read one N-MNIST ``.bin`` file; see :func:`decode_nmnist` for the checks and errors."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    return decode_nmnist(raw, source=path, sensor_size=sensor_size)


def encode_nmnist(events: np.ndarray) -> bytes:
    """Encode an event array as the bytes of an N-MNIST ``.bin`` file (the inverse of decoding).

    Raises:
        ValueError: ``events`` is not an :data:`EVENT_DTYPE` array, ``x``/``y`` is outside 0..255,
            ``y`` is the overflow marker 240, or ``t`` is outside ``0 <= t < 2**23`` µs (the
            format has no room for it; no overflow markers are written).
    """
    if not isinstance(events, np.ndarray) or events.dtype != EVENT_DTYPE or events.ndim != 1:
        raise ValueError(f"expected a 1-D event array of {EVENT_DTYPE}")
    n = events.shape[0]
    if n:
        x, y, t, p = (events[k] for k in ("x", "y", "t", "p"))
        if x.min() < 0 or x.max() > 255 or y.min() < 0 or y.max() > 255:
            raise ValueError("N-MNIST x and y are one byte each: 0..255")
        if (y == NMNIST_OVERFLOW_Y).any():
            raise ValueError(f"y == {NMNIST_OVERFLOW_Y} is the N-MNIST overflow marker")
        if t.min() < 0 or t.max() >= NMNIST_TIMESTAMP_LIMIT:
            raise ValueError(
                f"N-MNIST timestamps are 23-bit: 0 <= t < {NMNIST_TIMESTAMP_LIMIT} µs, "
                f"got {int(t.min())}..{int(t.max())}"
            )
        if p.max() > 1:
            raise ValueError("polarity must be 0 or 1")
    rec = np.empty((n, NMNIST_EVENT_BYTES), dtype=np.uint8)
    if n:
        t = events["t"].astype(np.int64)
        rec[:, 0] = events["x"]
        rec[:, 1] = events["y"]
        rec[:, 2] = (events["p"].astype(np.int64) << 7) | (t >> 16)
        rec[:, 3] = (t >> 8) & 0xFF
        rec[:, 4] = t & 0xFF
    return rec.tobytes()


def write_nmnist_file(path: str | os.PathLike[str], events: np.ndarray) -> None:
    """Write an event array as an N-MNIST ``.bin`` file (see :func:`encode_nmnist`)."""
    data = encode_nmnist(events)
    with open(path, "wb") as f:
        f.write(data)
