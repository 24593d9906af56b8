"""Tests of the streamed ImageNet / ImageFolder dataset, its transforms and its loader."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spikebridge.data import (
    CorruptImageError,
    DatasetFormatError,
    DatasetNotFoundError,
    ImageFolderDataset,
    decode_image,
    list_streaming_datasets,
    load_streaming_dataset,
    make_loader,
)
from spikebridge.data import datasets as datasets_module
from spikebridge.data import imagefolder as imagefolder_module
from spikebridge.data.imagefolder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    SeededSampler,
    TrainTransform,
    center_crop,
    random_resized_crop_box,
    resize_shorter_side,
)

has_simplejpeg = "simplejpeg" in imagefolder_module.available_decoders()


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    monkeypatch.delenv(datasets_module.DATA_DIR_ENV, raising=False)


def _photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random colour image (JPEG-friendly) as uint8 ``[H, W, 3]``."""
    low = torch.from_numpy(rng.uniform(0, 255, (1, 3, 4, 5)).astype(np.float32))
    image = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear")
    return image[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


# relative path -> (kind, height, width); train has classes cat, dog, fish; val lacks cat
TREE = {
    "train/cat/b.JPEG": ("jpeg", 48, 64),
    "train/cat/a.jpg": ("jpeg", 60, 40),
    "train/cat/nested/c.png": ("png", 33, 47),
    "train/dog/x.Jpeg": ("jpeg", 50, 50),
    "train/dog/gray.jpeg": ("gray", 40, 52),
    "train/fish/f.PNG": ("png", 30, 70),
    "val/dog/v1.JPEG": ("jpeg", 45, 61),
    "val/fish/v2.JPEG": ("jpeg", 64, 48),
    "val/fish/v3.png": ("png", 32, 32),
}
TRAIN_ORDER = [  # sorted by class, then by relative path within the class
    "train/cat/a.jpg",
    "train/cat/b.JPEG",
    "train/cat/nested/c.png",
    "train/dog/gray.jpeg",
    "train/dog/x.Jpeg",
    "train/fish/f.PNG",
]


def write_tree(root: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    pixels = {}
    for rel, (kind, h, w) in TREE.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        array = _photo(rng, h, w)
        if kind == "gray":
            Image.fromarray(array[:, :, 0], mode="L").save(path, "JPEG", quality=90)
        else:
            Image.fromarray(array).save(path, "PNG" if kind == "png" else "JPEG", quality=90)
        pixels[rel] = array
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "dog" / ".hidden.jpg").write_bytes(b"ignored")
    (root / "train" / ".cache").mkdir()
    return pixels


@pytest.fixture
def tree(tmp_path) -> Path:
    write_tree(tmp_path / "data")
    return tmp_path / "data"


# ---------------------------------------------------------------------------------------------
# listing and locating


def test_lists_files_sorted_with_train_class_indices(tree):
    train = load_streaming_dataset("imagefolder", "train", tree)
    assert train.classes == ("cat", "dog", "fish") and train.num_classes == 3
    assert [str(train.path(i).relative_to(tree)) for i in range(len(train))] == TRAIN_ORDER
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 2]
    assert train.augment and train.split == "train" and train.name == "imagefolder"
    assert (train.in_channels, train.input_size) == (3, (224, 224))
    assert train.mean == IMAGENET_MEAN and train.std == IMAGENET_STD
    val = load_streaming_dataset("imagefolder", "val", tree)
    # val has no cat folder: dog and fish keep the training indices 1 and 2
    assert val.classes == train.classes and val.labels.tolist() == [1, 2, 2]
    assert not val.augment
    assert load_streaming_dataset("imagefolder", "test", tree).labels.tolist() == [1, 2, 2]


def test_imagenet_locations(tree, tmp_path, monkeypatch):
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "imagenet").symlink_to(tree)
    assert len(load_streaming_dataset("imagenet", "val", parent)) == 3
    kaggle = tmp_path / "kaggle" / "ILSVRC" / "Data"
    kaggle.mkdir(parents=True)
    (kaggle / "CLS-LOC").symlink_to(tree)
    (tree / "test").mkdir()  # ImageNet's test/ is unlabelled: split "test" means val/
    test = load_streaming_dataset("imagenet", "test", tmp_path / "kaggle")
    assert len(test) == 3 and test.name == "imagenet"
    monkeypatch.setenv(datasets_module.DATA_DIR_ENV, str(parent))
    assert len(load_streaming_dataset("ImageNet", "train")) == 6
    assert list_streaming_datasets() == ["imagefolder", "imagenet"]


