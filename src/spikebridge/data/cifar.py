"""CIFAR-10 and CIFAR-100 from the official release files, as users download and extract them.

Supported layouts (from https://www.cs.toronto.edu/~kriz/cifar.html):

* CIFAR-10, python version — ``cifar-10-batches-py/``: ``data_batch_1`` … ``data_batch_5``,
  ``test_batch`` and ``batches.meta``, each a pickled dict (``data``: uint8 ``[N, 3072]``,
  ``labels``: N ints in ``[0, 10)``).
* CIFAR-10, binary version — ``cifar-10-batches-bin/``: ``data_batch_1.bin`` …
  ``data_batch_5.bin``, ``test_batch.bin`` and ``batches.meta.txt``; each record is 1 label byte
  followed by 3072 pixel bytes.
* CIFAR-100, python version — ``cifar-100-python/``: ``train``, ``test`` and ``meta`` (dicts with
  ``data``, ``fine_labels`` in ``[0, 100)`` and ``coarse_labels`` in ``[0, 20)``).
* CIFAR-100, binary version — ``cifar-100-binary/``: ``train.bin``, ``test.bin`` (records of
  1 coarse label byte, 1 fine label byte, 3072 pixel bytes), ``fine_label_names.txt`` and
  ``coarse_label_names.txt``.

The 3072 pixel bytes of an image are the 1024 red, then green, then blue values of a 32×32
image in row-major order, so they reshape directly to ``[3, 32, 32]``.

The pickles are read with :mod:`spikebridge.data.safe_pickle`, which refuses anything but numpy
arrays and plain containers, so a tampered file cannot run code. Files are validated (keys,
shapes, dtype, label range, record length) and errors name the file. A python-version file whose
MD5 differs from the official release only triggers a :class:`ChecksumWarning` (subsets and
re-saved copies are legitimate); the number of images is whatever the files hold, up to the
official count per file (10 000, or 50 000 in CIFAR-100's ``train``): a file claiming more is
refused. The meta files are optional: without them the standard class names are used.

Where the files are looked for: in the ``data_dir`` argument (``--data-dir``) when one is given,
otherwise in ``$SPIKEBRIDGE_DATA_DIR``. Within such a root ``R`` the files may lie in the
extracted folder ``R/cifar-10-batches-py/`` (torchvision's ``root`` convention), in
``R/cifar10/cifar-10-batches-py/``, in ``R/cifar10/`` or directly in ``R`` (so ``R`` may be the
extracted folder itself); likewise for the binary and CIFAR-100 folders.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spikebridge.data.image_dataset import ImageDataset, memory_dataset_info
from spikebridge.data.locating import DATA_DIR_ENV, _first_directory_with_data, _search_roots
from spikebridge.data.registry import register_dataset
from spikebridge.data.safe_pickle import RefusedPickleError, safe_load
from spikebridge.dataset_errors import DatasetFormatError

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR100_COARSE_CLASSES",
    "CIFAR100_FINE_CLASSES",
    "OFFICIAL_MD5",
    "ChecksumWarning",
    "load_cifar10",
    "load_cifar100",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

_PIXELS = 3 * 32 * 32

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
"""CIFAR-10 class names (``label_names`` of ``batches.meta``)."""

CIFAR100_FINE_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip
"""CIFAR-100 fine class names (``fine_label_names`` of ``meta``)."""

CIFAR100_COARSE_CLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)  # fmt: skip
"""CIFAR-100 coarse (superclass) names (``coarse_label_names`` of ``meta``)."""

OFFICIAL_MD5: dict[str, dict[str, str]] = {
    "cifar-10-batches-py": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
    },
    "cifar-100-python": {
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    },
}
"""MD5 of the official python-version files, by release folder and file name."""


class ChecksumWarning(UserWarning):
    """A dataset file differs from the official release (a subset or a modified copy)."""


@dataclass(frozen=True)
class _Layout:
    """One on-disk layout of a dataset: the release folder name and its files."""

    kind: str  # "python" or "binary"
    folder: str
    files: dict[str, tuple[str, ...]]  # split -> data files
    meta: tuple[str, ...]  # optional files with the class names
    md5: dict[str, str]


@dataclass(frozen=True)
class _Spec:
    name: str
    label_keys: tuple[str, ...]  # python keys, in the order of the binary label bytes
    num_classes: tuple[int, ...]  # per label key
    layouts: tuple[_Layout, ...]
    archives: tuple[str, str]  # python, binary download names
    images_per_file: dict[str, int]  # per split, in the official release: the most a file holds


_CIFAR10 = _Spec(
    name="cifar10",
    label_keys=("labels",),
    num_classes=(10,),
    layouts=(
        _Layout(
            "python",
            "cifar-10-batches-py",
            {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
            ("batches.meta",),
            OFFICIAL_MD5["cifar-10-batches-py"],
        ),
        _Layout(
            "binary",
            "cifar-10-batches-bin",
            {
                "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
                "test": ("test_batch.bin",),
            },
            ("batches.meta.txt",),
            {},
        ),
    ),
    archives=("cifar-10-python.tar.gz", "cifar-10-binary.tar.gz"),
    images_per_file={"train": 10_000, "test": 10_000},  # 5 batches of 10 000 + 1
)

_CIFAR100 = _Spec(
    name="cifar100",
    label_keys=("coarse_labels", "fine_labels"),
    num_classes=(20, 100),
    layouts=(
        _Layout(
            "python",
            "cifar-100-python",
            {"train": ("train",), "test": ("test",)},
            ("meta",),
            OFFICIAL_MD5["cifar-100-python"],
        ),
        _Layout(
            "binary",
            "cifar-100-binary",
            {"train": ("train.bin",), "test": ("test.bin",)},
            ("coarse_label_names.txt", "fine_label_names.txt"),
            {},
        ),
    ),
    archives=("cifar-100-python.tar.gz", "cifar-100-binary.tar.gz"),
    images_per_file={"train": 50_000, "test": 10_000},  # one file per split
)


# --------------------------------------------------------------------------------------------
# locating the files


def _hint(spec: _Spec) -> str:
    python, binary = spec.layouts
    return (
        f"To get the data, download https://www.cs.toronto.edu/~kriz/{spec.archives[0]} (or the "
        f"binary version {spec.archives[1]}), extract it (tar xzf {spec.archives[0]}) and pass "
        f"--data-dir DIR (or set ${DATA_DIR_ENV}=DIR) where DIR is the extracted "
        f"{python.folder}/ (or {binary.folder}/) folder or the folder that contains it."
    )


def _describe(files: tuple[str, ...]) -> str:
    return ", ".join(files) if len(files) <= 2 else f"{files[0]} … {files[-1]}"


def _locate(spec: _Spec, split: str, data_dir: str | Path | None) -> tuple[_Layout, Path]:
    """The first directory holding every data file of ``split`` in one of ``spec``'s layouts."""

    def candidates() -> Iterator[Path]:
        for root in _search_roots(data_dir, ()):
            yield from [root / layout.folder for layout in spec.layouts]
            yield from [root / spec.name / layout.folder for layout in spec.layouts]
            yield from [root / spec.name, root]

    def probe(directory: Path) -> tuple[tuple[_Layout, Path] | None, str]:
        partial = []
        for layout in spec.layouts:
            wanted = layout.files[split]
            missing = [f for f in wanted if not (directory / f).is_file()]
            if not missing:
                return (layout, directory), ""
            if len(missing) < len(wanted):
                partial.append(f"missing {', '.join(missing)} of the {layout.kind} version")
        if not partial:
            expected = " or ".join(_describe(layout.files[split]) for layout in spec.layouts)
            partial.append(f"no {spec.name} {split} files: expected {expected}")
        return None, "; ".join(partial)

    return _first_directory_with_data(spec.name, candidates(), probe, _hint(spec))


