"""The CIFAR10-DVS dataset (Li et al. 2017) as an :class:`~.dataset.EventDataset`.

What the release is. The original release (figshare, one zip per class) holds
``<class>/cifar10_<class>_<i>.aedat``, ``i = 0..999``, recorded with jAER from a DVS128 watching
CIFAR-10 images moved on a monitor: the files are **AEDAT 2.0** (``#!AER-DAT2.0`` header,
big-endian address/timestamp pairs, DVS128 address layout), not AEDAT 3.1 — SpikingJelly's
reader parses them as big-endian uint32 pairs with the DVS128 masks 0xFE / 0x7F00 / 0x1, the
contributor of tonic's port writes "the data in CIFAR10-DVS is in aedat 2.0 format" (tonic
issue #170), and tonic now downloads a later AEDAT 4.0 conversion instead.
:func:`~.aedat.read_aedat` dispatches on the header, so a 3.1 copy reads too. The community
``.npz`` dumps produced by SpikingJelly (``<class>/cifar10_<class>_<i>.npz``, keys t, x, y, p)
are read as well.

Expected layout: ``<root>/<class>/*.aedat`` or ``*.npz`` for the ten classes airplane,
automobile, bird, cat, deer, dog, frog, horse, ship, truck; ``<root>`` may also hold
``CIFAR10DVS/``, ``CIFAR10-DVS/`` or ``events_np/`` (SpikingJelly's) with them. Sensor 128×128.

Orientation: events decoded from ``.aedat`` use SpikingJelly's orientation by default
(:mod:`.aedat2`), so they equal those of its ``.npz`` dumps; ``orientation="jaer"`` gives jAER's.

Split: there is no official split. ``split_scheme="first"`` (default) takes, per class and in
natural file-name order (``_2`` before ``_10``), the first ``ceil(train_fraction * n)`` samples
for training and the rest for testing — SpikingJelly's ``split_to_train_test_set(0.9, ...,
random_split=False)`` rule, except that it orders names lexicographically (``_10`` before
``_2``). ``split_scheme="tebn"`` is the split of the TEBN paper used by many later works and by
SpikingJelly's ``CIFAR10DVSTEBNSplit``: file index 0..99 of each class is the test set,
100..999 the training set. ``split_scheme="random"`` is the seeded random 9:1 per-class split
(SpikingJelly's ``random_split=True``, there unseeded): class ``k``'s files, in natural order,
are permuted by ``numpy.random.default_rng([split_seed, k])`` and the first
``ceil(train_fraction * n)`` of the permutation train; the rest, in natural order, test. A
permutation depends only on the seed, the class and its number of files, so the two splits of one
seed never overlap and together hold every file.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Literal

import numpy as np

from spikebridge.dataset_errors import DatasetFormatError, DatasetNotFoundError

from ._paths import PathTable, list_files
from .aedat import read_aedat
from .aedat2 import DVS128_SENSOR, Orientation
from .dataset import EventDataset
from .npz import read_events_npz
from .types import validate_events

__all__ = ["CIFAR10DVS", "CIFAR10DVS_CLASSES"]

CIFAR10DVS_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_SUFFIXES = (".aedat", ".npz")
_TRAILING_INT = re.compile(r"(\d+)$")
_TEBN_TEST = 100  # TEBN split: index < 100 test
_HINT = (
    "Expected <root>/<class>/*.aedat (the original release, one zip per class) or *.npz "
    "(SpikingJelly dumps) for the classes " + ", ".join(CIFAR10DVS_CLASSES) + "."
)


class CIFAR10DVS(EventDataset):
    """CIFAR10-DVS, with a deterministic per-class split.

    Args:
        root: the folder holding the ten class folders (or one of the sub-folders above).
        split: ``"train"``, ``"test"`` or ``None`` (all 10 000 samples).
        train_fraction: for ``split_scheme="first"``, the fraction of each class used for
            training (0.9 by default).
        split_scheme: ``"first"``, ``"tebn"`` or ``"random"`` (see the module doc).
        split_seed: the seed of the ``"random"`` split.
        orientation: how ``.aedat`` addresses map to x/y (``"spikingjelly"`` or ``"jaer"``).

    Raises:
        DatasetNotFoundError: no searched folder holds the ten class folders with event files.
    """

    name = "cifar10dvs"
    classes = CIFAR10DVS_CLASSES
    sensor_size = DVS128_SENSOR

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: Literal["train", "test"] | None = None,
        *,
        train_fraction: float = 0.9,
        split_scheme: Literal["first", "tebn", "random"] = "first",
        orientation: Orientation = "spikingjelly",
        split_seed: int = 0,
    ):
        super().__init__()
        if split not in ("train", "test", None):
            raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
        if split_scheme not in ("first", "tebn", "random"):
            raise ValueError(
                f"split_scheme must be 'first', 'tebn' or 'random', got {split_scheme!r}"
            )
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
        if orientation not in ("spikingjelly", "jaer"):
            raise ValueError(f"orientation must be 'spikingjelly' or 'jaer', got {orientation!r}")
        self.split, self.train_fraction = split, train_fraction
        self.split_scheme, self.orientation = split_scheme, orientation
        self.split_seed = int(split_seed)
        root = Path(root)
        searched, details = [], []
        for cand in (root, root / "CIFAR10DVS", root / "CIFAR10-DVS", root / "events_np"):
            searched.append(cand)
            if not cand.is_dir():
                details.append(f"{cand}: no such directory")
                continue
            missing = [c for c in self.classes if not (cand / c).is_dir()]
            if missing:
                details.append(f"{cand}: missing class folder(s) {', '.join(missing)}")
                continue
            self.directory = cand
            return
        raise DatasetNotFoundError(self.name, searched, details, _HINT)

    def _select(self, names: list[str], folder: Path, label: int) -> list[str]:
        if self.split is None:
            return names
        if self.split_scheme == "first":
            n_train = math.ceil(len(names) * self.train_fraction)
            return names[:n_train] if self.split == "train" else names[n_train:]
        if self.split_scheme == "random":
            n_train = math.ceil(len(names) * self.train_fraction)
            order = np.random.default_rng([self.split_seed, label]).permutation(len(names))
            chosen = np.sort(order[:n_train] if self.split == "train" else order[n_train:])
            return [names[i] for i in chosen]
        out = []
        for name in names:
            m = _TRAILING_INT.search(Path(name).stem)
            if m is None:
                raise DatasetFormatError(
                    f"{folder / name}: the TEBN split needs a trailing sample index in the file "
                    "name (cifar10_<class>_<i>)"
                )
            is_test = int(m.group(1)) < _TEBN_TEST
            if is_test == (self.split == "test"):
                out.append(name)
        return out

    def _build_index(self) -> None:
        rel, labels, found = [], [], 0
        for label, c in enumerate(self.classes):
            folder = self.directory / c
            files = list_files(folder, _SUFFIXES)
            found += len(files)
            names = self._select(files, folder, label)
            rel.extend(f"{c}/{n}" for n in names)
            labels.extend([label] * len(names))
        if not rel:
            why = (f"{self.directory}: no .aedat or .npz files in the class folders" if not found
                   else f"{self.directory}: the {self.split_scheme!r} split leaves no "
                   f"{self.split} recordings among the {found} files (train fraction "
                   f"{self.train_fraction:g} per class): add recordings")
            raise DatasetNotFoundError(self.name, [self.directory], [why], _HINT)
        self._paths = PathTable(self.directory, rel)
        self._labels = np.asarray(labels, dtype=np.int64)

    def _read(self, i: int) -> np.ndarray:
        path = self._paths[i]
        if path.suffix.lower() == ".npz":
            return read_events_npz(path, self.sensor_size)
        return validate_events(
            read_aedat(path, orientation=self.orientation), self.sensor_size, source=path
        )