def test_missing_and_malformed_trees(tree, tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_streaming_dataset("imagenet", "train", tmp_path / "nowhere")
    message = str(info.value)
    assert "ILSVRC2012_img_train.tar" in message and "--data-dir" in message
    assert str(tmp_path / "nowhere" / "train") in message
    with pytest.raises(DatasetNotFoundError, match="SPIKEBRIDGE_DATA_DIR"):
        load_streaming_dataset("imagefolder", "train")
    # ImageNet's val/ as shipped: images directly in the folder
    flat = tmp_path / "flat"
    (flat / "val").mkdir(parents=True)
    for i in range(3):
        (flat / "val" / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(b"")
    with pytest.raises(DatasetFormatError, match="holds 3 image.* directly") as info:
        load_streaming_dataset("imagenet", "val", flat)
    assert str(flat / "val") in str(info.value)
    # a validation class that training does not have
    (tree / "val" / "zebra").mkdir()
    with pytest.raises(DatasetFormatError, match="zebra"):
        load_streaming_dataset("imagefolder", "val", tree)
    (tree / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no .jpeg/.jpg/.png files"):
        ImageFolderDataset(tree / "empty")
    with pytest.raises(ValueError, match="load_dataset"):
        load_streaming_dataset("cifar10", "train", tree)
    with pytest.raises(ValueError, match="split"):
        load_streaming_dataset("imagenet", "validation", tree)


def test_subset(tree):
    train = load_streaming_dataset("imagefolder", "train", tree)
    small = train.subset(4, seed=1)
    assert len(small) == 4 and len(train) == 6 and train.subset(None) is train
    paths = {small.path(i) for i in range(4)}
    assert len(paths) == 4 and paths <= {train.path(i) for i in range(6)}
    label_of = {train.path(i): int(train.labels[i]) for i in range(6)}
    assert [label_of[small.path(i)] for i in range(4)] == small.labels.tolist()
    assert [small[i][1] for i in range(4)] == small.labels.tolist()


# ---------------------------------------------------------------------------------------------
# decoding


def test_decoding_png_is_exact_and_jpeg_decoders_agree(tree):
    pixels = {rel: arr for rel, arr in write_tree(tree.parent / "again").items()}
    root = tree.parent / "again"
    for rel, (kind, h, w) in TREE.items():
        image = decode_image(root / rel)
        assert image.shape == (h, w, 3) and image.dtype == np.uint8
        if kind == "png":
            np.testing.assert_array_equal(image, pixels[rel])
        elif kind == "gray":
            assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
        else:  # lossy, but close to what was written
            assert np.abs(image.astype(int) - pixels[rel]).mean() < 3
            pil = decode_image(root / rel, decoder="pil")
            if has_simplejpeg:  # both are libjpeg-turbo with the same settings: same pixels
                np.testing.assert_array_equal(decode_image(root / rel, "simplejpeg"), pil)
            np.testing.assert_array_equal(decode_image((root / rel).read_bytes()), image)


@pytest.mark.parametrize("decoder", ["auto", "pil"])
@pytest.mark.parametrize("corrupt", ["truncated", "garbage", "empty", "missing"], ids=lambda c: c)
def test_corrupt_image_names_the_file(tree, decoder, corrupt):
    path = tree / "train" / "dog" / "x.Jpeg"
    raw = path.read_bytes()
    if corrupt == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif corrupt == "garbage":
        path.write_bytes(b"\xff\xd8" + bytes(range(256)) * 4)
    elif corrupt == "empty":
        path.write_bytes(b"")
    ds = load_streaming_dataset("imagefolder", "train", tree, decoder=decoder)
    if corrupt == "missing":
        path.unlink()
    index = [ds.path(i) for i in range(len(ds))].index(path)
    with pytest.raises(CorruptImageError) as info:
        ds[index]
    assert str(path) in str(info.value) and isinstance(info.value, DatasetFormatError)


# ---------------------------------------------------------------------------------------------
# transforms


def test_eval_transform_shape_value_and_centre(tmp_path):
    # 3:1 wide image: red | green | blue thirds; resize to 256 high -> 768 wide, centre 224 green
    image = np.zeros((100, 300, 3), np.uint8)
    image[:, :100, 0] = image[:, 100:200, 1] = image[:, 200:, 2] = 255
    root = tmp_path / "t"
    (root / "train" / "k").mkdir(parents=True)
    Image.fromarray(image).save(root / "train" / "k" / "i.png")
    ds = load_streaming_dataset("imagenet", "train", root, augment=False)
    x, y = ds[0]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and y == 0
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    expected = (torch.tensor([0.0, 1.0, 0.0]) - mean) / std
    torch.testing.assert_close(x, expected.view(3, 1, 1).expand(3, 224, 224))
    tall = torch.zeros(3, 300, 120, dtype=torch.uint8)
    assert resize_shorter_side(tall, 256).shape == (3, 640, 256)
    assert EvalTransform(224)(tall).shape == (3, 224, 224)
    assert EvalTransform(32).resize_size == 37 and EvalTransform(32)(tall).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="smaller than the crop"):
        center_crop(tall, 200)
    with pytest.raises(ValueError):
        EvalTransform(224, resize_size=200)


def test_random_resized_crop_box_follows_the_recipe():
    generator = torch.Generator().manual_seed(0)
    areas, ratios, tops = [], [], set()
    for _ in range(400):
        top, left, h, w = random_resized_crop_box(375, 500, generator)
        assert 0 <= top and top + h <= 375 and 0 <= left and left + w <= 500
        areas.append(h * w / (375 * 500))
        ratios.append(w / h)
        tops.add(top)
    assert 0.07 < min(areas) < 0.15 and max(areas) > 0.9
    assert min(ratios) > 0.74 and max(ratios) < 1.35 and len(tops) > 50
    # log-uniform ratios: about as many below 1 as above
    assert 120 < sum(math.log(r) < 0 for r in ratios) < 280
    # no box can fit a 1000:10 image at these ratios: centred crop clamped to ratio 4/3
    assert random_resized_crop_box(10, 1000, generator) == (0, 493, 10, 13)


def test_train_transform_is_reproducible_and_random():
    image = torch.from_numpy(_photo(np.random.default_rng(3), 120, 90)).permute(2, 0, 1)
    transform = TrainTransform(64)
    a = transform(image, torch.Generator().manual_seed(5))
    b = transform(image, torch.Generator().manual_seed(5))
    c = transform(image, torch.Generator().manual_seed(6))
    assert a.shape == (3, 64, 64) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    flips = TrainTransform(64, scale=(1.0, 1.0), ratio=(0.75, 0.75))  # whole image each time
    outs = [flips(image, torch.Generator().manual_seed(s)) for s in range(20)]
    assert any(torch.equal(o, outs[0].flip(-1)) for o in outs[1:])


# ---------------------------------------------------------------------------------------------
# the loader


def _epoch(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loader_batches_do_not_depend_on_workers(tree):
    ds = load_streaming_dataset("imagefolder", "train", tree, image_size=32)
    serial = make_loader(ds, batch_size=4, shuffle=True, workers=0, seed=3)
    parallel = make_loader(ds, batch_size=4, shuffle=True, workers=2, seed=3)
    assert len(serial) == 2
    first, again = _epoch(serial), _epoch(parallel)
    assert [x.shape for x, _ in first] == [(4, 3, 32, 32), (2, 3, 32, 32)]
    for (xa, ya), (xb, yb) in zip(first, again, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert sorted(torch.cat([y for _, y in first]).tolist()) == [0, 0, 0, 1, 1, 2]
    second = _epoch(serial)  # a new epoch: new order or new crops
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, second, strict=True))
    serial.set_epoch(0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, _epoch(serial), strict=True))
    assert serial.epoch == 1
    other_seed = _epoch(make_loader(ds, batch_size=4, shuffle=True, seed=4))
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, other_seed, strict=True))
    plain = _epoch(make_loader(ds, batch_size=6))
    assert plain[0][1].tolist() == [0, 0, 0, 1, 1, 2]
    assert isinstance(serial, torch.utils.data.DataLoader) and not serial.pin_memory
    assert serial.dataset.classes == ds.classes and serial.dataset.num_classes == 3