# --------------------------------------------------------------------------------------------
# reading the files


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


_WARNED_DIRECTORIES: set[str] = set()  # one checksum warning per directory and process


def _check_md5(layout: _Layout, paths: list[Path], what: str) -> None:
    """Warn — once per directory and process, however many splits a command loads from it —
    about files whose MD5 differs from the official release."""
    directory = str(paths[0].parent.resolve()) if paths else ""
    if directory in _WARNED_DIRECTORIES:
        return
    differ = [p for p in paths if p.name in layout.md5 and _md5(p) != layout.md5[p.name]]
    if differ:
        _WARNED_DIRECTORIES.add(directory)
        warnings.warn(
            f"{what}: {len(differ)} file(s) differ from the official {layout.folder} release "
            f"(MD5 mismatch): {', '.join(str(p) for p in differ)}; loading them anyway. This "
            "is a subset or a modified copy of the data set: fine for your own experiments, but "
            "accuracies on it are not comparable with the paper's or with runs on the official "
            "files",
            ChecksumWarning,
            stacklevel=4,
        )


def _load_pickle(path: Path) -> Any:
    try:
        return safe_load(path)
    except RefusedPickleError as exc:  # names the file and why, in one sentence
        raise DatasetFormatError(str(exc)) from exc
    except OSError:
        raise
    except Exception as exc:  # truncated/corrupt pickles raise many types (EOFError, ...)
        raise DatasetFormatError(
            f"{path}: not a readable CIFAR pickle ({type(exc).__name__}: {exc})"
        ) from exc


def _as_str_keys(obj: Any, path: Path) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _labels_array(values: Any, key: str, n: int, num_classes: int, path: Path) -> np.ndarray:
    if isinstance(values, np.ndarray):
        labels = values
    elif isinstance(values, list | tuple):
        if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values):
            raise DatasetFormatError(f"{path}: {key!r} must hold integers")
        labels = np.asarray(values, dtype=np.int64)
    else:
        raise DatasetFormatError(f"{path}: {key!r} must be a list of integers, got {type(values)}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetFormatError(
            f"{path}: {key!r} must be a 1-D integer array, got {labels.dtype} of shape "
            f"{labels.shape}"
        )
    if len(labels) != n:
        raise DatasetFormatError(f"{path}: {n} images but {len(labels)} {key!r}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DatasetFormatError(
            f"{path}: {key!r} must lie in [0, {num_classes - 1}], found range "
            f"[{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.int64)


def _check_count(spec: _Spec, split: str, n: int, path: Path) -> None:
    """Refuse a file of ``split`` holding more images than the official release's files do."""
    most = spec.images_per_file[split]
    if n > most:
        raise DatasetFormatError(
            f"{path}: holds {n:,} images, but a {spec.name} {split} file holds at most {most:,} "
            f"(the official release's count); it is not a {spec.name} file"
        )


def _read_python_file(
    spec: _Spec, path: Path, split: str
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(images uint8 [N, 3, 32, 32], [labels int64 [N] per label key])`` of one pickle."""
    batch = _as_str_keys(_load_pickle(path), path)
    needed = ("data", *spec.label_keys)
    if any(k not in batch for k in needed):
        raise DatasetFormatError(
            f"{path}: expected a dict with keys {', '.join(needed)}; found keys "
            f"{', '.join(sorted(map(str, batch)))}"
        )
    data = batch["data"]
    if not isinstance(data, np.ndarray):
        raise DatasetFormatError(f"{path}: 'data' must be a numpy array, got {type(data)}")
    if data.dtype != np.uint8:
        raise DatasetFormatError(f"{path}: 'data' must be uint8, got {data.dtype}")
    if data.ndim != 2 or data.shape[1] != _PIXELS or data.shape[0] == 0:
        raise DatasetFormatError(
            f"{path}: 'data' must have shape [N, {_PIXELS}] with N >= 1 (3×32×32 images), got "
            f"{data.shape}"
        )
    n = data.shape[0]
    _check_count(spec, split, n, path)
    labels = [
        _labels_array(batch[key], key, n, k, path)
        for key, k in zip(spec.label_keys, spec.num_classes, strict=True)
    ]
    return data.reshape(n, 3, 32, 32), labels


def _read_binary_file(
    spec: _Spec, path: Path, split: str
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Same as :func:`_read_python_file` for the binary version (fixed-length records)."""
    label_bytes = len(spec.label_keys)
    record = label_bytes + _PIXELS
    _check_count(spec, split, path.stat().st_size // record, path)  # before reading it all
    raw = path.read_bytes()
    if not raw or len(raw) % record:
        raise DatasetFormatError(
            f"{path}: {len(raw)} bytes is not a whole, non-zero number of {record}-byte records "
            f"({label_bytes} label byte(s) + {_PIXELS} pixel bytes); the file is truncated or "
            f"not a {spec.name} binary file"
        )
    _check_count(spec, split, len(raw) // record, path)
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    labels = []
    for column, (key, k) in enumerate(zip(spec.label_keys, spec.num_classes, strict=True)):
        values = records[:, column]
        if int(values.max()) >= k:
            bad = int(np.argmax(values >= k))
            raise DatasetFormatError(
                f"{path}: label byte {column} of record {bad} is {values[bad]}, outside "
                f"[0, {k - 1}] ({key}); the file is corrupt or not a {spec.name} binary file"
            )
        labels.append(values.astype(np.int64))
    return records[:, label_bytes:].reshape(-1, 3, 32, 32), labels


def _names_from_meta(layout: _Layout, directory: Path, spec: _Spec) -> list[tuple[str, ...] | None]:
    """Class names per label key from the meta file(s), ``None`` where absent."""
    if layout.kind == "python":
        path = directory / layout.meta[0]
        if not path.is_file():
            return [None] * len(spec.label_keys)
        meta = _as_str_keys(_load_pickle(path), path)
        names: list[tuple[str, ...] | None] = []
        for key in spec.label_keys:
            meta_key = "label_names" if key == "labels" else key.replace("labels", "label_names")
            values = meta.get(meta_key)
            if values is None:
                raise DatasetFormatError(f"{path}: no {meta_key!r} in the meta file")
            if not isinstance(values, list | tuple) or not all(
                isinstance(v, str | bytes) for v in values
            ):
                raise DatasetFormatError(f"{path}: {meta_key!r} must be a list of strings")
            names.append(tuple(v.decode("latin1") if isinstance(v, bytes) else v for v in values))
        return names
    names = []
    for filename in layout.meta:
        path = directory / filename
        if not path.is_file():
            names.append(None)
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetFormatError(f"{path}: not a text file of class names ({exc})") from exc
        names.append(tuple(line.strip() for line in text.splitlines() if line.strip()))
    return names


def _class_names(layout: _Layout, directory: Path, spec: _Spec) -> list[tuple[str, ...]]:
    defaults = (
        [CIFAR10_CLASSES] if spec is _CIFAR10 else [CIFAR100_COARSE_CLASSES, CIFAR100_FINE_CLASSES]
    )
    meta_files = layout.meta if layout.kind == "binary" else layout.meta * len(spec.label_keys)
    result = []
    for found, default, k, meta_file in zip(
        _names_from_meta(layout, directory, spec),
        defaults,
        spec.num_classes,
        meta_files,
        strict=True,
    ):
        if found is not None and len(found) != k:
            raise DatasetFormatError(
                f"{directory / meta_file}: expected {k} class names, found {len(found)}"
            )
        result.append(found if found is not None else default)
    return result


def _load(spec: _Spec, split: str, data_dir: str | Path | None, label_key: str) -> ImageDataset:
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r} for {spec.name}; use 'train' or 'test'")
    layout, directory = _locate(spec, split, data_dir)
    paths = [directory / f for f in layout.files[split]]
    read = _read_python_file if layout.kind == "python" else _read_binary_file
    parts = [read(spec, p, split) for p in paths]
    _check_md5(layout, paths, f"{spec.name}/{split}")
    which = spec.label_keys.index(label_key)
    classes = _class_names(layout, directory, spec)[which]
    images = np.concatenate([images for images, _ in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([lab[which] for _, lab in parts])
    is_cifar10 = spec is _CIFAR10
    suffix = "-coarse" if label_key == "coarse_labels" else ""
    return ImageDataset(
        images=torch.from_numpy(np.ascontiguousarray(images)),
        labels=torch.from_numpy(labels),
        name=spec.name + suffix,
        split=split,
        classes=classes,
        mean=CIFAR10_MEAN if is_cifar10 else CIFAR100_MEAN,
        std=CIFAR10_STD if is_cifar10 else CIFAR100_STD,
    )


def load_cifar10(split: str = "train", data_dir: str | Path | None = None) -> ImageDataset:
    """Load a CIFAR-10 split (python or binary version) into memory.

    Args:
        split: ``"train"`` (the five data batches, concatenated in order) or ``"test"``.
        data_dir: the extracted ``cifar-10-batches-py``/``cifar-10-batches-bin`` folder or a
            folder containing it; default ``$SPIKEBRIDGE_DATA_DIR``.

    Returns:
        An :class:`ImageDataset` named ``"cifar10"``: uint8 images ``[N, 3, 32, 32]``, 10 classes,
        normalisation mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616).

    Raises:
        DatasetNotFoundError: no searched folder holds all the files of the split.
        DatasetFormatError: a file is malformed (the message names it), including pickles that
            would run code.

    Warns:
        ChecksumWarning: a python-version file differs from the official release.
    """
    return _load(_CIFAR10, split, data_dir, "labels")


def load_cifar100(
    split: str = "train", data_dir: str | Path | None = None, labels: str = "fine"
) -> ImageDataset:
    """Load a CIFAR-100 split (python or binary version) into memory.

    Args:
        split: ``"train"`` or ``"test"``.
        data_dir: the extracted ``cifar-100-python``/``cifar-100-binary`` folder or a folder
            containing it; default ``$SPIKEBRIDGE_DATA_DIR``.
        labels: ``"fine"`` (100 classes; dataset name ``"cifar100"``) or ``"coarse"`` (the 20
            superclasses; dataset name ``"cifar100-coarse"``).

    Returns:
        An :class:`ImageDataset`: uint8 images ``[N, 3, 32, 32]``, normalisation mean
        (0.5071, 0.4865, 0.4409), std (0.2673, 0.2564, 0.2762).

    Raises:
        ValueError: ``labels`` is neither ``"fine"`` nor ``"coarse"``.
        DatasetNotFoundError: no searched folder holds the file of the split.
        DatasetFormatError: a file is malformed (the message names it).

    Warns:
        ChecksumWarning: a python-version file differs from the official release.
    """
    if labels not in ("fine", "coarse"):
        raise ValueError(f"labels must be 'fine' or 'coarse', got {labels!r}")
    return _load(_CIFAR100, split, data_dir, f"{labels}_labels")


# --------------------------------------------------------------------------------------------
# registry (the loaders take (split, data_dir), as load_dataset calls them)


def _load_cifar10(split: str, data_dir: str | Path | None) -> ImageDataset:
    return load_cifar10(split, data_dir)


def _load_cifar100(split: str, data_dir: str | Path | None) -> ImageDataset:
    return load_cifar100(split, data_dir, labels="fine")


def _load_cifar100_coarse(split: str, data_dir: str | Path | None) -> ImageDataset:
    return load_cifar100(split, data_dir, labels="coarse")


register_dataset(memory_dataset_info("cifar10", 10, 3, (32, 32), CIFAR10_MEAN, CIFAR10_STD, 4,
                                     loader=_load_cifar10))
register_dataset(memory_dataset_info("cifar100", 100, 3, (32, 32), CIFAR100_MEAN, CIFAR100_STD, 4,
                                     loader=_load_cifar100))
register_dataset(memory_dataset_info("cifar100-coarse", 20, 3, (32, 32), CIFAR100_MEAN,
                                     CIFAR100_STD, 4, loader=_load_cifar100_coarse))
