"""Image-classification datasets held in memory, and a registry to load them by name.

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

``imagenet`` and ``imagefolder`` are too large for memory: :func:`load_dataset` refuses them and
points to :func:`spikebridge.data.load_streaming_dataset` (see
:mod:`spikebridge.data.imagefolder`).

The MNIST-style datasets are read from the four standard IDX files (gzip-compressed or raw,
``.gz`` suffix optional). Within a search root ``R`` the files may lie in ``R/<name>/`` (so one
``$SPIKEBRIDGE_DATA_DIR`` can hold several datasets), in torchvision's ``R/FashionMNIST/raw/`` or
``R/MNIST/raw/``, or directly in ``R``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from spikebridge.data.errors import DatasetFormatError, DatasetNotFoundError
from spikebridge.data.idx import read_idx

T = TypeVar("T")

__all__ = [
    "DATA_DIR_ENV",
    "STREAMING_DATASETS",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "ImageDataset",
    "list_datasets",
    "load_dataset",
]

DATA_DIR_ENV = "SPIKEBRIDGE_DATA_DIR"
"""Environment variable naming a directory searched for dataset files."""

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


@dataclass
class ImageDataset:
    """An image-classification dataset held in memory.

    Attributes:
        images: uint8 tensor ``[N, C, H, W]``.
        labels: int64 tensor ``[N]`` with values in ``[0, num_classes)``.
        name: registry name of the dataset (e.g. ``"fashion-mnist"``).
        split: ``"train"`` or ``"test"``.
        classes: human-readable class names; ``labels`` index into it.
        mean: per-channel mean of the images scaled to ``[0, 1]`` (the normalisation constants).
        std: per-channel standard deviation of the images scaled to ``[0, 1]``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    split: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DatasetFormatError(
                f"{self.name}/{self.split}: images must be a uint8 tensor [N, C, H, W], "
                f"got {self.images.dtype} of shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise DatasetFormatError(
                f"{self.name}/{self.split}: labels must be an int64 tensor [N], "
                f"got {self.labels.dtype} of shape {tuple(self.labels.shape)}"
            )
        if len(self.images) != len(self.labels):
            raise DatasetFormatError(
                f"{self.name}/{self.split}: {len(self.images)} images but {len(self.labels)} labels"
            )
        self.classes = tuple(self.classes)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        channels = self.images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise DatasetFormatError(
                f"{self.name}/{self.split}: mean/std need one value per channel ({channels}), "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if any(not s > 0 for s in self.std):
            raise DatasetFormatError(f"{self.name}/{self.split}: std must be > 0, got {self.std}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """Number of image channels ``C``."""
        return int(self.images.shape[1])

    @property
    def input_size(self) -> tuple[int, int]:
        """Image size ``(H, W)``."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def fingerprint(self) -> str:
        """SHA-256 of the images and labels (shapes included): the identity of this exact data.

        A checkpoint records its test set's fingerprint, so evaluating it later on other files
        under the same dataset name (MNIST's digits handed over as Fashion-MNIST, a different
        subset) is caught (docs/reliability.md).
        """
        digest = hashlib.sha256()
        digest.update(repr((tuple(self.images.shape), tuple(self.labels.shape))).encode())
        digest.update(self.images.contiguous().numpy().tobytes())
        digest.update(self.labels.contiguous().numpy().tobytes())
        return digest.hexdigest()

    def subset(self, n: int | None, seed: int = 0) -> ImageDataset:
        """Return a random subset of ``n`` samples (not stratified), or ``self``.

        The subset is the first ``n`` indices of a permutation drawn with ``seed``, so subsets of
        different sizes with the same seed are nested. ``mean``/``std`` are kept from the full
        dataset.

        Args:
            n: subset size; ``None`` or ``n >= len(self)`` returns ``self`` unchanged.
            seed: seed of the permutation.
        """
        if n is None or n >= len(self):
            return self
        if n < 0:
            raise ValueError(f"subset size must be >= 0 or None, got {n}")
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(self), generator=generator)[:n]
        return ImageDataset(
            images=self.images[index],
            labels=self.labels[index],
            name=self.name,
            split=self.split,
            classes=self.classes,
            mean=self.mean,
            std=self.std,
        )


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


def _find_file(directory: Path, stem: str) -> Path | None:
    """``directory/stem`` or ``directory/stem.gz``, whichever exists (raw name first)."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _search_roots(data_dir: str | Path | None, system_dirs: tuple[Path, ...]) -> list[Path]:
    """``data_dir`` alone when given (an explicit directory is never silently replaced by
    another copy of the data); otherwise ``$SPIKEBRIDGE_DATA_DIR``, then ``system_dirs``."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    roots: list[Path] = []
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    if env:
        roots.append(Path(env).expanduser())
    roots.extend(system_dirs)
    return roots


def _first_directory_with_data(
    name: str,
    candidates: Iterable[Path],
    probe: Callable[[Path], tuple[T | None, str]],
    hint: str,
) -> T:
    """``probe``'s result for the first existing candidate directory it accepts, else a
    :class:`DatasetNotFoundError` listing every directory searched and why each failed.

    ``probe(directory)`` returns ``(result, "")`` on success or ``(None, why)``; directories
    that do not exist, or were already searched, are not probed.
    """
    searched: list[Path] = []
    details: list[str] = []
    for directory in candidates:
        if directory in searched:
            continue
        searched.append(directory)
        if not directory.is_dir():
            details.append(f"{directory} (no such directory)")
            continue
        result, why = probe(directory)
        if result is not None:
            return result
        details.append(f"{directory} ({why})")
    if not searched:
        details.append(f"no directory to search (no --data-dir given and ${DATA_DIR_ENV} unset)")
    raise DatasetNotFoundError(name, searched, details, hint)


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


# --------------------------------------------------------------------------------------------
# registry


def _load_cifar10(split: str, data_dir: str | Path | None) -> ImageDataset:
    from spikebridge.data.cifar import load_cifar10  # cifar imports this module

    return load_cifar10(split, data_dir)


def _load_cifar100(split: str, data_dir: str | Path | None) -> ImageDataset:
    from spikebridge.data.cifar import load_cifar100

    return load_cifar100(split, data_dir, labels="fine")


def _load_cifar100_coarse(split: str, data_dir: str | Path | None) -> ImageDataset:
    from spikebridge.data.cifar import load_cifar100

    return load_cifar100(split, data_dir, labels="coarse")


_REGISTRY: dict[str, Callable[[str, str | Path | None], ImageDataset]] = {
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "cifar100-coarse": _load_cifar100_coarse,
    "digits": _load_digits,
    "fashion-mnist": _load_fashion_mnist,
    "mnist": _load_mnist,
}

def dataset_key(name: str) -> str:
    """The registry spelling of a dataset name: ``Fashion_MNIST`` → ``fashion-mnist``."""
    return name.strip().lower().replace("_", "-")


STREAMING_DATASETS = ("imagefolder", "imagenet")
"""Datasets read image by image from disk (:func:`spikebridge.data.load_streaming_dataset`)."""


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` (datasets held in memory), sorted.

    The datasets streamed from disk are listed by
    :func:`spikebridge.data.list_streaming_datasets`.
    """
    return sorted(_REGISTRY)


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
    if key in STREAMING_DATASETS:
        raise ValueError(
            f"dataset {key!r} is streamed from disk, not loaded into memory (ImageNet does not "
            f"fit in RAM): use spikebridge.data.load_streaming_dataset({key!r}, split, data_dir) "
            f"and spikebridge.data.make_loader(...)"
        )
    if key not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for dataset {key!r}; use one of {SPLITS}")
    return _REGISTRY[key](split, data_dir)
