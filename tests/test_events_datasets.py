"""Event datasets (N-MNIST, DVS128 Gesture, CIFAR10-DVS) and the streaming batch loader."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from events_oracles import (
    aedat31_packet,
    as_tuples,
    dvs128_address,
    spikingjelly_events,
    write_aedat2,
    write_aedat31,
    write_nmnist,
    write_npz,
)

from spikebridge.data.errors import DatasetFormatError, DatasetNotFoundError
from spikebridge.events import (
    CIFAR10DVS,
    CIFAR10DVS_CLASSES,
    NMNIST,
    DVSGesture,
    EventBatchLoader,
    ToCounts,
    ToFrames,
    read_gesture_labels,
)


def _nmnist_tree(root, per_class=3, split="Train", seed=0):
    rng = np.random.default_rng(seed)
    expected = {}
    for label in range(10):
        for i in range(per_class):
            n = int(rng.integers(0, 40))
            t = np.sort(rng.integers(0, 300_000, n))
            ev = [
                (
                    int(rng.integers(0, 34)),
                    int(rng.integers(0, 34)),
                    int(tt),
                    int(rng.integers(0, 2)),
                )
                for tt in t
            ]
            path = write_nmnist(root / split / str(label) / f"{label * 100 + i + 1:05d}.bin", ev)
            expected[path] = (ev, label)
    return expected


# -- N-MNIST ------------------------------------------------------------------------------------
def test_nmnist_streams_every_sample_exactly(tmp_path):
    expected = _nmnist_tree(tmp_path)
    ds = NMNIST(tmp_path, "train")
    assert len(ds) == 30 and ds.classes == tuple("0123456789") and ds.sensor_size == (34, 34)
    assert list(ds.labels()) == [label for label in range(10) for _ in range(3)]
    for i in range(len(ds)):
        events, label = ds[i]
        ev, lab = expected[ds.source(i)]
        assert as_tuples(events) == ev and label == lab
    assert as_tuples(ds[-1][0]) == as_tuples(ds[29][0])
    with pytest.raises(IndexError):
        ds[30]


def test_nmnist_natural_order_and_subfolder(tmp_path):
    for name in ("10.bin", "9.bin", "100.bin"):
        write_nmnist(tmp_path / "NMNIST" / "Test" / "3" / name, [(1, 1, 1, 1)])
    (tmp_path / "NMNIST" / "Test" / "3" / "notes.txt").write_text("x")
    ds = NMNIST(tmp_path, "test")
    assert [ds.source(i).name for i in range(len(ds))] == ["9.bin", "10.bin", "100.bin"]
    assert set(ds.labels()) == {3}


def test_nmnist_not_found_lists_what_was_searched(tmp_path):
    (tmp_path / "Train").mkdir()
    with pytest.raises(DatasetNotFoundError) as err:
        NMNIST(tmp_path, "train")
    msg = str(err.value)
    assert "no class folders 0..9" in msg and str(tmp_path / "NMNIST") in msg
    assert "Train/<0..9>/*.bin" in msg
    with pytest.raises(DatasetNotFoundError, match="no Test/ folder"):
        NMNIST(tmp_path, "test")


def test_nmnist_corrupt_sample_names_file(tmp_path):
    path = write_nmnist(tmp_path / "Train" / "4" / "00001.bin", [(1, 1, 1, 1)])
    path.write_bytes(path.read_bytes() + b"\x00\x01")
    ds = NMNIST(tmp_path)
    with pytest.raises(DatasetFormatError, match=r"00001\.bin.*truncated"):
        ds[0]


# -- DVS128 Gesture -----------------------------------------------------------------------------
def _gesture_recording(directory, stem, windows, seed):
    """A recording whose events cover the windows (plus events outside them), in 3 packets per
    window; a packet's overflow counter is its timestamps' bits above 31."""
    rng = np.random.default_rng(seed)
    packets, all_events = [], []
    for _, start, end in windows:
        for lo, hi in ((start - 500, start), (start, end), (end, end + 300)):
            ts = np.sort(rng.integers(lo, hi, 15))
            chunk = [
                (
                    int(rng.integers(0, 128)),
                    int(rng.integers(0, 128)),
                    int(t),
                    int(rng.integers(0, 2)),
                )
                for t in ts
            ]
            overflow = chunk[0][2] >> 31
            assert all(e[2] >> 31 == overflow for e in chunk)
            low = [(x, y, t - (overflow << 31), p) for x, y, t, p in chunk]
            packets.append(aedat31_packet(low, overflow=overflow))
            all_events += chunk
    write_aedat31(directory / f"{stem}.aedat", packets)
    lines = ["class,startTime_usec,endTime_usec"] + [f"{c},{s},{e}" for c, s, e in windows]
    (directory / f"{stem}_labels.csv").write_text("\n".join(lines) + "\n")
    return all_events


def test_gesture_windows_split_lists_and_labels(tmp_path):
    d = tmp_path / "DvsGesture"
    d.mkdir()
    big = 2**31 + 10_000
    rec = {
        "user01_fluorescent": _gesture_recording(
            d, "user01_fluorescent", [(1, 5000, 9000), (11, 20_000, 30_000)], 1
        ),
        "user02_led": _gesture_recording(
            d, "user02_led", [(3, 1000, 2000), (3, big, big + 4000)], 2
        ),
        "user24_natural": _gesture_recording(d, "user24_natural", [(8, 7000, 8000)], 3),
    }
    (d / "trials_to_train.txt").write_text("user01_fluorescent.aedat\n\nuser02_led.aedat\n")
    (d / "trials_to_test.txt").write_text("user24_natural.aedat\n")
    train, test = DVSGesture(tmp_path, "train"), DVSGesture(tmp_path, "test")
    assert len(train) == 4 and len(test) == 1 and len(DVSGesture(tmp_path, None)) == 5
    assert list(train.labels()) == [0, 10, 2, 2] and list(test.labels()) == [7]
    assert train.classes[0] == "hand_clapping" and len(train.classes) == 11
    for ds in (train, test):
        for i in range(len(ds)):
            start, end = ds.window(i)
            events, _ = ds[i]
            want = [e for e in rec[ds.recording(i)] if start <= e[2] < end]
            assert as_tuples(events) == want and len(want) == 15


def test_gesture_split_by_user_number_without_lists(tmp_path):
    for stem, seed in (("user23_lab", 1), ("user24_lab", 2), ("user29_led", 3)):
        _gesture_recording(tmp_path, stem, [(2, 1000, 2000)], seed)
    (tmp_path / "user05_led.aedat").write_bytes(b"")  # no labels file: not a recording
    assert [DVSGesture(tmp_path, "train").recording(0)] == ["user23_lab"]
    test = DVSGesture(tmp_path, "test")
    assert [test.recording(i) for i in range(len(test))] == ["user24_lab", "user29_led"]


def test_gesture_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        DVSGesture(tmp_path)
    assert str(tmp_path / "DvsGesture") in str(err.value) and "_labels.csv" in str(err.value)
    _gesture_recording(tmp_path, "user01_lab", [(1, 1000, 2000)], 0)
    (tmp_path / "trials_to_train.txt").write_text("user01_lab.aedat\nuser09_led.aedat\n")
    with pytest.raises(DatasetFormatError, match=r"trials_to_train\.txt: line 2 lists user09_led"):
        len(DVSGesture(tmp_path))
    # x outside the 128x128 sensor
    write_aedat31(tmp_path / "user30_lab.aedat", [aedat31_packet([(128, 1, 1500, 1)])])
    (tmp_path / "user30_lab_labels.csv").write_text(
        "class,startTime_usec,endTime_usec\n1,1000,2000\n"
    )
    ds = DVSGesture(tmp_path, "test")
    with pytest.raises(DatasetFormatError, match=r"user30_lab\.aedat.*x=128"):
        ds[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("class,start,end\n1,1,2\n", "expected the header"),
        ("class,startTime_usec,endTime_usec\n1,5,x\n", "line 2.*not three integers"),
        ("class,startTime_usec,endTime_usec\n12,1,2\n", "line 2: class 12 outside 1..11"),
        ("class,startTime_usec,endTime_usec\n1,1,2\n\n3,9,4\n", "line 4: window 9..4"),
    ],
)
def test_gesture_label_file_errors(tmp_path, text, message):
    path = tmp_path / "u_labels.csv"
    path.write_text(text)
    with pytest.raises(DatasetFormatError, match=rf"u_labels\.csv: .*{message}"):
        read_gesture_labels(path)


# -- CIFAR10-DVS --------------------------------------------------------------------------------
def _cifar_tree(root, per_class=10, kind="aedat", seed=0):
    rng = np.random.default_rng(seed)
    expected = {}
    for c in CIFAR10DVS_CLASSES:
        for i in range(per_class):
            n = int(rng.integers(1, 30))
            ts = np.sort(rng.integers(0, 1_300_000, n))
            records = [
                (
                    dvs128_address(*map(int, rng.integers(0, 128, 2)), int(rng.integers(0, 2))),
                    int(t),
                )
                for t in ts
            ]
            name = f"cifar10_{c}_{i}"
            if kind == "aedat":
                write_aedat2(root / c / f"{name}.aedat", records)
            else:
                write_npz(root / c / f"{name}.npz", spikingjelly_events(records))
            expected[(c, i)] = spikingjelly_events(records)
    return expected


@pytest.mark.parametrize("kind", ["aedat", "npz"])
def test_cifar10dvs_reads_aedat2_and_npz_identically(tmp_path, kind):
    expected = _cifar_tree(tmp_path / "CIFAR10DVS", per_class=3, kind=kind)
    ds = CIFAR10DVS(tmp_path)
    assert len(ds) == 30 and ds.sensor_size == (128, 128)
    for i in range(len(ds)):
        c = ds.classes[ds.label(i)]
        idx = int(ds.source(i).stem.rsplit("_", 1)[1])
        assert as_tuples(ds[i][0]) == expected[(c, idx)]


def test_cifar10dvs_splits(tmp_path):
    _cifar_tree(tmp_path, per_class=12, kind="npz")

    def indices(ds):
        return [
            int(ds.source(i).stem.rsplit("_", 1)[1]) for i in range(len(ds)) if ds.label(i) == 0
        ]

    train, test = CIFAR10DVS(tmp_path, "train"), CIFAR10DVS(tmp_path, "test")
    assert indices(train) == list(range(11)) and indices(test) == [11]  # ceil(0.9 * 12) = 11
    assert len(train) + len(test) == 120
    half = CIFAR10DVS(tmp_path, "train", train_fraction=0.5)
    assert indices(half) == list(range(6))
    for i in range(100, 103):
        write_npz(tmp_path / "airplane" / f"cifar10_airplane_{i}.npz", [(1, 1, 1, 1)])
    assert indices(CIFAR10DVS(tmp_path, "train", split_scheme="tebn")) == [100, 101, 102]
    assert indices(CIFAR10DVS(tmp_path, "test", split_scheme="tebn")) == list(range(12))


def test_cifar10dvs_not_found_and_bad_file(tmp_path):
    (tmp_path / "airplane").mkdir()
    with pytest.raises(DatasetNotFoundError) as err:
        CIFAR10DVS(tmp_path)
    msg = str(err.value)
    assert "missing class folder(s) automobile" in msg and str(tmp_path / "events_np") in msg
    _cifar_tree(tmp_path, per_class=1)
    (tmp_path / "cat" / "cifar10_cat_0.aedat").write_bytes(b"#!AER-DAT2.0\r\n" + b"\x00" * 9)
    ds = CIFAR10DVS(tmp_path)
    with pytest.raises(DatasetFormatError, match=r"cifar10_cat_0\.aedat.*truncated"):
        ds[3]


# -- batch loader -------------------------------------------------------------------------------
class _Tracking:
    """Wraps a dataset and keeps a weak reference to every event array it hands out."""

    def __init__(self, ds):
        self.ds, self.refs = ds, []

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        events, label = self.ds[i]
        self.refs.append(weakref.ref(events))
        return events, label

    def alive(self):
        return sum(r() is not None for r in self.refs)


def test_loader_frames_and_counts_shapes_and_labels(tmp_path):
    _nmnist_tree(tmp_path, per_class=2)
    ds = NMNIST(tmp_path)
    frames = EventBatchLoader(ds, 8, ToFrames(ds.sensor_size, 5))
    batches = list(frames)
    assert len(frames) == len(batches) == 3
    assert batches[0][0].shape == (5, 8, 2, 34, 34) and batches[-1][0].shape == (5, 4, 2, 34, 34)
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.as_tensor(ds.labels()))
    for j in range(8):
        assert batches[0][0][:, j].sum().item() == len(ds[j][0])
    counts = EventBatchLoader(ds, 8, ToCounts(ds.sensor_size, polarity="sum"), drop_last=True)
    got = list(counts)
    assert len(got) == 2 and got[0][0].shape == (8, 1, 34, 34) and got[0][0].dtype == torch.float32


def test_loader_shuffle_is_seeded_and_changes_per_epoch(tmp_path):
    _nmnist_tree(tmp_path, per_class=2)
    ds = NMNIST(tmp_path)
    a = EventBatchLoader(ds, 4, ToCounts(ds.sensor_size), shuffle=True, seed=3)
    b = EventBatchLoader(ds, 4, ToCounts(ds.sensor_size), shuffle=True, seed=3)
    la = torch.cat([y for _, y in a])
    assert torch.equal(la, torch.cat([y for _, y in b]))
    assert sorted(la.tolist()) == sorted(ds.labels().tolist())
    assert not np.array_equal(a.order(0), a.order(1))
    assert np.array_equal(np.sort(a.order(5)), np.arange(len(ds)))
    assert not np.array_equal(a.order(0), np.arange(len(ds)))


@pytest.mark.parametrize("which", ["nmnist", "gesture"])
def test_loader_holds_at_most_one_sample_of_events(tmp_path, which):
    if which == "nmnist":
        _nmnist_tree(tmp_path, per_class=3)
        ds = _Tracking(NMNIST(tmp_path))
        size = (34, 34)
    else:
        for k in range(4):
            _gesture_recording(tmp_path, f"user0{k + 1}_lab", [(1, 1000, 2000), (2, 3000, 4000)], k)
        ds = _Tracking(DVSGesture(tmp_path))
        size = (128, 128)
    seen = []
    inner = ToFrames(size, 3)

    def transform(events):
        seen.append(ds.alive())
        return inner(events)

    batch_size = 4
    for frames, labels in EventBatchLoader(ds, batch_size, transform, shuffle=True):
        # while a batch is being used, none of its events are alive any more
        assert ds.alive() == 0
        assert frames.shape[1] == labels.shape[0] <= batch_size
    assert len(ds.refs) == len(ds) and max(seen) == 1 <= batch_size
