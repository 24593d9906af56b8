"""Loading the in-memory datasets by name; the MNIST-style datasets and scikit-learn's digits.

This is the public face of the dataset registry (:mod:`spikebridge.data.registry`):
:func:`load_dataset` and :func:`list_datasets` read its records, and importing this module
imports every module that registers datasets, so the registry is complete.

Known datasets (see :func:`list_datasets`):

* ``fashion-mnist`` — 60000/10000 grey 28×28 images, 10 classes. Read from the ``data_dir``
  argument when one is given (and only there); otherwise from ``$SPIKEBRIDGE_DATA_DIR``, then
  the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).
* ``mnist`` — 60000/10000 grey 28×28 digits, 10 classes; only from ``data_dir`` or
  ``$SPIKEBRIDGE_DATA_DIR`` (there is no system copy).
* ``digits`` — scikit-learn's 1797 grey 8×8 digits, split 1437/360 with a fixed permutation.
* ``cifar10``, ``cifar100`` (fine labels), ``cifar100-coarse`` (the 20 superclasses) — 3×32×32
  colour images from the official python or binary release files, read from ``data_dir`` or
  ``$SPIKEBRIDGE_DATA_DIR`` (see :mod:`spikebridge.data.cifar`).

``nmnist``, ``cifar10-dvs`` and ``dvs-gesture`` are event-camera recordings, loaded as one count
image per recording (:mod:`spikebridge.data.event_sets`, which also gives their frames for an
SNN).

``imagenet`` and ``imagefolder`` are too large for memory: :func:`load_dataset` refuses them and
points to :func:`spikebridge.data.load_streaming_dataset` (see
:mod:`spikebridge.data.imagefolder`).

The MNIST-style datasets are read from the four standard IDX files (gzip-compressed or raw,
``.gz`` suffix optional). Within a search root ``R`` the files may lie in ``R/<name>/`` (so one
``$SPIKEBRIDGE_DATA_DIR`` can hold several datasets), in torchvision's ``R/FashionMNIST/raw/`` or
``R/MNIST/raw/``, or directly in ``R``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

# Importing these registers their datasets; with this module's own the registry is complete.
from spikebridge.data import cifar, event_sets, imagefolder  # noqa: F401
from spikebridge.data.idx import read_idx
from spikebridge.data.image_dataset import ImageDataset, memory_dataset_info
from spikebridge.data.locating import (
    DATA_DIR_ENV,
    _find_file,
    _first_directory_with_data,
    _search_roots,
)
from spikebridge.data.registry import DATASETS, dataset_key, dataset_names, register_dataset
from spikebridge.dataset_errors import DatasetFormatError, DatasetNotFoundError

__all__ = [
    "DATA_DIR_ENV",
    "STREAMING_DATASETS",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "ImageDataset",
    "list_datasets",
    "load_dataset",
]

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs the IDX files."""

SPLITS = ("train", "test")

_FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_DIGIT_CLASSES = tuple(str(d) for d in range(10))

FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)

# split -> (images file, labels file), without the optional ".gz"
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_DIGITS_TRAIN_SIZE = 1437
_DIGITS_SPLIT_SEED = 0


# --------------------------------------------------------------------------------------------
# assembling a dataset from arrays


