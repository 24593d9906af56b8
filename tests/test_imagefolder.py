"""Tests of the streamed ImageNet / ImageFolder dataset, its transforms and its loader."""

from __future__ import annotations

import math
import os
import shutil
import time
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


# ---------------------------------------------------------------------------------------------
# symbolic links to directories: not followed by default; followed with loop detection


@pytest.fixture
def no_follow_env(monkeypatch):
    """No $SPIKEBRIDGE_FOLLOW_LINKS from the environment (restored, even if a test sets it)."""
    monkeypatch.setenv("SPIKEBRIDGE_FOLLOW_LINKS", "")  # "": off


def _tiny_tree(split: Path, classes=("a", "b", "c"), per_class: int = 3) -> None:
    for name in classes:
        (split / name).mkdir(parents=True)
        for k in range(per_class):
            Image.new("RGB", (4, 4), (40 * k, 0, 0)).save(split / name / f"{name}{k}.png")


def _real_label_of(dataset: ImageFolderDataset) -> dict[Path, int]:
    """Every listed file, resolved, with its label; the names are unique (nothing twice)."""
    found = [(dataset.path(i).resolve(), int(y)) for i, y in enumerate(dataset.labels)]
    assert len({path for path, _ in found}) == len(found), "an image is listed twice"
    return dict(found)


@pytest.mark.parametrize("follow", [False, True], ids=["default", "follow_links"])
def test_two_link_loops_end_at_once_with_nine_images(tmp_path, no_follow_env, follow):
    val = tmp_path / "val"
    _tiny_tree(val)
    (val / "a" / "loop1").symlink_to("..")
    (val / "a" / "loop2").symlink_to("..")  # two loops: endless before (os.walk followlinks)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = ImageFolderDataset(val, follow_links=follow)
    assert time.perf_counter() - start < 1.0
    assert len(dataset) == 9 and dataset.classes == ("a", "b", "c")
    assert dataset.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    labels = _real_label_of(dataset)
    assert all(path.parent.name == dataset.classes[label] for path, label in labels.items())
    messages = [str(w.message) for w in caught]
    if follow:
        assert not messages
    else:  # the links are reported, in one warning naming the way to read them
        assert len(messages) == 1 and "2 symbolic link(s)" in messages[0]
        assert "--follow-links" in messages[0]


def test_one_link_loop_keeps_every_label(tmp_path, no_follow_env):
    val = tmp_path / "val"
    _tiny_tree(val)
    (val / "a" / "up").symlink_to("..")  # was: 369 images, b's and c's labelled a
    for follow in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = ImageFolderDataset(val, follow_links=follow)
        assert len(dataset) == 9
        assert [dataset.path(i).relative_to(val).parts[0] for i in range(9)] == (
            ["a"] * 3 + ["b"] * 3 + ["c"] * 3)
        assert dataset.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3


def test_follow_links_reads_linked_folders_once_and_ends_loops(tmp_path, no_follow_env):
    val = tmp_path / "data" / "val"
    _tiny_tree(val)
    elsewhere = tmp_path / "elsewhere"
    _tiny_tree(elsewhere, classes=("d",), per_class=2)
    (elsewhere / "d" / "more").mkdir()
    Image.new("RGB", (4, 4)).save(elsewhere / "d" / "more" / "d9.png")
    (val / "d").symlink_to(elsewhere / "d")  # a class folder elsewhere
    (elsewhere / "d" / "to-split").symlink_to(val)  # a loop through the split folder
    (elsewhere / "d" / "more" / "self").symlink_to("..")  # a loop inside the linked folder
    (val / "a" / "b-again").symlink_to("../b")  # another class's folder
    (val / "c" / "d-again").symlink_to(elsewhere / "d" / "more")  # a folder of class d
    start = time.perf_counter()
    dataset = ImageFolderDataset(val, follow_links=True)
    assert time.perf_counter() - start < 1.0
    assert dataset.classes == ("a", "b", "c", "d")
    assert len(dataset) == 9 + 3  # d's 2 images and more/d9.png, each once
    labels = _real_label_of(dataset)
    assert labels[(elsewhere / "d" / "more" / "d9.png").resolve()] == 3
    assert all(path.name.startswith(dataset.classes[label]) for path, label in labels.items())
    # the same listing through load_streaming_dataset, and through $SPIKEBRIDGE_FOLLOW_LINKS
    shutil.copytree(val, tmp_path / "data" / "train", symlinks=True)
    streamed = load_streaming_dataset("imagefolder", "val", tmp_path / "data", follow_links=True)
    assert streamed.classes == dataset.classes and len(streamed) == 12
    assert imagefolder_module.FOLLOW_LINKS_ENV == "SPIKEBRIDGE_FOLLOW_LINKS"
    os.environ["SPIKEBRIDGE_FOLLOW_LINKS"] = "1"  # restored by the fixture
    assert len(load_streaming_dataset("imagefolder", "val", tmp_path / "data")) == 12