def test_loader_reports_or_skips_corrupt_images(tree):
    bad = tree / "train" / "cat" / "b.JPEG"
    bad.write_bytes(bad.read_bytes()[:300])
    ds = load_streaming_dataset("imagefolder", "train", tree, image_size=16)
    with pytest.raises(CorruptImageError) as info:
        _epoch(make_loader(ds, batch_size=3, workers=2))
    assert str(bad) in str(info.value)
    assert "Traceback" not in str(info.value)  # raised afresh in the main process
    loader = make_loader(ds, batch_size=3, workers=2, skip_corrupt=True)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image.*b\.JPEG"):
        batches = _epoch(loader)
    assert [len(y) for _, y in batches] == [2, 3]
    assert [p for p, _ in loader.skipped] == [str(bad)]


def test_distributed_sampling(tree, tmp_path):
    ds = load_streaming_dataset("imagefolder", "train", tree, image_size=16)
    with pytest.raises(ValueError, match="init_process_group"):
        make_loader(ds, batch_size=2, distributed=True)
    shares = [
        list(imagefolder_module._SeededDistributedSampler(ds, num_replicas=2, rank=r, seed=1))
        for r in (0, 1)
    ]
    indices = [i for share in shares for i, _ in share]
    assert sorted(indices) == list(range(6)) and len(shares[0]) == 3
    # the augmentation seed of an index is the same whatever sampler or rank draws it
    seeds = dict(pair for share in shares for pair in share)
    single = SeededSampler(6, shuffle=True, seed=1)
    assert dict(single) == seeds
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1
    )
    try:
        loader = make_loader(ds, batch_size=4, shuffle=True, seed=1, distributed=None)
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert sum(len(y) for _, y in loader) == 6
    finally:
        torch.distributed.destroy_process_group()