def _make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    name: str,
    split: str,
    classes: tuple[str, ...],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    images_source: str,
    labels_source: str,
) -> ImageDataset:
    """Validate raw arrays and wrap them into an :class:`ImageDataset` (adds the channel dim)."""
    if images.ndim != 3:
        raise DatasetFormatError(
            f"{images_source}: expected images of shape [N, H, W], got shape {images.shape}"
        )
    if images.dtype != np.uint8:
        raise DatasetFormatError(f"{images_source}: expected uint8 images, got {images.dtype}")
    if labels.ndim != 1:
        raise DatasetFormatError(
            f"{labels_source}: expected labels of shape [N], got shape {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetFormatError(f"{labels_source}: expected integer labels, got {labels.dtype}")
    if len(images) != len(labels):
        raise DatasetFormatError(
            f"image/label count mismatch: {len(images)} images in {images_source} but "
            f"{len(labels)} labels in {labels_source}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DatasetFormatError(
            f"{labels_source}: labels must lie in [0, {len(classes) - 1}], "
            f"found range [{labels.min()}, {labels.max()}]"
        )
    return ImageDataset(
        images=torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        name=name,
        split=split,
        classes=classes,
        mean=mean,
        std=std,
    )


# --------------------------------------------------------------------------------------------
# MNIST-style IDX datasets


def _load_idx_dataset(
    *,
    name: str,
    split: str,
    data_dir: str | Path | None,
    subdirs: tuple[str, ...],
    system_dirs: tuple[Path, ...],
    classes: tuple[str, ...],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    hint: str,
) -> ImageDataset:
    images_stem, labels_stem = _IDX_FILES[split]

    def candidates() -> Iterator[Path]:
        for root in _search_roots(data_dir, system_dirs):
            # user roots may hold several datasets in subdirectories; system dirs are
            # dataset-specific
            yield from [root] if root in system_dirs else [root / s for s in subdirs] + [root]

    def probe(directory: Path) -> tuple[ImageDataset | None, str]:
        images_path = _find_file(directory, images_stem)
        labels_path = _find_file(directory, labels_stem)
        if images_path is None or labels_path is None:
            found = ((images_stem, images_path), (labels_stem, labels_path))
            missing = [stem for stem, p in found if p is None]
            return None, f"missing {' and '.join(f'{m}[.gz]' for m in missing)}"
        return _make_dataset(
            read_idx(images_path),
            read_idx(labels_path),
            name=name,
            split=split,
            classes=classes,
            mean=mean,
            std=std,
            images_source=str(images_path),
            labels_source=str(labels_path),
        ), ""

    return _first_directory_with_data(name, candidates(), probe, hint)


def _idx_hint(name: str, debian_package: str | None) -> str:
    files = ", ".join(f"{stem}[.gz]" for pair in _IDX_FILES.values() for stem in pair)
    ways = []
    if debian_package is not None:
        ways.append(f"install the Debian package: apt-get install {debian_package}")
    ways.append(
        f"pass --data-dir DIR (or set ${DATA_DIR_ENV}=DIR) where DIR, or DIR/{name}, holds the "
        f"four IDX files (gzip-compressed or raw): {files}"
    )
    return "To get the data, " + ("; or ".join(ways)) + "."


def _load_fashion_mnist(split: str, data_dir: str | Path | None) -> ImageDataset:
    return _load_idx_dataset(
        name="fashion-mnist",
        split=split,
        data_dir=data_dir,
        subdirs=("fashion-mnist", "FashionMNIST/raw"),
        system_dirs=(FASHION_MNIST_SYSTEM_DIR,),
        classes=_FASHION_MNIST_CLASSES,
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        hint=_idx_hint("fashion-mnist", "dataset-fashion-mnist"),
    )


register_dataset(memory_dataset_info("fashion-mnist", 10, 1, (28, 28), FASHION_MNIST_MEAN,
                                     FASHION_MNIST_STD, 2, loader=_load_fashion_mnist))


def _load_mnist(split: str, data_dir: str | Path | None) -> ImageDataset:
    return _load_idx_dataset(
        name="mnist",
        split=split,
        data_dir=data_dir,
        subdirs=("mnist", "MNIST/raw"),
        system_dirs=(),
        classes=_DIGIT_CLASSES,
        mean=MNIST_MEAN,
        std=MNIST_STD,
        hint=_idx_hint("mnist", None),
    )


register_dataset(memory_dataset_info("mnist", 10, 1, (28, 28), MNIST_MEAN, MNIST_STD, 2,
                                     loader=_load_mnist))


# --------------------------------------------------------------------------------------------
# scikit-learn digits


def _load_digits(split: str, data_dir: str | Path | None) -> ImageDataset:
    """scikit-learn's 8×8 digits; ``data_dir`` is ignored (the data ships with scikit-learn)."""
    del data_dir
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DatasetNotFoundError(
            "digits",
            [],
            [],
            "The 'digits' dataset comes with scikit-learn: pip install scikit-learn.",
        ) from exc
    bunch = load_digits()
    # values 0..16 -> 0..255
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    # Legacy RandomState: its stream is frozen by numpy's compatibility policy, so the split
    # never changes between numpy versions.
    order = np.random.RandomState(_DIGITS_SPLIT_SEED).permutation(len(images))
    train_idx, test_idx = order[:_DIGITS_TRAIN_SIZE], order[_DIGITS_TRAIN_SIZE:]
    train_pixels = images[train_idx].astype(np.float64) / 255.0
    mean, std = (float(train_pixels.mean()),), (float(train_pixels.std()),)
    index = train_idx if split == "train" else test_idx
    return _make_dataset(
        images[index],
        labels[index],
        name="digits",
        split=split,
        classes=_DIGIT_CLASSES,
        mean=mean,
        std=std,
        images_source="sklearn.datasets.load_digits",
        labels_source="sklearn.datasets.load_digits",
    )


# mean/std are computed from the training split
register_dataset(memory_dataset_info("digits", 10, 1, (8, 8), None, None, 2, loader=_load_digits))


# --------------------------------------------------------------------------------------------
# loading by name

STREAMING_DATASETS = tuple(dataset_names(streaming=True))
"""Datasets read image by image from disk (:func:`spikebridge.data.load_streaming_dataset`)."""


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` (datasets held in memory), sorted.

    The datasets streamed from disk are listed by
    :func:`spikebridge.data.list_streaming_datasets`.
    """
    return dataset_names(streaming=False)


def load_dataset(
    name: str, split: str = "train", data_dir: str | Path | None = None
) -> ImageDataset:
    """Load a dataset split into memory.

    Args:
        name: a name from :func:`list_datasets` (case-insensitive; ``_`` is read as ``-``).
        split: ``"train"`` or ``"test"``.
        data_dir: directory searched first for the dataset files (``--data-dir``); ignored by
            ``digits``.

    Raises:
        ValueError: unknown dataset name or split, or a streamed dataset (``imagenet``,
            ``imagefolder``).
        DatasetNotFoundError: the files are in none of the searched directories.
        DatasetFormatError: the files are inconsistent (counts, shapes, label range).
        IdxFormatError: an IDX file is malformed.
    """
    key = dataset_key(name)
    info = DATASETS.get(key)
    if info is not None and info.streaming:
        raise ValueError(
            f"dataset {key!r} is streamed from disk, not loaded into memory (ImageNet does not "
            f"fit in RAM): use spikebridge.data.load_streaming_dataset({key!r}, split, data_dir) "
            f"and spikebridge.data.make_loader(...)"
        )
    if info is None:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for dataset {key!r}; use one of {SPLITS}")
    return info.loader(split, data_dir)
