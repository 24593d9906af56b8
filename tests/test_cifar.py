"""Tests of CIFAR-10/100 loading (python and binary releases) and of the restricted unpickler."""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from spikebridge.data import (
    BatchLoader,
    ChecksumWarning,
    DatasetFormatError,
    DatasetNotFoundError,
    UnsafePickleError,
    list_datasets,
    load_cifar100,
    load_dataset,
    safe_load,
    safe_pickle,
)
from spikebridge.data import cifar as cifar_module
from spikebridge.data import datasets as datasets_module
from spikebridge.data.safe_pickle import RestrictedUnpickler

CIFAR10_NAMES = [n.upper() for n in cifar_module.CIFAR10_CLASSES]  # to tell meta from defaults


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    monkeypatch.delenv(datasets_module.DATA_DIR_ENV, raising=False)


# ---------------------------------------------------------------------------------------------
# writing fixtures in the official formats


def _py2_pickle(obj: dict) -> bytes:
    """A protocol-2 pickle as Python 2's cPickle wrote the official files: ``str`` keys and
    values as (BIN)STRINGs, arrays through ``numpy.core.multiarray._reconstruct``."""

    def string(s: str | bytes) -> bytes:
        raw = s.encode("latin1") if isinstance(s, str) else s
        if len(raw) < 256:
            return b"U" + bytes([len(raw)]) + raw
        return b"T" + struct.pack("<i", len(raw)) + raw

    def integer(v: int) -> bytes:
        return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)

    def value(v) -> bytes:
        if isinstance(v, str):
            return string(v)
        if isinstance(v, int):
            return integer(v)
        if isinstance(v, list):
            return b"](" + b"".join(value(x) for x in v) + b"e"
        assert isinstance(v, np.ndarray) and v.dtype == np.uint8
        shape = b"(" + b"".join(integer(d) for d in v.shape) + b"t"
        dtype = (
            b"cnumpy\ndtype\n" + string("u1") + b"K\x00K\x01\x87R"
            b"(K\x03" + string("|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        )
        return (
            b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
            + string("b")
            + b"\x87R(K\x01"
            + shape
            + dtype
            + b"\x89"
            + string(np.ascontiguousarray(v).tobytes())
            + b"tb"
        )

    body = b"".join(string(k) + value(v) for k, v in obj.items())
    return b"\x80\x02}(" + body + b"u."


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10_python(directory: Path, per_batch: int = 4, n_test: int = 10) -> dict:
    """cifar-10-batches-py with 5 train batches of ``per_batch`` images (2 per class overall)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = {"train": ([], [])}
    for i in range(1, 6):
        images = _images(rng, per_batch)
        labels = [int(x) for x in rng.integers(0, 10, per_batch)]
        batch = {
            "batch_label": f"training batch {i} of 5",
            "labels": labels,
            "data": images,
            "filenames": [f"img_{i}_{j}.png" for j in range(per_batch)],
        }
        (directory / f"data_batch_{i}").write_bytes(_py2_pickle(batch))
        data["train"][0].append(images)
        data["train"][1].extend(labels)
    data["train"] = (np.concatenate(data["train"][0]), np.array(data["train"][1]))
    test_images, test_labels = _images(rng, n_test), [k % 10 for k in range(n_test)]
    test = {"batch_label": "testing batch 1 of 1", "labels": test_labels, "data": test_images}
    (directory / "test_batch").write_bytes(_py2_pickle(test))
    data["test"] = (test_images, np.array(test_labels))
    meta = {"num_cases_per_batch": per_batch, "label_names": CIFAR10_NAMES, "num_vis": 3072}
    (directory / "batches.meta").write_bytes(_py2_pickle(meta))
    return data


def write_cifar10_binary(directory: Path, per_batch: int = 4, n_test: int = 10) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    data = {}
    files = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
    for split, names in files.items():
        all_images, all_labels = [], []
        for name in names:
            n = per_batch if split == "train" else n_test
            images = _images(rng, n)
            labels = rng.integers(0, 10, n).astype(np.uint8)
            records = np.concatenate([labels[:, None], images], axis=1)
            (directory / name).write_bytes(records.tobytes())
            all_images.append(images)
            all_labels.append(labels)
        data[split] = (np.concatenate(all_images), np.concatenate(all_labels))
    (directory / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")
    return data


def write_cifar100(directory: Path, binary: bool = False, protocol: int = 2) -> dict:
    """cifar-100-python (pickled by Python 3 at ``protocol``) or cifar-100-binary."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    data = {}
    for split, n in (("train", 30), ("test", 12)):
        images = _images(rng, n)
        fine = rng.integers(0, 100, n)
        coarse = rng.integers(0, 20, n)
        data[split] = (images, fine, coarse)
        if binary:
            labels = np.stack([coarse, fine], axis=1).astype(np.uint8)
            records = np.concatenate([labels, images], axis=1)
            (directory / f"{split}.bin").write_bytes(records.tobytes())
        else:
            batch = {
                "filenames": [f"f{j}.png" for j in range(n)],
                "batch_label": f"{split}ing batch 1 of 1",
                "fine_labels": fine.tolist(),
                "coarse_labels": coarse.tolist(),
                "data": images,
            }
            (directory / split).write_bytes(pickle.dumps(batch, protocol=protocol))
    fine_names = [f"fine{k}" for k in range(100)]
    coarse_names = [f"coarse{k}" for k in range(20)]
    if binary:
        (directory / "fine_label_names.txt").write_text("\n".join(fine_names) + "\n")
        (directory / "coarse_label_names.txt").write_text("\n".join(coarse_names) + "\n")
    else:
        meta = {"fine_label_names": fine_names, "coarse_label_names": coarse_names}
        (directory / "meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return data


def _load_quietly(*args, **kwargs):
    """load_dataset, ignoring the (expected) checksum warning of the fixture files."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ChecksumWarning)
        return load_dataset(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# CIFAR-10


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("point_at", ["folder", "parent"])
def test_cifar10_python_release(tmp_path, split, point_at):
    folder = tmp_path / "cifar-10-batches-py"
    data = write_cifar10_python(folder)
    with pytest.warns(ChecksumWarning, match="MD5"):
        ds = load_dataset("cifar10", split, folder if point_at == "folder" else tmp_path)
    images, labels = data[split]
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(images), 3, 32, 32)
    np.testing.assert_array_equal(ds.images.reshape(len(images), -1).numpy(), images)
    # channel-major rows: the first 1024 bytes are the red plane
    np.testing.assert_array_equal(ds.images[0, 0].numpy(), images[0, :1024].reshape(32, 32))
    np.testing.assert_array_equal(ds.images[0, 2, 31].numpy(), images[0, -32:])
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == labels.tolist()
    assert (ds.name, ds.split, ds.classes) == ("cifar10", split, tuple(CIFAR10_NAMES))
    assert ds.in_channels == 3 and ds.input_size == (32, 32) and ds.num_classes == 10
    assert ds.mean == pytest.approx((0.4914, 0.4822, 0.4465))
    assert ds.std == pytest.approx((0.2470, 0.2435, 0.2616))


@pytest.mark.parametrize("point_at", ["folder", "parent"])
def test_cifar10_binary_release(tmp_path, point_at):
    folder = tmp_path / "cifar-10-batches-bin"
    data = write_cifar10_binary(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no checksum warning for the binary files
        for split in ("train", "test"):
            ds = load_dataset("cifar10", split, folder if point_at == "folder" else tmp_path)
            images, labels = data[split]
            np.testing.assert_array_equal(ds.images.reshape(len(images), -1).numpy(), images)
            assert ds.labels.tolist() == labels.tolist()
            assert ds.classes == tuple(CIFAR10_NAMES)
    assert len(ds) == 10


def test_cifar10_without_meta_uses_standard_names(tmp_path):
    write_cifar10_binary(tmp_path)
    (tmp_path / "batches.meta.txt").unlink()
    assert load_dataset("cifar10", "test", tmp_path).classes[:2] == ("airplane", "automobile")


def test_env_var_and_dataset_subfolder(tmp_path, monkeypatch):
    write_cifar10_python(tmp_path / "root" / "cifar10" / "cifar-10-batches-py", n_test=7)
    monkeypatch.setenv(datasets_module.DATA_DIR_ENV, str(tmp_path / "root"))
    assert len(_load_quietly("cifar10", "test")) == 7
    # an explicit data_dir wins
    write_cifar10_binary(tmp_path / "explicit", n_test=5)
    assert len(_load_quietly("cifar10", "test", tmp_path / "explicit")) == 5


def test_missing_files_say_where_to_get_them(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", "train", tmp_path)
    message = str(info.value)
    assert "cifar-10-python.tar.gz" in message and "--data-dir" in message
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "data_batch_1 … data_batch_5" in message
    write_cifar10_python(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing data_batch_3 of the python version"):
        load_dataset("cifar10", "train", tmp_path)
    assert len(_load_quietly("cifar10", "test", tmp_path)) == 10  # the test split is complete
    with pytest.raises(DatasetNotFoundError, match="cifar-100-python.tar.gz"):
        load_dataset("cifar100", "train", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="SPIKEBRIDGE_DATA_DIR"):
        load_dataset("cifar10")


def test_checksum_mismatch_warns_and_match_does_not(tmp_path, monkeypatch):
    write_cifar10_python(tmp_path)
    with pytest.warns(ChecksumWarning) as record:
        load_dataset("cifar10", "test", tmp_path)
    assert len(record) == 1 and str(tmp_path / "test_batch") in str(record[0].message)
    official = cifar_module.OFFICIAL_MD5["cifar-10-batches-py"]
    monkeypatch.setitem(official, "test_batch", cifar_module._md5(tmp_path / "test_batch"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_dataset("cifar10", "test", tmp_path)) == 10


# ---------------------------------------------------------------------------------------------
# CIFAR-100


@pytest.mark.parametrize("layout", ["python-p2", "python-p5", "binary"])
def test_cifar100_fine_and_coarse(tmp_path, layout):
    binary = layout == "binary"
    folder = tmp_path / ("cifar-100-binary" if binary else "cifar-100-python")
    data = write_cifar100(folder, binary=binary, protocol=5 if layout == "python-p5" else 2)
    for split in ("train", "test"):
        images, fine, coarse = data[split]
        ds = _load_quietly("cifar100", split, tmp_path)
        np.testing.assert_array_equal(ds.images.reshape(len(images), -1).numpy(), images)
        assert ds.labels.tolist() == fine.tolist()
        assert ds.num_classes == 100 and ds.classes[7] == "fine7" and ds.name == "cifar100"
        assert ds.mean == pytest.approx((0.5071, 0.4865, 0.4409))
        assert ds.std == pytest.approx((0.2673, 0.2564, 0.2762))
        coarse_ds = _load_quietly("cifar100_coarse", split, folder)
        assert coarse_ds.labels.tolist() == coarse.tolist()
        assert coarse_ds.num_classes == 20 and coarse_ds.classes[3] == "coarse3"
        assert coarse_ds.name == "cifar100-coarse"
        assert torch.equal(coarse_ds.images, ds.images)
    with pytest.raises(ValueError, match="fine"):
        load_cifar100("train", folder, labels="superclass")


def test_registry_names():
    names = list_datasets()
    assert {"cifar10", "cifar100", "cifar100-coarse"} <= set(names)
    assert "imagenet" not in names
    with pytest.raises(ValueError, match="load_streaming_dataset"):
        load_dataset("imagenet", "train")
    assert len(cifar_module.CIFAR100_FINE_CLASSES) == len(set(cifar_module.CIFAR100_FINE_CLASSES))
    assert len(cifar_module.CIFAR100_FINE_CLASSES) == 100
    assert len(cifar_module.CIFAR100_COARSE_CLASSES) == 20


# ---------------------------------------------------------------------------------------------
# malformed files


def _py2_batch(n=4, **overrides) -> bytes:
    batch = {"labels": [1] * n, "data": np.zeros((n, 3072), np.uint8)}
    batch.update(overrides)
    return _py2_pickle({k: v for k, v in batch.items() if v is not None})


@pytest.mark.parametrize(
    "content, message",
    [
        (_py2_batch(labels=None), "expected a dict with keys data, labels; found keys data"),
        (_py2_batch(data=np.zeros((4, 3071), np.uint8)), r"shape \[N, 3072\]"),
        (_py2_batch(data=np.zeros((0, 3072), np.uint8), labels=[]), "N >= 1"),
        (_py2_batch(labels=[0, 1, 2, 10]), r"must lie in \[0, 9\], found range \[0, 10\]"),
        (_py2_batch(labels=[0, 1, 2]), "4 images but 3 'labels'"),
        (_py2_batch(labels=["a", "b", "c", "d"]), "must hold integers"),
        (pickle.dumps({"data": np.zeros((4, 3072), np.int16), "labels": [0] * 4}), "uint8"),
        (pickle.dumps([1, 2]), "expected a pickled dict"),
        (_py2_batch()[:-20], "not a readable CIFAR pickle"),
        (b"", "not a readable CIFAR pickle"),
    ],
    ids=[
        "missing-key",
        "wrong-shape",
        "empty",
        "label-range",
        "label-count",
        "label-type",
        "wrong-dtype",
        "not-a-dict",
        "truncated",
        "empty-file",
    ],
)
def test_bad_python_file_names_the_file(tmp_path, content, message):
    write_cifar10_python(tmp_path)
    bad = tmp_path / "test_batch"
    bad.write_bytes(content)
    with pytest.raises(DatasetFormatError, match=message) as info:
        _load_quietly("cifar10", "test", tmp_path)
    assert str(bad) in str(info.value)


def test_bad_meta_names_the_file(tmp_path):
    write_cifar10_python(tmp_path)
    (tmp_path / "batches.meta").write_bytes(_py2_pickle({"label_names": ["a", "b"]}))
    with pytest.raises(DatasetFormatError, match="expected 10 class names, found 2") as info:
        _load_quietly("cifar10", "test", tmp_path)
    assert str(tmp_path / "batches.meta") in str(info.value)


def test_bad_binary_file_names_the_file(tmp_path):
    write_cifar10_binary(tmp_path)
    bad = tmp_path / "data_batch_2.bin"
    raw = bad.read_bytes()
    bad.write_bytes(raw[:-1])  # truncated by one byte
    with pytest.raises(DatasetFormatError, match="not a whole, non-zero number of 3073-byte"):
        load_dataset("cifar10", "train", tmp_path)
    records = bytearray(raw)
    records[3073 * 2] = 10  # label of the third record
    bad.write_bytes(bytes(records))
    with pytest.raises(DatasetFormatError, match="record 2 is 10") as info:
        load_dataset("cifar10", "train", tmp_path)
    assert str(bad) in str(info.value)
    # CIFAR-100 binary: 2 label bytes per record; a fine label of 100 is out of range
    write_cifar100(tmp_path / "c100", binary=True)
    records = bytearray((tmp_path / "c100" / "test.bin").read_bytes())
    records[1] = 100
    (tmp_path / "c100" / "test.bin").write_bytes(bytes(records))
    with pytest.raises(DatasetFormatError, match=r"label byte 1 of record 0 is 100.*fine_labels"):
        load_dataset("cifar100", "test", tmp_path / "c100")


# ---------------------------------------------------------------------------------------------
# the restricted unpickler


class _Evil:
    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _malicious_pickles(marker: Path) -> dict[str, bytes]:
    return {
        "os.system": pickle.dumps(_Evil(os.system, f"echo pwned > {marker}"), protocol=2),
        "builtins.open": pickle.dumps(
            {"data": _Evil(open, str(marker), "w"), "labels": [0]}, protocol=4
        ),
        "inside-object-array": pickle.dumps(
            {"data": np.array([_Evil(open, str(marker), "w")], dtype=object)}, protocol=2
        ),
        "builtins.eval": pickle.dumps(_Evil(eval, f"open({str(marker)!r}, 'w')")),
    }


def test_payloads_really_are_malicious(tmp_path):
    """The payloads below do run code with the ordinary unpickler (so the next test means it)."""
    for i, payload in enumerate(_malicious_pickles(tmp_path / "ran").values()):
        (tmp_path / "ran").unlink(missing_ok=True)
        try:
            pickle.loads(payload)
        except Exception:
            pass  # the object array does not survive, but open() has been called by then
        assert (tmp_path / "ran").exists(), f"payload {i} ran nothing"


@pytest.mark.parametrize("which", ["os.system", "builtins.open", "inside-object-array", "eval"])
def test_malicious_pickle_runs_nothing(tmp_path, which):
    marker = tmp_path / "marker"
    payloads = _malicious_pickles(marker)
    payload = payloads[which if which != "eval" else "builtins.eval"]
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10_python(folder)
    bad = folder / "test_batch"
    bad.write_bytes(payload)
    with pytest.raises(DatasetFormatError, match="refused to load the global") as info:
        load_dataset("cifar10", "test", tmp_path)
    assert str(bad) in str(info.value)
    refused = {"os.system": ("posix.system", "os.system"), "eval": ("builtins.eval",)}.get(
        which, ("builtins.open", "io.open")
    )
    assert any(name in str(info.value) for name in refused)
    assert isinstance(info.value.__cause__, UnsafePickleError)
    with pytest.raises(UnsafePickleError):
        safe_load(bad)
    assert not marker.exists()


def test_restricted_unpickler_loads_plain_data_at_every_protocol():
    data = {
        "data": np.arange(24, dtype=np.uint8).reshape(2, 12),
        "labels": [1, 2],
        "f": np.float32([0.5]),
        "names": ("a", b"b"),
        "empty": b"",
        "set": {1, 2},
        "scalar": np.int64(7),
    }
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        back = RestrictedUnpickler(io.BytesIO(pickle.dumps(data, protocol=protocol))).load()
        np.testing.assert_array_equal(back["data"], data["data"])
        assert back["labels"] == [1, 2] and back["names"] == ("a", b"b") and back["set"] == {1, 2}
        assert back["f"].dtype == np.float32 and back["scalar"] == 7 and back["empty"] == b""
    # _codecs.encode is admitted for latin1 only
    sneaky = pickle.dumps(b"x", protocol=2).replace(b"latin1", b"rot_13")
    with pytest.raises(pickle.UnpicklingError, match="latin1"):
        RestrictedUnpickler(io.BytesIO(sneaky)).load()
    # exceptions survive pickling (e.g. through a DataLoader worker)
    error = UnsafePickleError("f.pkl", "os", "system")
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


# ---------------------------------------------------------------------------------------------
# the restricted unpickler: sizes bounded by the file, numpy states checked


class _Call:
    """Pickles as the call ``func(*args)`` (with ``state`` set by BUILD when given); objects
    sharing one ``args`` tuple pickle it once (memoised)."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _bin(s: str) -> bytes:  # BINUNICODE
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


_DTYPE_V8 = b"cnumpy\ndtype\n" + _bin("V8") + b"\x89\x88\x87R"  # dtype('V8', False, True)
_RECONSTRUCT = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
                b"K\x00\x85C\x01b\x87R")  # _reconstruct(ndarray, (0,), b'b')


def _dtype_state(elsize: int) -> bytes:  # (3, '|', None, None, None, elsize, 1, 0)
    return b"(K\x03" + _bin("|") + b"NNNJ" + struct.pack("<i", elsize) + b"K\x01K\x00tb"


def _array_state(memo: int) -> bytes:  # (1, (2,), <memo>, False, 16 zero bytes)
    return b"(K\x01K\x02\x85h" + bytes([memo]) + b"\x89C\x10" + bytes(16) + b"tb"


def test_a_240_byte_test_batch_cannot_claim_400000_images(tmp_path):
    import tracemalloc

    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10_python(folder)
    bomb = pickle.dumps({"data": _Call(np.ndarray, ((400000, 3072), np.dtype("u1"))),
                         "labels": [0]}, protocol=2)
    assert len(bomb) <= 240
    bad = folder / "test_batch"
    bad.write_bytes(bomb)
    tracemalloc.start()
    try:
        with pytest.raises(DatasetFormatError) as info:
            _load_quietly("cifar10", "test", tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value) == (
        f"{bad}: the pickle asks for an array of shape (400000, 3072) (1,228,800,000 bytes), "
        f"more than the {len(bomb)}-byte file can hold; it is not a plain data file")
    assert isinstance(info.value.__cause__, safe_pickle.OversizedArrayError)
    assert peak < 1 << 20  # nothing was allocated
    # the honest batches next to it still load, and so does an honest test_batch again
    assert len(_load_quietly("cifar10", "train", tmp_path)) == 20
    write_cifar10_python(folder)
    assert len(_load_quietly("cifar10", "test", tmp_path)) == 10


@pytest.mark.parametrize("build", ["ndarray", "reconstruct", "bytearray", "bytes", "set"])
def test_memoised_arguments_cannot_multiply_the_arrays_built(tmp_path, build):
    """Every array may be below the file's size and yet, built 3000 times from the same
    memoised arguments, hold 3000 times as much: all of them together are bounded too."""
    args = {
        "ndarray": (np.ndarray, ((4096,), np.dtype("u1"))),
        "reconstruct": (safe_pickle._multiarray._reconstruct, (np.ndarray, (4096,), b"B")),
        "bytearray": (bytearray, (b"x" * 4096,)),
        "bytes": (bytes, (4096,)),
        "set": (set, (list(range(4096)),)),
    }[build]
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps([_Call(*args) for _ in range(3000)], protocol=2))
    assert path.stat().st_size < 100_000  # and asks for 12 MB
    with pytest.raises(safe_pickle.OversizedArrayError, match="in all") as info:
        safe_load(path)
    assert str(path) in str(info.value) and "not a plain data file" in str(info.value)
    # a single such object is below the bound and loads
    path.write_bytes(pickle.dumps([_Call(*args)] * 3000, protocol=2))  # one object, memoised
    assert len(safe_load(path)) == 3000


def test_huge_bytes_and_bytearray_lengths_are_refused(tmp_path):
    for kind in (bytes, bytearray):
        path = tmp_path / kind.__name__
        path.write_bytes(pickle.dumps({"data": _Call(kind, (300_000_000,))}, protocol=2))
        assert path.stat().st_size < 100
        with pytest.raises(safe_pickle.OversizedArrayError,
                           match=rf"a {kind.__name__} object \(300,000,000 bytes\)"):
            safe_load(path)


def test_an_object_array_state_must_list_every_object(tmp_path):
    """numpy leaves the elements its state does not list uninitialised: reading them crashed the
    process (SIGSEGV). Run in a child process so that a regression fails this test only."""
    short = _Call(safe_pickle._multiarray._reconstruct, (np.ndarray, (0,), b"b"),
                  (1, (3_000_000,), np.dtype(object), False, [1]))
    path = tmp_path / "short.pkl"
    path.write_bytes(pickle.dumps({"data": short}, protocol=2))
    script = (
        "import sys\n"
        "from spikebridge.data.safe_pickle import safe_load\n"
        "try:\n"
        "    print(repr(safe_load(sys.argv[1])['data'][:5]))\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-500:]}"
    assert done.stdout.startswith(f"RefusedPickleError {path}: an object array of shape "
                                  "(3000000,) (3,000,000 elements) gets 1 objects")
    # an object array listing every element loads
    whole = np.array([1, "a", None, (2, 3)], dtype=object)
    path.write_bytes(pickle.dumps({"data": whole}, protocol=2))
    assert safe_load(path)["data"].tolist() == whole.tolist()


def test_numpy_states_are_set_once_on_fresh_objects(tmp_path):
    """numpy lets a dtype's state change the item size (or the 'holds objects' flag) of arrays
    that already use it, and fields point anywhere: only a fresh dtype's state is set, once,
    and only plain dtypes are admitted."""
    head = b"\x80\x03"
    cases = {
        # d = dtype('V8'); a = array of 2 × d (16 bytes); then d's item size set to 100 000
        "dtype changed after use": head + _DTYPE_V8 + b"q\x00" + _dtype_state(8)
        + _RECONSTRUCT + _array_state(0) + b"h\x00" + _dtype_state(100_000) + b"\x86.",
        "array state set twice": head + _DTYPE_V8 + b"q\x00" + _dtype_state(8)
        + _RECONSTRUCT + _array_state(0) + _array_state(0)[:-1] + b"b.",
        "state of a list": head + b"]" + b"(K\x01tb.",
    }
    for raw in cases.values():
        path = tmp_path / "state.pkl"
        path.write_bytes(raw)
        with pytest.raises(safe_pickle.RefusedPickleError, match="it is not a plain data file"):
            safe_load(path)
    # the first without its last step is an honest pickle: it loads
    path.write_bytes(head + _DTYPE_V8 + b"q\x00" + _dtype_state(8) + _RECONSTRUCT
                     + _array_state(0) + b".")
    assert safe_load(path).nbytes == 16
    forged = {
        "claims to hold objects": (3, "|", None, None, None, 8, 1, 63),
        "field beyond its item": (3, "|", None, ("x",), {"x": (np.dtype("u8"), 100_000)}, 8, 1,
                                  0),
    }
    for state in forged.values():
        path.write_bytes(pickle.dumps(_Call(np.dtype, ("V8", False, True), state), protocol=2))
        with pytest.raises(safe_pickle.RefusedPickleError, match="not a plain numpy dtype"):
            safe_load(path)
    with pytest.raises(safe_pickle.RefusedPickleError, match="not a plain numpy dtype"):
        RestrictedUnpickler(io.BytesIO(pickle.dumps(np.zeros(2, "u1,f4")))).load()


def test_honest_pickles_load_within_the_bounds(tmp_path):
    shared = np.arange(4)
    data = {
        "zeros": np.zeros((1000, 3072), np.uint8),  # file ≈ the array: the tightest case
        "big-endian": np.arange(5, dtype=">u8"),
        "strings": np.array([b"ab", b"c"]),
        "unicode": np.array(["héllo", "x"]),
        "dates": np.array(["2020-01-01"], dtype="M8[s]"),
        "objects": np.array([1, "a", None], dtype=object),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "empty": np.zeros((0, 3)),
        "scalars": (np.float64(2.5), np.bytes_(b"xy"), np.int8(-3)),
        "shared": [shared, shared],
        "containers": (bytearray(b"abc"), b"", {1, 2}, frozenset({3})),
    }
    path = tmp_path / "honest.pkl"
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        raw = pickle.dumps(data, protocol=protocol)
        path.write_bytes(raw)
        back, expected = safe_load(path), pickle.loads(raw)
        for key, value in expected.items():
            if isinstance(value, np.ndarray):
                assert back[key].dtype == value.dtype, (protocol, key)
                assert back[key].tolist() == value.tolist(), (protocol, key)
                assert back[key].flags.f_contiguous == value.flags.f_contiguous
        assert back["shared"][0] is back["shared"][1]
        assert back["scalars"] == expected["scalars"]
        assert back["containers"] == expected["containers"]
    # a protocol-2 pickle of zeros alone: its bytes are copied twice on the way, still in bounds
    path.write_bytes(pickle.dumps({"data": np.zeros((3000, 3072), np.uint8)}, protocol=2))
    assert safe_load(path)["data"].shape == (3000, 3072)


def test_a_cifar_file_holding_more_images_than_the_release_is_refused(tmp_path):
    n = 10_001  # the official CIFAR-10 files hold 10 000 each
    write_cifar10_python(tmp_path / "py")
    bad = tmp_path / "py" / "test_batch"
    bad.write_bytes(_py2_batch(n))
    message = (f"{bad}: holds 10,001 images, but a cifar10 test file holds at most 10,000 (the "
               "official release's count); it is not a cifar10 file")
    with pytest.raises(DatasetFormatError) as info:
        _load_quietly("cifar10", "test", tmp_path / "py")
    assert str(info.value) == message
    write_cifar10_binary(tmp_path / "bin")
    bad = tmp_path / "bin" / "data_batch_3.bin"
    bad.write_bytes(bytes(n * 3073))
    with pytest.raises(DatasetFormatError, match=r"data_batch_3.bin: holds 10,001 images, but "
                       "a cifar10 train file holds at most 10,000"):
        load_dataset("cifar10", "train", tmp_path / "bin")
    bad.write_bytes(bytes(10_000 * 3073))  # the official count is fine
    assert len(load_dataset("cifar10", "train", tmp_path / "bin")) == 4 * 4 + 10_000


# ---------------------------------------------------------------------------------------------
# use with the existing loader, training and evaluation


def test_batch_loader_augments_cifar(tmp_path):
    write_cifar10_binary(tmp_path)
    ds = load_dataset("cifar10", "train", tmp_path)
    loader = BatchLoader(ds, batch_size=8, shuffle=True, augment=True, seed=0, crop_padding=4)
    x, y = next(iter(loader))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (8,)
    plain = next(iter(BatchLoader(ds, batch_size=8, shuffle=True, seed=0)))[0]
    assert not torch.equal(x, plain)
    mean = torch.tensor(ds.mean).view(1, 3, 1, 1)
    std = torch.tensor(ds.std).view(1, 3, 1, 1)
    assert float((plain * std + mean).min()) >= -1e-6 and float((plain * std + mean).max()) <= 1


def test_train_and_evaluate_resnet20_on_cifar10(tmp_path, capsys):
    from spikebridge.cli import main

    data = tmp_path / "data"
    write_cifar10_binary(data / "cifar-10-batches-bin")
    out = tmp_path / "model"
    common = ["--data-dir", str(data), "--quiet"]
    assert main(["train", "--dataset", "cifar10", "--model", "resnet20", "--out", str(out),
                 "--epochs", "1", "--batch-size", "10", *common]) == 0  # fmt: skip
    assert main(["evaluate", "--model", str(out), "--T", "1,2", "--batch-size", "5", *common]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed
