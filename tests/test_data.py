"""Tests of spikebridge.data: IDX I/O, dataset loading, batch transforms and BatchLoader."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikebridge.data import (
    BatchLoader,
    DatasetFormatError,
    DatasetNotFoundError,
    IdxFormatError,
    ImageDataset,
    list_datasets,
    load_dataset,
    normalize,
    random_crop,
    random_horizontal_flip,
    read_idx,
    to_float,
    write_idx,
)
from spikebridge.data import datasets as datasets_module

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated_search_path(monkeypatch, tmp_path_factory):
    """Make dataset search independent of the machine: no env var, no Debian directory."""
    monkeypatch.delenv(datasets_module.DATA_DIR_ENV, raising=False)
    empty = tmp_path_factory.mktemp("no-system-data") / "fashion-mnist"
    monkeypatch.setattr(datasets_module, "FASHION_MNIST_SYSTEM_DIR", empty)


# ---------------------------------------------------------------------------------------------
# IDX


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(7, dtype=np.uint8),
        np.random.default_rng(0).integers(0, 256, size=(3, 5, 4), dtype=np.uint8),
        np.linspace(-2.5, 3.5, 11, dtype=np.float32),
        np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32),
        np.array([-70000, 0, 123456789], dtype=np.int32),
        np.array([[-3, 4], [5, -6]], dtype=np.int16),
        np.array([1.5, -2.25], dtype=np.float64),
        np.array([-128, 127], dtype=np.int8),
    ],
    ids=["u8-1d", "u8-3d", "f32-1d", "f32-3d", "i32", "i16", "f64", "i8"],
)
def test_idx_roundtrip(tmp_path, array, compress):
    path = tmp_path / "a.idx"
    write_idx(path, array, compress=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    back = read_idx(path)
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    assert not list(tmp_path.glob(".*.tmp")), "temporary file left behind"


def test_idx_header_is_big_endian(tmp_path):
    path = tmp_path / "a.idx"
    write_idx(path, np.array([[1, 2, 3]], dtype=np.int16), compress=False)
    raw = path.read_bytes()
    assert raw[:4] == bytes([0, 0, 0x0B, 2])
    assert raw[4:12] == bytes([0, 0, 0, 1, 0, 0, 0, 3])
    assert raw[12:] == bytes([0, 1, 0, 2, 0, 3])


def test_idx_compression_detected_by_content_not_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    raw_named_gz = tmp_path / "raw.gz"
    gz_named_raw = tmp_path / "compressed"
    write_idx(raw_named_gz, array, compress=False)
    write_idx(gz_named_raw, array, compress=True)
    np.testing.assert_array_equal(read_idx(raw_named_gz), array)
    np.testing.assert_array_equal(read_idx(gz_named_raw), array)


def test_write_idx_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(ValueError, match="int64"):
        write_idx(tmp_path / "a.idx", np.arange(3, dtype=np.int64), compress=False)


def _valid_idx_bytes(tmp_path) -> bytes:
    path = tmp_path / "valid.idx"
    write_idx(path, np.arange(24, dtype=np.uint8).reshape(2, 3, 4), compress=False)
    return path.read_bytes()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b"\x01\x00" + b[2:], "magic"),
        (lambda b: b[:2] + b"\x07" + b[3:], "type code"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b[:10], "truncated"),
        (lambda b: b[:3], "too short"),
        (lambda b: b + b"\x00\x00", "trailing"),
        (lambda b: gzip.compress(b)[:-6], "gzip"),
        (lambda b: gzip.compress(b)[:20] + b"\xff" * 8 + gzip.compress(b)[28:], "gzip"),
    ],
    ids=[
        "bad-magic",
        "unknown-type",
        "truncated-data",
        "truncated-header",
        "too-short",
        "trailing",
        "gzip-truncated",
        "gzip-corrupt",
    ],
)
def test_idx_errors_name_the_file(tmp_path, mutate, message):
    path = tmp_path / "broken-file.idx"
    path.write_bytes(mutate(_valid_idx_bytes(tmp_path)))
    with pytest.raises(IdxFormatError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------------------------
# datasets

_N_TRAIN, _N_TEST = 20, 10


def _write_fixture(directory: Path, n_train: int = _N_TRAIN, n_test: int = _N_TEST) -> dict:
    """Tiny Fashion-MNIST-like IDX files: train compressed with ``.gz`` names, test raw."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = {}
    for split, prefix, n, compress in [
        ("train", "train", n_train, True),
        ("test", "t10k", n_test, False),
    ]:
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images, compress=compress)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress=compress)
        data[split] = (images, labels)
    return data


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_fashion_mnist_fixture(tmp_path, split):
    data = _write_fixture(tmp_path / "fm")
    ds = load_dataset("fashion-mnist", split=split, data_dir=tmp_path / "fm")
    images, labels = data[split]
    assert len(ds) == len(images)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(images), 1, 28, 28)
    assert ds.labels.dtype == torch.int64
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), images)
    np.testing.assert_array_equal(ds.labels.numpy(), labels)
    assert (ds.name, ds.split) == ("fashion-mnist", split)
    assert ds.num_classes == 10 and ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert ds.in_channels == 1 and ds.input_size == (28, 28)
    assert ds.mean == pytest.approx((0.2860,)) and ds.std == pytest.approx((0.3530,))


def test_search_order_and_subdirectory(tmp_path, monkeypatch):
    # env var root with the files in a per-dataset subdirectory
    _write_fixture(tmp_path / "root" / "fashion-mnist", n_train=12)
    monkeypatch.setenv(datasets_module.DATA_DIR_ENV, str(tmp_path / "root"))
    assert len(load_dataset("fashion-mnist")) == 12
    # an explicit data_dir wins over the env var
    _write_fixture(tmp_path / "explicit", n_train=14)
    assert len(load_dataset("fashion-mnist", data_dir=tmp_path / "explicit")) == 14
    # the env var does not leak into mnist's subdirectory lookup: mnist/ is searched first
    _write_fixture(tmp_path / "root" / "mnist", n_train=16)
    assert len(load_dataset("mnist")) == 16
    assert load_dataset("MNIST").mean == pytest.approx((0.1307,))


def test_missing_files_raise_dataset_not_found(tmp_path):
    data_dir = tmp_path / "nothing-here"
    data_dir.mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", data_dir=data_dir)
    message = str(info.value)
    assert "--data-dir" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(data_dir) in message
    assert "train-images-idx3-ubyte" in message
    # an explicit directory is authoritative: no silent fallback to another copy of the data
    assert datasets_module.FASHION_MNIST_SYSTEM_DIR not in info.value.searched
    assert isinstance(info.value, FileNotFoundError)
    assert data_dir in info.value.searched
    with pytest.raises(DatasetNotFoundError) as default_info:
        load_dataset("fashion-mnist")
    assert str(datasets_module.FASHION_MNIST_SYSTEM_DIR) in str(default_info.value)
    # picklable despite the custom constructor
    assert str(pickle.loads(pickle.dumps(info.value))) == message


def test_partial_files_reported(tmp_path):
    _write_fixture(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing t10k-labels-idx1-ubyte"):
        load_dataset("fashion-mnist", split="test", data_dir=tmp_path)
    assert len(load_dataset("fashion-mnist", split="train", data_dir=tmp_path)) == _N_TRAIN


def test_mnist_without_data_dir_mentions_data_dir():
    with pytest.raises(DatasetNotFoundError, match="--data-dir"):
        load_dataset("mnist")


def test_count_mismatch_is_a_clear_error(tmp_path):
    _write_fixture(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(_N_TEST - 1, np.uint8), compress=False)
    with pytest.raises(DatasetFormatError, match="count mismatch") as info:
        load_dataset("fashion-mnist", split="test", data_dir=tmp_path)
    assert "t10k-labels-idx1-ubyte" in str(info.value)


def test_label_out_of_range_and_bad_rank(tmp_path):
    _write_fixture(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(_N_TEST, 10, np.uint8), compress=False)
    with pytest.raises(DatasetFormatError, match="labels must lie in"):
        load_dataset("fashion-mnist", split="test", data_dir=tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((_N_TEST, 784), np.uint8), False)
    with pytest.raises(DatasetFormatError, match=r"\[N, H, W\]"):
        load_dataset("fashion-mnist", split="test", data_dir=tmp_path)


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="fashion-mnist"):
        load_dataset("cifar-1000")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", split="validation")
    assert list_datasets() == ["cifar10", "cifar10-dvs", "cifar100", "cifar100-coarse",
                               "digits", "dvs-gesture", "fashion-mnist", "mnist", "nmnist"]


def test_real_fashion_mnist(monkeypatch):
    if not REAL_FASHION_MNIST.is_dir():
        pytest.skip(f"{REAL_FASHION_MNIST} not present (apt-get install dataset-fashion-mnist)")
    monkeypatch.setattr(datasets_module, "FASHION_MNIST_SYSTEM_DIR", REAL_FASHION_MNIST)
    train = load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion-mnist", "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.num_classes == 10
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    pixels = train.images.float() / 255
    assert pixels.mean().item() == pytest.approx(train.mean[0], abs=1e-3)
    assert pixels.std().item() == pytest.approx(train.std[0], abs=1e-3)


def test_digits():
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.images.shape == (1437, 1, 8, 8) and train.images.dtype == torch.uint8
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    assert train.num_classes == 10 and train.input_size == (8, 8)
    assert train.mean == test.mean and train.std == test.std
    pixels = train.images.double() / 255
    assert pixels.mean().item() == pytest.approx(train.mean[0])
    # deterministic split, disjoint train/test
    again = load_dataset("digits", "train")
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    flat_train = {bytes(im.numpy().tobytes()) for im in train.images}
    assert sum(bytes(im.numpy().tobytes()) in flat_train for im in test.images) < 10


def test_subset(tmp_path):
    _write_fixture(tmp_path)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert ds.subset(None) is ds and ds.subset(100) is ds
    small = ds.subset(5, seed=3)
    assert len(small) == 5 and small.mean == ds.mean and small.classes == ds.classes
    assert torch.equal(small.images, ds.subset(5, seed=3).images)
    assert torch.equal(ds.subset(8, seed=3).images[:5], small.images)
    with pytest.raises(ValueError):
        ds.subset(-1)


def test_image_dataset_validates():
    with pytest.raises(DatasetFormatError, match="3 images but 2 labels"):
        ImageDataset(
            images=torch.zeros(3, 1, 4, 4, dtype=torch.uint8),
            labels=torch.zeros(2, dtype=torch.int64),
            name="x",
            split="train",
            classes=("a", "b"),
            mean=(0.5,),
            std=(0.5,),
        )


# ---------------------------------------------------------------------------------------------
# transforms


def test_to_float_and_normalize():
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    x = to_float(images)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x.flatten(), torch.tensor([0.0, 0.2, 1.0]))
    y = normalize(x, mean=(0.0, 0.1, 0.5), std=(1.0, 0.5, 0.25))
    torch.testing.assert_close(y.flatten(), torch.tensor([0.0, 0.2, 2.0]))
    torch.testing.assert_close(x.flatten(), torch.tensor([0.0, 0.2, 1.0]))  # input untouched
    with pytest.raises(TypeError):
        to_float(x)
    with pytest.raises(ValueError, match="one per channel"):
        normalize(x, (0.0,), (1.0,))


def test_random_crop_padding_zero_is_identity():
    x = torch.rand(4, 2, 5, 6)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(random_crop(x, 0, g), x)


def test_random_crop_matches_slow_reference():
    padding = 3
    x = torch.rand(64, 2, 7, 5)
    out = random_crop(x, padding, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    # reference: replay the same draws, slice each sample's window by hand
    g = torch.Generator().manual_seed(1)
    dy = torch.randint(0, 2 * padding + 1, (64,), generator=g)
    dx = torch.randint(0, 2 * padding + 1, (64,), generator=g)
    padded = F.pad(x, (padding,) * 4)
    for b in range(64):
        window = padded[b, :, dy[b] : dy[b] + 7, dx[b] : dx[b] + 5]
        assert torch.equal(out[b], window)
    # offsets are independent per sample and cover the whole range
    assert len(set(zip(dy.tolist(), dx.tolist(), strict=True))) > 20
    assert set(dy.tolist()) == set(range(2 * padding + 1))


def test_random_crop_is_a_shift_of_the_padded_input():
    """Independent of the draw order: each output is *some* window of the zero-padded input."""
    padding = 2
    x = torch.rand(16, 1, 6, 6) + 0.1  # strictly positive so the zero border is recognisable
    out = random_crop(x, padding, torch.Generator().manual_seed(7))
    padded = F.pad(x, (padding,) * 4)
    for b in range(16):
        windows = [
            padded[b, :, i : i + 6, j : j + 6]
            for i in range(2 * padding + 1)
            for j in range(2 * padding + 1)
        ]
        assert any(torch.equal(out[b], w) for w in windows)


def test_random_horizontal_flip():
    x = torch.rand(8, 3, 4, 5)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(random_horizontal_flip(x, g, p=1.0), x.flip(-1))
    assert torch.equal(random_horizontal_flip(x, g, p=0.0), x)
    out = random_horizontal_flip(torch.rand(256, 1, 2, 2), g, p=0.5)
    assert out.shape == (256, 1, 2, 2)
    x = torch.rand(256, 1, 2, 3)
    out = random_horizontal_flip(x, g)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped | kept).all()) and 60 < int(flipped.sum()) < 196
    with pytest.raises(ValueError):
        random_horizontal_flip(x, g, p=1.5)


# ---------------------------------------------------------------------------------------------
# BatchLoader


def _toy_dataset(n: int = 23) -> ImageDataset:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return ImageDataset(
        images=images,
        labels=torch.arange(n, dtype=torch.int64) % 10,
        name="toy",
        split="train",
        classes=tuple(str(i) for i in range(10)),
        mean=(0.5,),
        std=(0.25,),
    )


