"""AEDAT 2.0 event files from a DVS128 sensor (jAER), the format of the CIFAR10-DVS release.

After the ASCII header (:mod:`.aedat_header`, first line ``#!AER-DAT2.0``) the file is a
sequence of 8-byte big-endian records, no packets::

    uint32 address    int32 timestamp (µs)

A DVS128 address (jAER ``DVS128.Extractor``; also SpikingJelly's CIFAR10-DVS reader)::

    bit 0        polarity type, 0 = ON, 1 = OFF (jAER flips it: p = 1 - bit0)
    bits 1..7    raw column; jAER flips it: x = 127 - raw column
    bits 8..14   row y
    bit 15       stereo / right-eye flag on stereo boards, ignored
    > 0xFFFE     outside the 16-bit address space: external sync events, skipped (as jAER does)

Orientation. :func:`read_aedat2` returns jAER's convention (``x = 127 - raw_x, y = raw_y,
p = 1 - bit0``, the same events as jAER's ``dat2mat.m``). SpikingJelly's CIFAR10-DVS
converter, whose ``.npz`` dumps are the usual community copy, additionally turns the image:
``x = 127 - raw_y, y = 127 - raw_x`` (same polarity); ``orientation="spikingjelly"`` gives
that, so events read from the ``.aedat`` files match those ``.npz`` files exactly. tonic's
``read_dvs_128`` uses yet another one (``x = raw_y, y = raw_x, p = bit0``).

Only DVS128 addresses are decoded: a file from another sensor (DAVIS240/346 AEDAT 2.0 use other
bit layouts) gives out-of-range or no events and is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from spikebridge.dataset_errors import DatasetFormatError

from .aedat_header import read_aedat_header
from .types import EVENT_DTYPE, SensorSize

__all__ = ["DVS128_SENSOR", "decode_dvs128", "read_aedat2"]

DVS128_SENSOR = SensorSize(128, 128)
_RECORD = np.dtype([("address", ">u4"), ("t", ">i4")])
_MAX_ADDRESS = 0xFFFE
Orientation = Literal["jaer", "spikingjelly"]


def decode_dvs128(
    address: np.ndarray, timestamp: np.ndarray, *, orientation: Orientation = "jaer", source=None
) -> np.ndarray:
    """Decode DVS128 AER addresses and µs timestamps into an event array (see module doc).

    Raises:
        DatasetFormatError: a timestamp is negative, or there were records but none with a
            DVS128 address.
    """
    if orientation not in ("jaer", "spikingjelly"):
        raise ValueError(f"orientation must be 'jaer' or 'spikingjelly', got {orientation!r}")
    where = f"{source}: " if source is not None else ""
    address = np.asarray(address, dtype=np.uint32)
    timestamp = np.asarray(timestamp).astype(np.int64)
    keep = address <= _MAX_ADDRESS
    if address.size and not keep.any():
        raise DatasetFormatError(
            f"{where}none of the {address.size} AEDAT 2.0 records has a DVS128 address "
            "(all > 0xFFFE): the file is not from a DVS128 sensor"
        )
    if not keep.all():
        address, timestamp = address[keep], timestamp[keep]
    if timestamp.size and timestamp.min() < 0:
        i = int(np.flatnonzero(timestamp < 0)[0])
        raise DatasetFormatError(
            f"{where}negative timestamp {int(timestamp[i])} at event {i} (wrapped 32-bit clock?)"
        )
    raw_x = (address >> 1) & 0x7F
    raw_y = (address >> 8) & 0x7F
    out = np.empty(address.size, dtype=EVENT_DTYPE)
    if orientation == "jaer":
        out["x"] = 127 - raw_x
        out["y"] = raw_y
    else:
        out["x"] = 127 - raw_y
        out["y"] = 127 - raw_x
    out["t"] = timestamp
    out["p"] = 1 - (address & 1)
    return out


def read_aedat2(path: str | os.PathLike[str], *, orientation: Orientation = "jaer") -> np.ndarray:
    """Read a DVS128 AEDAT 2.0 file into an event array (:data:`~.types.EVENT_DTYPE`).

    Raises:
        DatasetFormatError: the header is not ``#!AER-DAT2.x``, the data is not a whole number of
            8-byte records (truncated mid-event), or the addresses are not DVS128 ones.
    """
    path = Path(path)
    with open(path, "rb") as f:
        header = read_aedat_header(f, path)
        if not header.version.startswith("2."):
            raise DatasetFormatError(
                f"{path}: AEDAT version {header.version}, expected 2.0 (use read_aedat for "
                "automatic dispatch)"
            )
        data = f.read()
    if len(data) % _RECORD.itemsize:
        raise DatasetFormatError(
            f"{path}: AEDAT 2.0 data truncated mid-event: {len(data)} bytes after the header is "
            f"not a multiple of {_RECORD.itemsize} (address + timestamp)"
        )
    rec = np.frombuffer(data, dtype=_RECORD)
    return decode_dvs128(rec["address"], rec["t"], orientation=orientation, source=path)
