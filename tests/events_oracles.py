"""Independent, struct-level writers of the event file formats, for round-trip tests.

Nothing here imports spikebridge: each writer packs bytes straight from the format's
specification (N-MNIST's 40-bit events, jAER's AEDAT 2.0 with DVS128 addresses, libcaer's AEDAT
3.1 packets, SpikingJelly's npz keys), so reading them back with spikebridge.events is a real
check of the decoders, not of an encoder/decoder pair sharing a mistake.

Events are passed as plain tuples ``(x, y, t, p)``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

AEDAT31_HEADER = (
    b"#!AER-DAT3.1\r\n"
    b"#Format: RAW\r\n"
    b"#Source 1: DVS128\r\n"
    b"#Start-Time: 2017-01-01 12:00:00 (TZ+0000)\r\n"
    b"#!END-HEADER\r\n"
)
AEDAT2_HEADER = (
    b"#!AER-DAT2.0\r\n"
    b"# This is a raw AE data file - do not edit\r\n"
    b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event\r\n"
    b"# Timestamps tick is 1 us\r\n"
    b"# created Mon Jan 01 12:00:00 CST 2017\r\n"
)


def nmnist_bytes(events) -> bytes:
    """5 bytes an event: x, y, p<<7 | t[22:16], t[15:8], t[7:0]."""
    out = bytearray()
    for x, y, t, p in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


def write_nmnist(path: Path, events) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(nmnist_bytes(events))
    return path


def polarity_word(x: int, y: int, p: int, valid: int = 1) -> int:
    """libcaer polarity event data: bit 0 valid, bit 1 polarity, bits 2..16 y, 17..31 x."""
    return (x << 17) | (y << 2) | (p << 1) | valid


def aedat31_packet(
    events,
    *,
    overflow: int = 0,
    valid=None,
    event_type: int = 1,
    event_size: int = 8,
    ts_offset: int = 4,
    capacity=None,
    number=None,
    source: int = 1,
    body: bytes | None = None,
) -> bytes:
    """One packet: 28-byte header ``<hhiiiiii`` then the events (``<Ii`` data, ts each).

    ``events`` hold 31-bit timestamps (the low part); ``valid`` is a per-event list of valid bits.
    """
    if valid is None:
        valid = [1] * len(events)
    if body is None:
        body = b"".join(
            struct.pack("<Ii", polarity_word(x, y, p, v), t)
            for (x, y, t, p), v in zip(events, valid, strict=True)
        )
    n = len(events) if number is None else number
    cap = n if capacity is None else capacity
    head = struct.pack(
        "<hhiiiiii", event_type, source, event_size, ts_offset, overflow, cap, n, sum(valid)
    )
    return head + body


def other_packet(event_type: int, event_size: int, count: int) -> bytes:
    """A non-polarity packet (e.g. special events, type 0) with arbitrary content."""
    body = bytes(range(256)) * (event_size * count // 256 + 1)
    head = struct.pack("<hhiiiiii", event_type, 1, event_size, 4, 0, count, count, count)
    return head + body[: event_size * count]


def write_aedat31(path: Path, packets: list[bytes], header: bytes = AEDAT31_HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + b"".join(packets))
    return path


def dvs128_address(raw_x: int, raw_y: int, bit0: int) -> int:
    """jAER DVS128 address: bit 0 type (1 = OFF), bits 1..7 raw x, bits 8..14 y."""
    return (raw_y << 8) | (raw_x << 1) | bit0


def write_aedat2(path: Path, records, header: bytes = AEDAT2_HEADER) -> Path:
    """``records``: ``(address, timestamp)`` pairs, big-endian ``>Ii``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + b"".join(struct.pack(">Ii", a, t) for a, t in records))
    return path


def jaer_events(records):
    """The events jAER extracts from DVS128 records: x = 127 - raw_x, y = raw_y, p = 1 - bit0."""
    out = []
    for a, t in records:
        if a > 0xFFFE:
            continue
        out.append((127 - ((a >> 1) & 0x7F), (a >> 8) & 0x7F, t, 1 - (a & 1)))
    return out


def spikingjelly_events(records):
    """SpikingJelly's CIFAR10-DVS orientation: x = 127 - raw_y, y = 127 - raw_x, p = 1 - bit0."""
    out = []
    for a, t in records:
        if a > 0xFFFE:
            continue
        out.append((127 - ((a >> 8) & 0x7F), 127 - ((a >> 1) & 0x7F), t, 1 - (a & 1)))
    return out


def write_npz(path: Path, events, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = np.array(events, dtype=np.int64).reshape(-1, 4)
    np.savez_compressed(path, t=cols[:, 2], x=cols[:, 0], y=cols[:, 1], p=cols[:, 3], **extra)
    return path


def as_tuples(events) -> list[tuple[int, int, int, int]]:
    """An event array (x, y, t, p fields) as a list of int tuples."""
    return [
        (int(x), int(y), int(t), int(p))
        for x, y, t, p in zip(events["x"], events["y"], events["t"], events["p"], strict=True)
    ]
