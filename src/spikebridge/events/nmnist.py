"""The N-MNIST dataset (Orchard et al. 2015) as an :class:`~.dataset.EventDataset`.

Expected layout (that of the official ``Train.zip`` / ``Test.zip``)::

    <root>/Train/0/00002.bin ... <root>/Train/9/...     60 000 samples
    <root>/Test/0/...        ... <root>/Test/9/...      10 000 samples

each ``.bin`` one sample in the 5-byte event format of :mod:`.nmnist_bin`, the class folder's
name the label. ``<root>`` may also be a folder holding ``NMNIST/`` or ``N-MNIST/`` with that
layout (tonic extracts to ``<save_to>/NMNIST``). Sensor: 34×34 pixels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from spikebridge.dataset_errors import DatasetNotFoundError

from ._paths import PathTable, list_files
from .dataset import EventDataset
from .nmnist_bin import NMNIST_SENSOR, read_nmnist_file

__all__ = ["NMNIST"]

_SPLIT_DIRS = {"train": ("Train", "train"), "test": ("Test", "test")}
_HINT = (
    "Expected <root>/Train/<0..9>/*.bin and <root>/Test/<0..9>/*.bin (unzip the official "
    "Train.zip and Test.zip into <root>), or write an emulated tree with "
    "spikebridge.events.write_nmnist_dataset."
)


class NMNIST(EventDataset):
    """N-MNIST, one split, streamed file by file.

    Args:
        root: the folder holding ``Train/`` and ``Test/`` (or ``NMNIST/``/``N-MNIST/`` with them).
        split: ``"train"`` or ``"test"``.

    Raises:
        DatasetNotFoundError: no searched folder has the split folder with class folders 0..9.
    """

    name = "nmnist"
    classes = tuple(str(d) for d in range(10))
    sensor_size = NMNIST_SENSOR

    def __init__(self, root: str | os.PathLike[str], split: Literal["train", "test"] = "train"):
        super().__init__()
        if split not in _SPLIT_DIRS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.split = split
        root = Path(root)
        searched, details = [], []
        for cand in (root, root / "NMNIST", root / "N-MNIST"):
            searched.append(cand)
            found = None
            for sub in _SPLIT_DIRS[split]:
                if (cand / sub).is_dir():
                    found = cand / sub
                    break
            if found is None:
                details.append(f"{cand}: no {_SPLIT_DIRS[split][0]}/ folder")
                continue
            present = [c for c in self.classes if (found / c).is_dir()]
            if not present:
                details.append(f"{found}: no class folders 0..9")
                continue
            self.directory = found
            self.root = cand
            return
        raise DatasetNotFoundError(self.name, searched, details, _HINT)

    def _build_index(self) -> None:
        rel, labels = [], []
        for label, c in enumerate(self.classes):
            folder = self.directory / c
            if not folder.is_dir():
                continue
            for name in list_files(folder, (".bin",)):
                rel.append(f"{c}/{name}")
                labels.append(label)
        if not rel:
            raise DatasetNotFoundError(
                self.name, [self.directory], [f"{self.directory}: no .bin files in 0..9/"], _HINT
            )
        self._paths = PathTable(self.directory, rel)
        self._labels = np.asarray(labels, dtype=np.int64)

    def _read(self, i: int) -> np.ndarray:
        return read_nmnist_file(self._paths[i], sensor_size=self.sensor_size)
