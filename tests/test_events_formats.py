"""Event file formats: N-MNIST .bin, AEDAT 2.0 (DVS128), AEDAT 3.1, npz.

Every file is written by the independent struct-level writers of ``events_oracles`` and read back
with spikebridge.events; every field of every event is compared.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from events_oracles import (
    AEDAT2_HEADER,
    AEDAT31_HEADER,
    aedat31_packet,
    as_tuples,
    dvs128_address,
    jaer_events,
    nmnist_bytes,
    other_packet,
    spikingjelly_events,
    write_aedat2,
    write_aedat31,
    write_nmnist,
    write_npz,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikebridge.data.errors import DatasetFormatError
from spikebridge.events import (
    EVENT_DTYPE,
    Aedat31File,
    aedat_version,
    decode_nmnist,
    encode_nmnist,
    make_events,
    read_aedat,
    read_aedat2,
    read_aedat31,
    read_events_npz,
    read_nmnist_file,
    validate_events,
    write_events_npz,
    write_nmnist_file,
)

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _sorted_events(draw_list):
    return sorted(draw_list, key=lambda e: e[2])


nmnist_events = st.lists(
    st.tuples(st.integers(0, 33), st.integers(0, 33), st.integers(0, 2**23 - 1), st.integers(0, 1)),
    max_size=60,
).map(_sorted_events)


# -- event representation ---------------------------------------------------------------------
def test_event_dtype_fields():
    assert EVENT_DTYPE.names == ("x", "y", "t", "p")
    assert EVENT_DTYPE["t"] == np.dtype("<i8")
    ev = make_events([1, 2], [3, 4], [10, 20], [True, False])
    assert as_tuples(ev) == [(1, 3, 10, 1), (2, 4, 20, 0)]


def test_make_events_rejects_bad_input():
    with pytest.raises(ValueError, match="different lengths"):
        make_events([1], [1, 2], [1], [0])
    with pytest.raises(ValueError, match="'p'"):
        make_events([1], [1], [1], [2])
    with pytest.raises(ValueError, match="integer"):
        make_events([1.5], [1], [1], [0])


def test_validate_events_names_source_and_event(tmp_path):
    ev = make_events([0, 40], [0, 1], [0, 5], [0, 1])
    with pytest.raises(DatasetFormatError, match=r"sample\.bin.*index 1.*x=40"):
        validate_events(ev, (34, 34), source=tmp_path / "sample.bin")
    assert validate_events(ev, (41, 34)) is ev


# -- N-MNIST ------------------------------------------------------------------------------------
@SETTINGS
@given(events=nmnist_events)
def test_nmnist_reads_independent_bytes_exactly(tmp_path, events):
    path = write_nmnist(tmp_path / "s.bin", events)
    assert as_tuples(read_nmnist_file(path)) == events


@SETTINGS
@given(events=nmnist_events)
def test_nmnist_product_writer_matches_independent_bytes(tmp_path, events):
    ev = np.array(events, dtype=np.int64).reshape(-1, 4)
    arr = make_events(ev[:, 0], ev[:, 1], ev[:, 2], ev[:, 3])
    assert encode_nmnist(arr) == nmnist_bytes(events)
    write_nmnist_file(tmp_path / "w.bin", arr)
    assert (tmp_path / "w.bin").read_bytes() == nmnist_bytes(events)


def test_nmnist_known_bytes():
    # x=5, y=7, ON, t = 0x12_34_56: byte2 = 0x80 | 0x12
    ev = decode_nmnist(bytes([5, 7, 0x92, 0x34, 0x56, 33, 0, 0x7F, 0xFF, 0xFF]))
    assert as_tuples(ev) == [(5, 7, 0x123456, 1), (33, 0, 2**23 - 1, 0)]


def test_nmnist_overflow_marker_follows_reference_reader():
    # eventvision.py / tonic: y == 240 is dropped and adds 2**13 to it and every later event
    raw = nmnist_bytes([(1, 1, 100, 1), (0, 240, 0, 0), (2, 2, 50, 0), (0, 240, 0, 0)])
    raw += nmnist_bytes([(3, 3, 7, 1)])
    assert as_tuples(decode_nmnist(raw)) == [
        (1, 1, 100, 1),
        (2, 2, 50 + 8192, 0),
        (3, 3, 7 + 16384, 1),
    ]


def test_nmnist_empty_file(tmp_path):
    assert read_nmnist_file(write_nmnist(tmp_path / "e.bin", [])).shape == (0,)


def test_nmnist_truncated_mid_event_names_file(tmp_path):
    path = tmp_path / "cut.bin"
    path.write_bytes(nmnist_bytes([(1, 2, 3, 1), (4, 5, 6, 0)])[:-2])
    with pytest.raises(DatasetFormatError, match=r"cut\.bin.*truncated mid-event.*8 bytes"):
        read_nmnist_file(path)


def test_nmnist_out_of_sensor_names_file(tmp_path):
    path = write_nmnist(tmp_path / "big.bin", [(1, 1, 0, 0), (34, 3, 9, 1)])
    with pytest.raises(DatasetFormatError, match=r"big\.bin.*index 1.*x=34"):
        read_nmnist_file(path)
    assert len(read_nmnist_file(path, sensor_size=None)) == 2  # N-Caltech101: no fixed extent


def test_nmnist_writer_refuses_what_the_format_cannot_hold():
    with pytest.raises(ValueError, match="23-bit"):
        encode_nmnist(make_events([0], [0], [2**23], [0]))
    with pytest.raises(ValueError, match="marker"):
        encode_nmnist(make_events([0], [240], [0], [0]))
    with pytest.raises(ValueError, match="0..255"):
        encode_nmnist(make_events([256], [0], [0], [0]))


# -- AEDAT 3.1 ----------------------------------------------------------------------------------
gesture_events = st.lists(
    st.tuples(
        st.integers(0, 127), st.integers(0, 127), st.integers(0, 2**31 - 1), st.integers(0, 1)
    ),
    max_size=40,
).map(_sorted_events)


@SETTINGS
@given(
    chunks=st.lists(gesture_events, min_size=1, max_size=4),
    overflow=st.integers(0, 3),
)
def test_aedat31_reads_independent_packets_exactly(tmp_path, chunks, overflow):
    packets, expected = [], []
    for i, chunk in enumerate(chunks):
        packets.append(aedat31_packet(chunk, overflow=overflow + i))
        expected += [(x, y, ((overflow + i) << 31) | t, p) for x, y, t, p in chunk]
        packets.append(other_packet(0, 8, 3))  # special events: skipped
    path = write_aedat31(tmp_path / "rec.aedat", packets)
    assert as_tuples(read_aedat31(path)) == expected
    assert as_tuples(read_aedat(path)) == expected
    assert aedat_version(path) == "3.1"


def test_aedat31_bit_layout_and_valid_mark(tmp_path):
    events = [(127, 0, 5, 1), (0, 127, 6, 0), (100, 50, 7, 1), (32767 >> 8, 3, 8, 0)]
    packet = aedat31_packet(events, valid=[1, 0, 1, 1], overflow=1)
    path = write_aedat31(tmp_path / "v.aedat", [packet, other_packet(2, 44, 2)])
    got = as_tuples(read_aedat31(path))
    assert got == [(127, 0, 2**31 + 5, 1), (100, 50, 2**31 + 7, 1), (127, 3, 2**31 + 8, 0)]


def test_aedat31_capacity_larger_than_number_reads_number(tmp_path):
    events = [(1, 2, 3, 1), (4, 5, 6, 0)]
    body = b"".join(
        struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1) | 1, t) for x, y, t, p in events
    )
    packet = aedat31_packet(events[:1], capacity=2, number=1, body=body)
    path = write_aedat31(tmp_path / "c.aedat", [packet, aedat31_packet(events[1:])])
    assert as_tuples(read_aedat31(path)) == [(1, 2, 3, 1), (4, 5, 6, 0)]


def test_aedat31_window_reads_match_full_read(tmp_path):
    rng = np.random.default_rng(0)
    packets, expected = [], []
    t = 0
    for _ in range(12):
        chunk = []
        for _ in range(int(rng.integers(0, 30))):
            t += int(rng.integers(0, 5000))
            chunk.append(
                (int(rng.integers(0, 128)), int(rng.integers(0, 128)), t, int(rng.integers(0, 2)))
            )
        packets.append(aedat31_packet(chunk))
        expected += chunk
    path = write_aedat31(tmp_path / "w.aedat", packets)
    f = Aedat31File(path)
    assert as_tuples(f.read_window()) == expected
    for lo, hi in [(0, 1), (1000, 50_000), (t // 3, 2 * t // 3), (t, t + 1), (t + 1, t + 10)]:
        assert as_tuples(f.read_window(lo, hi)) == [e for e in expected if lo <= e[2] < hi]


def test_aedat31_bad_header(tmp_path):
    path = tmp_path / "nohdr.aedat"
    path.write_bytes(b"\x01\x00" + aedat31_packet([(1, 1, 1, 1)]))
    with pytest.raises(DatasetFormatError, match=r"nohdr\.aedat.*not an AEDAT file"):
        read_aedat31(path)
    path = write_aedat31(tmp_path / "noend.aedat", [], header=b"#!AER-DAT3.1\r\n#Format: RAW\r\n")
    with pytest.raises(DatasetFormatError, match=r"noend\.aedat.*END-HEADER"):
        read_aedat31(path)
    path = write_aedat31(tmp_path / "v4.aedat", [], header=b"#!AER-DAT4.0\r\n#!END-HEADER\r\n")
    with pytest.raises(DatasetFormatError, match=r"v4\.aedat.*version 4\.0"):
        read_aedat(path)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda raw: raw[:-3], "truncated AEDAT 3.1 packet #1"),  # mid-event
        (lambda raw: raw[: -(16 + 20)], "truncated AEDAT 3.1 packet header #1"),
    ],
)
def test_aedat31_truncation_names_file_and_packet(tmp_path, mangle, message):
    two = aedat31_packet([(1, 1, 1, 1)]) + aedat31_packet([(2, 2, 2, 0), (3, 3, 3, 1)])
    path = tmp_path / "trunc.aedat"
    path.write_bytes(AEDAT31_HEADER + mangle(two))
    with pytest.raises(DatasetFormatError, match=rf"trunc\.aedat.*{message}"):
        read_aedat31(path)
    with pytest.raises(DatasetFormatError, match=r"trunc\.aedat"):
        Aedat31File(path).read_window(0, 10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"event_size": 6}, "eventSize 6"),
        ({"ts_offset": 0}, "eventTSOffset 0"),
        ({"number": 3, "capacity": 2}, "eventNumber 3 > eventCapacity 2"),
        ({"event_size": 0}, "eventSize 0"),
    ],
)
def test_aedat31_wrong_packet_sizes(tmp_path, kwargs, message):
    packet = aedat31_packet([(1, 1, 1, 1), (2, 2, 2, 1)], **kwargs)
    path = write_aedat31(tmp_path / "bad.aedat", [packet])
    with pytest.raises(DatasetFormatError, match=rf"bad\.aedat.*{message}"):
        read_aedat31(path)


def test_aedat31_body_claims_more_than_the_file(tmp_path):
    packet = aedat31_packet([(1, 1, 1, 1)], number=1, capacity=1000)
    path = write_aedat31(tmp_path / "long.aedat", [packet])
    with pytest.raises(DatasetFormatError, match=r"long\.aedat.*need 8000 bytes"):
        read_aedat31(path)


# -- AEDAT 2.0 (DVS128) -------------------------------------------------------------------------
dvs128_records = st.lists(
    st.tuples(
        st.integers(0, 127), st.integers(0, 127), st.integers(0, 1), st.integers(0, 2**31 - 1)
    ),
    max_size=50,
).map(lambda rs: [(dvs128_address(x, y, b), t) for x, y, b, t in sorted(rs, key=lambda r: r[3])])


@SETTINGS
@given(records=dvs128_records)
def test_aedat2_reads_independent_records_exactly(tmp_path, records):
    path = write_aedat2(tmp_path / "c.aedat", records)
    assert as_tuples(read_aedat2(path)) == jaer_events(records)
    assert as_tuples(read_aedat(path)) == jaer_events(records)
    got = read_aedat2(path, orientation="spikingjelly")
    assert as_tuples(got) == spikingjelly_events(records)


def test_aedat2_known_address_and_sync_events(tmp_path):
    records = [
        (dvs128_address(0, 5, 0), 10),  # raw x 0 -> x 127, ON
        (0xFFFFFFFF, 11),  # outside the address space: external sync event, skipped
        (dvs128_address(127, 0, 1) | 0x8000, 12),  # bit 15 (stereo flag) ignored; OFF
    ]
    path = write_aedat2(tmp_path / "k.aedat", records)
    assert as_tuples(read_aedat2(path)) == [(127, 5, 10, 1), (0, 0, 12, 0)]
    assert aedat_version(path) == "2.0"


def test_aedat2_header_with_end_marker(tmp_path):
    records = [(dvs128_address(3, 4, 1), 99)]
    path = write_aedat2(tmp_path / "e.aedat", records, header=AEDAT2_HEADER + b"#!END-HEADER\r\n")
    assert as_tuples(read_aedat2(path)) == [(124, 4, 99, 0)]


def test_aedat2_truncated_mid_event(tmp_path):
    path = write_aedat2(tmp_path / "t.aedat", [(dvs128_address(1, 1, 1), 5)] * 3)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DatasetFormatError, match=r"t\.aedat.*truncated mid-event.*19 bytes"):
        read_aedat2(path)


def test_aedat2_rejects_other_sensors_and_versions(tmp_path):
    path = write_aedat2(tmp_path / "davis.aedat", [(0x80000000 | (5 << 12), 1)] * 4)
    with pytest.raises(DatasetFormatError, match=r"davis\.aedat.*not from a DVS128"):
        read_aedat2(path)
    path = write_aedat31(tmp_path / "three.aedat", [aedat31_packet([(1, 1, 1, 1)])])
    with pytest.raises(DatasetFormatError, match=r"three\.aedat.*expected 2\.0"):
        read_aedat2(path)


def test_aedat_header_cut_by_end_of_file(tmp_path):
    path = tmp_path / "h.aedat"
    path.write_bytes(b"#!AER-DAT2.0\r\n# a comment with no line end")
    with pytest.raises(DatasetFormatError, match=r"h\.aedat.*unterminated"):
        read_aedat(path)


# -- npz ----------------------------------------------------------------------------------------
def test_npz_reads_spikingjelly_keys(tmp_path):
    events = [(1, 2, 30, 1), (127, 0, 31, 0)]
    path = write_npz(tmp_path / "s.npz", events)
    assert as_tuples(read_events_npz(path, (128, 128))) == events
    out = tmp_path / "o.npz"
    write_events_npz(out, read_events_npz(path))
    assert as_tuples(read_events_npz(out)) == events


def test_npz_integral_floats_accepted_fractions_refused(tmp_path):
    path = tmp_path / "f.npz"
    np.savez(path, x=np.array([1.0]), y=np.array([2.0]), t=np.array([3.0]), p=np.array([1.0]))
    assert as_tuples(read_events_npz(path)) == [(1, 2, 3, 1)]
    np.savez(path, x=np.array([1.5]), y=np.array([2]), t=np.array([3]), p=np.array([1]))
    with pytest.raises(DatasetFormatError, match=r"f\.npz.*'x' holds non-integer"):
        read_events_npz(path)


@pytest.mark.parametrize("case", ["missing", "pickle", "corrupt", "lengths", "range", "polarity"])
def test_npz_errors_name_the_file(tmp_path, case):
    path = tmp_path / f"{case}.npz"
    if case == "missing":
        np.savez(path, x=[1], y=[1], t=[1])
        match = "lacks key.*p"
    elif case == "pickle":
        obj = np.empty(1, dtype=object)
        obj[0] = {"a": 1}
        np.savez(path, x=obj, y=[1], t=[1], p=[1])
        match = "unreadable npz"
    elif case == "corrupt":
        write_npz(path, [(1, 1, 1, 1)])
        path.write_bytes(path.read_bytes()[:40])
        match = "unreadable npz"
    elif case == "lengths":
        np.savez(path, x=[1, 2], y=[1], t=[1], p=[1])
        match = "differ in length"
    elif case == "range":
        write_npz(path, [(128, 1, 1, 1)])
        match = "x=128"
    else:
        write_npz(path, [(1, 1, 1, 2)])
        match = "polarity"
    with pytest.raises(DatasetFormatError, match=rf"{case}\.npz.*{match}"):
        read_events_npz(path, (128, 128))
