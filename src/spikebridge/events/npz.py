"""Event samples stored as numpy ``.npz`` archives (SpikingJelly-style dumps).

SpikingJelly converts CIFAR10-DVS, DVS128 Gesture, ... into one ``.npz`` per sample (written by
``np.savez_compressed``) holding four equally long 1-D arrays under the keys::

    t   timestamps (µs)      x   columns      y   rows      p   polarity (0 = OFF, 1 = ON)

They are read with ``np.load(allow_pickle=False)``: an archive that needs pickle (object arrays)
is refused rather than executed. Values must be integers (or bools for ``p``); float arrays are
accepted only when every value is integral (some dumps store integers as float64).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from spikebridge.dataset_errors import DatasetFormatError

from .types import EVENT_DTYPE, SensorSize, validate_events

__all__ = ["read_events_npz", "write_events_npz"]

_KEYS = ("x", "y", "t", "p")


def _as_int(arr: np.ndarray, key: str, path: Path) -> np.ndarray:
    if arr.ndim != 1:
        raise DatasetFormatError(f"{path}: array {key!r} has shape {arr.shape}, expected 1-D")
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.floor(arr)):
            raise DatasetFormatError(f"{path}: array {key!r} holds non-integer values")
        return arr.astype(np.int64)
    raise DatasetFormatError(f"{path}: array {key!r} has dtype {arr.dtype}, expected integers")


def read_events_npz(
    path: str | os.PathLike[str], sensor_size: SensorSize | tuple[int, int] | None = None
) -> np.ndarray:
    """Read one ``.npz`` event sample (keys x, y, t, p) into an event array.

    Raises:
        DatasetFormatError: not a readable npz archive, a key is missing, the arrays differ in
            length or are not integer, an array needs pickle, or (with ``sensor_size``) an event
            lies outside the sensor.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in _KEYS if k not in archive.files]
            if missing:
                raise DatasetFormatError(
                    f"{path}: npz event file lacks key(s) {', '.join(missing)} "
                    f"(has {', '.join(archive.files) or 'none'}; expected x, y, t, p)"
                )
            cols = {k: _as_int(archive[k], k, path) for k in _KEYS}
    except DatasetFormatError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise DatasetFormatError(f"{path}: unreadable npz event file: {exc}") from exc
    n = cols["t"].shape[0]
    if any(c.shape[0] != n for c in cols.values()):
        lengths = ", ".join(f"{k}={v.shape[0]}" for k, v in cols.items())
        raise DatasetFormatError(f"{path}: npz arrays differ in length ({lengths})")
    out = np.empty(n, dtype=EVENT_DTYPE)
    if n:
        for k in ("x", "y"):
            lo, hi = int(cols[k].min()), int(cols[k].max())
            if lo < 0 or hi > np.iinfo(np.int16).max:
                raise DatasetFormatError(f"{path}: {k} outside 0..32767 ({lo}..{hi})")
        if int(cols["p"].min()) < 0 or int(cols["p"].max()) > 1:
            raise DatasetFormatError(f"{path}: polarity p must be 0 or 1")
        if int(cols["t"].min()) < 0:
            raise DatasetFormatError(f"{path}: negative timestamp")
        for k in _KEYS:
            out[k] = cols[k]
    return validate_events(out, sensor_size, source=path)


def write_events_npz(path: str | os.PathLike[str], events: np.ndarray) -> None:
    """Write an event array as a compressed ``.npz`` with keys t, x, y, p (SpikingJelly layout)."""
    validate_events(events)
    np.savez_compressed(
        path,
        t=events["t"].astype(np.int64),
        x=events["x"].astype(np.int64),
        y=events["y"].astype(np.int64),
        p=events["p"].astype(np.int64),
    )