def test_linked_folders_are_skipped_by_default(tmp_path, no_follow_env):
    data = tmp_path / "data"
    _tiny_tree(tmp_path / "elsewhere", classes=("a", "b"), per_class=2)
    for split in ("train", "val"):
        (data / split).mkdir(parents=True)
        for name in ("a", "b"):
            (data / split / name).symlink_to(tmp_path / "elsewhere" / name)
    # nothing left: the message says why and how to read them (and a warning about train/'s)
    with pytest.raises(DatasetNotFoundError) as info, pytest.warns(UserWarning, match="train"):
        load_streaming_dataset("imagefolder", "val", data)
    message = str(info.value)
    assert "2 symbolic link(s) to directories were not followed" in message
    assert "follow_links=True" in message and "--follow-links" in message
    assert len(load_streaming_dataset("imagefolder", "val", data, follow_links=True)) == 4
    # linked class folders in train/ only: val's real folders are not among the classes read,
    # and the warning says why
    for name in ("a", "b"):
        (data / "val" / name).unlink()
    shutil.copytree(tmp_path / "elsewhere", data / "val", dirs_exist_ok=True)
    with pytest.warns(UserWarning, match=r"train: 2 class folder\(s\) are symbolic links"):
        with pytest.raises(DatasetFormatError, match="not among the 0 training classes"):
            load_streaming_dataset("imagefolder", "val", data)
    for name in ("a", "b"):
        shutil.rmtree(data / "val" / name)
        (data / "val" / name).symlink_to(tmp_path / "elsewhere" / name)
    # a real class folder next to them: read, the linked ones skipped with a warning; a linked
    # sub-folder is skipped too, a linked image *file* is read
    real = data / "val" / "c"
    real.mkdir()
    Image.new("RGB", (4, 4)).save(real / "c0.png")
    (real / "c1.png").symlink_to(tmp_path / "elsewhere" / "a" / "a0.png")
    (real / "sub").symlink_to(tmp_path / "elsewhere" / "b")
    with pytest.warns(UserWarning, match=r"3 symbolic link\(s\) to directories were not followed"):
        dataset = ImageFolderDataset(data / "val")
    assert dataset.classes == ("c",)
    assert [dataset.path(i).name for i in range(len(dataset))] == ["c0.png", "c1.png"]
    # a split folder that is itself a link is read as usual (only links inside it count)
    (tmp_path / "linked-split").mkdir()
    (tmp_path / "linked-split" / "val").symlink_to(tmp_path / "elsewhere")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_streaming_dataset("imagefolder", "val", tmp_path / "linked-split")) == 4


def test_cli_follow_links_reaches_the_image_folder_walk(tmp_path, no_follow_env):
    from spikebridge.cli import build_parser, main

    for command in (["evaluate", "--model", "m"], ["train", "--out", "m"]):
        args = build_parser().parse_args([*command, "--follow-links"])
        assert args.follow_links is True
        assert build_parser().parse_args(command).follow_links is False
    assert not imagefolder_module._follow_default(None)
    # main() hands the flag to the walk (then fails on the missing model: exit 2)
    assert main(["evaluate", "--model", str(tmp_path / "none"), "--follow-links"]) == 2
    assert imagefolder_module._follow_default(None)


# ---------------------------------------------------------------------------------------------
# the pixel bound: checked from the header, before anything is decoded


def _png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width × height`` 1-bit pixels (the data is cut short)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) is patched to declare ``width × height``."""
    import io
    import struct

    out = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(out, "JPEG")
    raw = bytearray(out.getvalue())
    sof = raw.index(b"\xff\xc0")
    raw[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(raw)


def test_a_12000_square_png_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(path)  # ~17 KB that would decode to 432 MB RGB
    assert path.stat().st_size < 100_000
    assert imagefolder_module.MAX_IMAGE_PIXELS == 40_000_000
    for decoder in ("auto", "pil"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Pillow's DecompressionBombWarning never fires
            with pytest.raises(CorruptImageError) as info:
                decode_image(path, decoder)
        assert str(info.value) == (
            f"{path}: cannot read this image (12000 × 12000 = 144,000,000 pixels, more than the "
            f"MAX_IMAGE_PIXELS = 40,000,000 this reader decodes)")


@pytest.mark.parametrize("kind", ["png", "jpeg"])
@pytest.mark.parametrize("decoder", ["auto", "pil", "simplejpeg"])
def test_declared_sizes_above_the_bound_are_refused_by_every_decoder(tmp_path, kind, decoder):
    if decoder == "simplejpeg" and not has_simplejpeg:
        pytest.skip("simplejpeg is not installed")
    make = _png_declaring if kind == "png" else _jpeg_declaring
    # 7000² just above our bound; 20000² above twice Pillow's own (its DecompressionBombError)
    for side in (7000, 20000):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(CorruptImageError, match=rf"{side} × {side} = [\d,]+ pixels, "
                               "more than the MAX_IMAGE_PIXELS"):
                decode_image(make(side, side), decoder)
    # below the bound the same files are decoded as before (the JPEG), or fail as truncated
    assert decode_image(_jpeg_declaring(16, 16), decoder).shape == (16, 16, 3)
    with pytest.raises(CorruptImageError) as info:
        decode_image(_png_declaring(64, 64), decoder)
    assert "MAX_IMAGE_PIXELS" not in str(info.value)


def test_the_bound_is_the_module_constant_and_the_loader_names_the_file(tmp_path, monkeypatch,
                                                                         no_follow_env):
    split = tmp_path / "val"
    _tiny_tree(split, classes=("a",), per_class=1)
    big = split / "a" / "big.png"
    Image.new("RGB", (300, 200)).save(big)
    monkeypatch.setattr(imagefolder_module, "MAX_IMAGE_PIXELS", 50_000)
    dataset = ImageFolderDataset(split, image_size=4)
    with pytest.raises(CorruptImageError, match=r"300 × 200 = 60,000 pixels.*50,000") as info:
        _epoch(make_loader(dataset, batch_size=2))
    assert str(big) in str(info.value)
    loader = make_loader(dataset, batch_size=2, skip_corrupt=True)
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        assert sum(len(y) for _, y in _epoch(loader)) == 1
