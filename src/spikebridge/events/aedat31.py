"""AEDAT 3.1 event files (cAER / libcaer), the format of DVS128 Gesture.

After the ASCII header (:mod:`.aedat_header`: first line ``#!AER-DAT3.1``, last line
``#!END-HEADER\\r\\n``) the file is a sequence of packets. Each packet is a 28-byte little-endian
header (libcaer ``struct caer_event_packet_header``)::

    int16 eventType        1 = polarity events; other types (special, frame, IMU, ...) skipped
    int16 eventSource      id of the producing device/module
    int32 eventSize        bytes per event (8 for polarity events)
    int32 eventTSOffset    byte offset of the 32-bit timestamp inside an event (4 for polarity)
    int32 eventTSOverflow  timestamp overflow counter of this packet
    int32 eventCapacity    events the packet holds; equal to eventNumber in files
    int32 eventNumber      events present (valid + invalid)
    int32 eventValid       valid events present

followed by ``eventCapacity * eventSize`` bytes of events (as dv-python and SpikingJelly read it;
the specification makes capacity == number in files, and only the first ``eventNumber`` events
are decoded). A polarity event is 8 little-endian bytes::

    uint32 data    bit 0 valid mark, bit 1 polarity (1 = ON), bits 2..16 y, bits 17..31 x
    int32  ts      timestamp in µs, 31 bits (non-negative)

and its full 64-bit timestamp is ``(eventTSOverflow << 31) | ts``. Events whose valid bit is 0
were invalidated by a filter and are skipped.

:class:`Aedat31File` indexes the polarity packets of a file once (offset, event count and the
time range of each; a few numbers per packet) so that a time window, such as one labelled
gesture, is read from just the packets that overlap it instead of the whole recording.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from spikebridge.dataset_errors import DatasetFormatError

from .aedat_header import read_aedat_header
from .types import EVENT_DTYPE, empty_events

__all__ = ["Aedat31File", "PacketHeader", "iter_packet_headers", "read_aedat31"]

POLARITY_EVENT = 1
_HEADER = struct.Struct("<hhiiiiii")
_POLARITY = np.dtype([("data", "<u4"), ("ts", "<i4")])


@dataclass(frozen=True)
class PacketHeader:
    """One AEDAT 3.1 packet header and where its events lie in the file."""

    event_type: int
    event_source: int
    event_size: int
    ts_offset: int
    ts_overflow: int
    capacity: int
    number: int
    valid: int
    offset: int  # file offset of the packet header
    body_offset: int  # file offset of the first event

    @property
    def body_size(self) -> int:
        return self.capacity * self.event_size


def _check_version(version: str, source) -> None:
    if version != "3.1":
        raise DatasetFormatError(f"{source}: AEDAT version {version}, expected 3.1")


def iter_packet_headers(
    f: BinaryIO, source, data_offset: int, file_size: int
) -> Iterator[PacketHeader]:
    """Yield every packet header from ``data_offset`` on, seeking over the packet bodies.

    Raises:
        DatasetFormatError: a header is cut by the end of the file, has impossible sizes
            (``eventSize <= 0``, ``eventNumber > eventCapacity``, ...), a polarity packet's event
            size or timestamp offset is not 8 / 4, or a body runs past the end of the file.
    """
    pos = data_offset
    index = 0
    while pos < file_size:
        f.seek(pos)
        head = f.read(_HEADER.size)
        if len(head) < _HEADER.size:
            raise DatasetFormatError(
                f"{source}: truncated AEDAT 3.1 packet header #{index} at byte {pos}: "
                f"{len(head)} of {_HEADER.size} bytes"
            )
        etype, esrc, esize, tsoff, tsovf, cap, num, valid = _HEADER.unpack(head)
        problem = None
        if esize <= 0:
            problem = f"eventSize {esize} <= 0"
        elif cap < 0 or num < 0 or valid < 0:
            problem = f"negative count (capacity {cap}, number {num}, valid {valid})"
        elif num > cap:
            problem = f"eventNumber {num} > eventCapacity {cap}"
        elif valid > num:
            problem = f"eventValid {valid} > eventNumber {num}"
        elif tsovf < 0:
            problem = f"negative eventTSOverflow {tsovf}"
        elif etype == POLARITY_EVENT and (esize != _POLARITY.itemsize or tsoff != 4):
            problem = (
                f"polarity packet with eventSize {esize} and eventTSOffset {tsoff} "
                f"(expected {_POLARITY.itemsize} and 4)"
            )
        if problem:
            raise DatasetFormatError(
                f"{source}: bad AEDAT 3.1 packet header #{index} at byte {pos}: {problem}"
            )
        body = pos + _HEADER.size
        end = body + cap * esize
        if end > file_size:
            raise DatasetFormatError(
                f"{source}: truncated AEDAT 3.1 packet #{index} at byte {pos}: its "
                f"{cap} events of {esize} bytes need {cap * esize} bytes, the file has "
                f"{file_size - body}"
            )
        yield PacketHeader(etype, esrc, esize, tsoff, tsovf, cap, num, valid, pos, body)
        pos = end
        index += 1


def _decode_polarity(bodies: list[bytes], overflows: list[int], source) -> np.ndarray:
    """The valid events of polarity packet bodies (each ``eventNumber * 8`` bytes, with its
    packet's overflow counter), decoded together as one event array."""
    if not bodies:
        return empty_events()
    rec = np.frombuffer(b"".join(bodies) if len(bodies) > 1 else bodies[0], dtype=_POLARITY)
    counts = np.fromiter((len(b) // _POLARITY.itemsize for b in bodies), np.int64, len(bodies))
    ts = rec["ts"].astype(np.int64)
    if ts.size and ts.min() < 0:
        raise DatasetFormatError(f"{source}: negative 31-bit timestamp in an AEDAT 3.1 packet")
    ts |= np.repeat(np.asarray(overflows, dtype=np.int64) << 31, counts)
    data = rec["data"]
    valid = (data & 1).astype(bool)
    if not valid.all():
        data, ts = data[valid], ts[valid]
    out = np.empty(data.size, dtype=EVENT_DTYPE)
    out["x"] = (data >> 17) & 0x7FFF
    out["y"] = (data >> 2) & 0x7FFF
    out["t"] = ts
    out["p"] = (data >> 1) & 1
    return out


def read_aedat31(path: str | os.PathLike[str]) -> np.ndarray:
    """Read every valid polarity event of an AEDAT 3.1 file (other packet types are skipped).

    One packet body is in memory at a time besides the growing result.

    Raises:
        DatasetFormatError: not an AEDAT 3.1 file, or a corrupt/truncated packet (see
            :func:`iter_packet_headers`).
    """
    path = Path(path)
    bodies, overflows = [], []
    with open(path, "rb") as f:
        header = read_aedat_header(f, path)
        _check_version(header.version, path)
        size = os.fstat(f.fileno()).st_size
        for packet in iter_packet_headers(f, path, header.data_offset, size):
            if packet.event_type == POLARITY_EVENT and packet.number:
                f.seek(packet.body_offset)
                bodies.append(f.read(packet.number * packet.event_size))
                overflows.append(packet.ts_overflow)
    return _decode_polarity(bodies, overflows, path)


class Aedat31File:
    """An AEDAT 3.1 file read by time window through a lazily built packet index.

    The index (built on the first :meth:`read_window`, one pass over the file that holds one
    packet at a time) keeps, per polarity packet with valid events: body offset, event count,
    overflow counter, smallest and largest timestamp — 40 bytes a packet. A window then reads only
    the packets whose time range overlaps it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._index: dict[str, np.ndarray] | None = None

    def _build_index(self) -> dict[str, np.ndarray]:
        rows = []
        with open(self.path, "rb") as f:
            header = read_aedat_header(f, self.path)
            _check_version(header.version, self.path)
            size = os.fstat(f.fileno()).st_size
            for packet in iter_packet_headers(f, self.path, header.data_offset, size):
                if packet.event_type != POLARITY_EVENT or not packet.number:
                    continue
                f.seek(packet.body_offset)
                ev = _decode_polarity([f.read(packet.number * 8)], [packet.ts_overflow], self.path)
                if ev.size:
                    t = ev["t"]
                    rows.append(
                        (packet.body_offset, packet.number, packet.ts_overflow, t.min(), t.max())
                    )
        arr = np.array(rows, dtype=np.int64).reshape(-1, 5)
        names = ("offset", "number", "overflow", "tmin", "tmax")
        return {k: arr[:, i].copy() for i, k in enumerate(names)}

    @property
    def index(self) -> dict[str, np.ndarray]:
        """The packet index (built on first access): arrays offset, number, overflow, tmin, tmax."""
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def read_window(self, t_start: int | None = None, t_end: int | None = None) -> np.ndarray:
        """The valid polarity events with ``t_start <= t < t_end`` (``None``: unbounded)."""
        idx = self.index
        lo = np.iinfo(np.int64).min if t_start is None else int(t_start)
        hi = np.iinfo(np.int64).max if t_end is None else int(t_end)
        hit = np.flatnonzero((idx["tmax"] >= lo) & (idx["tmin"] < hi))
        bodies, overflows = [], []
        with open(self.path, "rb") as f:
            for i in hit:
                off, num = int(idx["offset"][i]), int(idx["number"][i])
                f.seek(off)
                raw = f.read(num * 8)
                if len(raw) != num * 8:
                    raise DatasetFormatError(f"{self.path}: file shrank since it was indexed")
                bodies.append(raw)
                overflows.append(int(idx["overflow"][i]))
        ev = _decode_polarity(bodies, overflows, self.path)
        t = ev["t"]
        sel = (t >= lo) & (t < hi)
        return ev if sel.all() else ev[sel]