def _sample_ids(loader: BatchLoader) -> list[int]:
    ids = []
    for x, y in loader:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        pixel = (x[:, 0, 0, 0] * 0.25 + 0.5) * 255  # undo normalisation of the constant images
        ids += pixel.round().long().tolist()
    return ids


def test_loader_covers_every_sample_once_and_reshuffles():
    ds = _toy_dataset()
    loader = BatchLoader(ds, batch_size=5, shuffle=True, seed=3)
    assert len(loader) == 5
    epoch0, epoch1 = _sample_ids(loader), _sample_ids(loader)
    assert sorted(epoch0) == list(range(23)) and sorted(epoch1) == list(range(23))
    assert epoch0 != epoch1
    assert loader.epoch == 2
    # same seed and epoch -> same order; set_epoch replays an epoch
    assert _sample_ids(BatchLoader(ds, batch_size=5, shuffle=True, seed=3)) == epoch0
    loader.set_epoch(1)
    assert _sample_ids(loader) == epoch1
    assert _sample_ids(BatchLoader(ds, batch_size=5, shuffle=True, seed=4)) != epoch0


def test_loader_without_shuffle_keeps_order_and_normalizes():
    ds = _toy_dataset()
    loader = BatchLoader(ds, batch_size=10)
    assert _sample_ids(loader) == list(range(23))
    x, y = next(iter(loader))
    assert x.shape == (10, 1, 4, 4)
    torch.testing.assert_close(x, normalize(to_float(ds.images[:10]), ds.mean, ds.std))
    assert torch.equal(y, ds.labels[:10])


def test_loader_drop_last():
    ds = _toy_dataset()
    loader = BatchLoader(ds, batch_size=5, shuffle=True, drop_last=True)
    assert len(loader) == 4
    sizes = [len(y) for _, y in loader]
    assert sizes == [5, 5, 5, 5]
    assert [len(y) for _, y in BatchLoader(ds, batch_size=5)] == [5, 5, 5, 5, 3]


def test_loader_augmentation_is_reproducible():
    ds = load_dataset("digits", "test")
    a = BatchLoader(ds, batch_size=64, shuffle=True, augment=True, seed=1)
    b = BatchLoader(ds, batch_size=64, shuffle=True, augment=True, seed=1)
    plain = BatchLoader(ds, batch_size=64, shuffle=True, augment=False, seed=1)
    xa, ya = next(iter(a))
    xb, yb = next(iter(b))
    xp, yp = next(iter(plain))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(ya, yp)  # augmentation draws come after the shuffle
    assert not torch.equal(xa, xp)
    assert xa.shape == (64, 1, 8, 8)


def test_loader_rejects_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(_toy_dataset(), batch_size=0)


# --------------------------------------------------------------------------------------------
# the registry's description of each dataset matches what its loader produces


def _loaded(name, tmp_path):
    if name.startswith("cifar"):
        from test_cifar import write_cifar10_python, write_cifar100

        directory = tmp_path / name
        (write_cifar10_python if name == "cifar10" else write_cifar100)(directory)
        return load_dataset(name, "train", directory)
    if name == "fashion-mnist":  # this module hides the system copy unless named explicitly
        system = Path("/usr/share/datasets/fashion-mnist")
        if not system.is_dir():
            pytest.skip("the Debian package dataset-fashion-mnist is not installed")
        return load_dataset(name, "train", system)
    return load_dataset(name, "train")


@pytest.mark.parametrize("name", ["fashion-mnist", "digits", "cifar10", "cifar100",
                                  "cifar100-coarse"])
def test_registry_describes_what_the_loader_produces(name, tmp_path):
    from spikebridge.data.registry import dataset_info

    info = dataset_info(name)
    data = _loaded(name, tmp_path)
    assert info.storage == "memory"
    assert data.num_classes == info.num_classes and data.in_channels == info.channels
    assert data.input_size == info.image_size
    if info.mean is not None:
        assert data.mean == pytest.approx(info.mean) and data.std == pytest.approx(info.std)


def test_registry_covers_every_dataset_name_and_refuses_others():
    from spikebridge.data import list_datasets, list_streaming_datasets
    from spikebridge.data.registry import DATASETS, dataset_info

    assert set(DATASETS) == set(list_datasets()) | set(list_streaming_datasets())
    assert dataset_info("Fashion_MNIST").name == "fashion-mnist"
    assert all(DATASETS[n].storage == "streamed" and DATASETS[n].image_size is None
               for n in list_streaming_datasets())
    with pytest.raises(ValueError, match="unknown dataset 'svhn'; choose one of cifar10"):
        dataset_info("svhn")
