"""The IBM DVS128 Gesture dataset (Amir et al. 2017) as an :class:`~.dataset.EventDataset`.

Expected layout (that of the official ``DvsGesture.tar.gz``)::

    <root>/user01_fluorescent.aedat            AEDAT 3.1 recording (see :mod:`.aedat31`)
    <root>/user01_fluorescent_labels.csv       its labelled windows
    ...                                        29 users × up to 5 lighting conditions
    <root>/trials_to_train.txt                 recordings of the train split, one per line
    <root>/trials_to_test.txt                  recordings of the test split

(``<root>`` may also be the folder holding ``DvsGesture/``). A labels file is::

    class,startTime_usec,endTime_usec
    1,80048239,85092709
    ...

with classes 1..11 (label = class - 1); every row is one sample: the events of the recording with
``startTime_usec <= t < endTime_usec`` (SpikingJelly's convention; a recording may hold a class
more than once). Timestamps are kept as recorded (not shifted to start at 0).

Split convention: the official ``trials_to_train.txt`` / ``trials_to_test.txt`` list users
01–23 for training and 24–29 for testing; when the lists are absent the same rule is applied to
the ``userNN`` prefix of the file names. SpikingJelly's documentation reports 1176 train / 288
test samples for this rule on the official files (snnTorch the same; tonic's preprocessed copy
has 1077 / 264).

A sample is read through a per-recording packet index (:class:`.aedat31.Aedat31File`), so only
the packets overlapping the window are read from disk.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Literal

import numpy as np

from spikebridge.dataset_errors import DatasetFormatError, DatasetNotFoundError

from ._paths import natural_key
from .aedat2 import DVS128_SENSOR
from .aedat31 import Aedat31File
from .dataset import EventDataset
from .types import validate_events

__all__ = ["DVS_GESTURE_CLASSES", "DVSGesture", "read_gesture_labels"]

DVS_GESTURE_CLASSES = (
    "hand_clapping",
    "right_hand_wave",
    "left_hand_wave",
    "right_arm_clockwise",
    "right_arm_counter_clockwise",
    "left_arm_clockwise",
    "left_arm_counter_clockwise",
    "arm_roll",
    "air_drums",
    "air_guitar",
    "other_gestures",
)
_HEADER = ["class", "startTime_usec", "endTime_usec"]
_USER = re.compile(r"^user(\d+)_", re.IGNORECASE)
_LISTS = {"train": "trials_to_train.txt", "test": "trials_to_test.txt"}
_TEST_USERS_FROM = 24  # users 01..23 train, 24..29 test
_HINT = (
    "Expected <root>/userNN_<lighting>.aedat with userNN_<lighting>_labels.csv beside each "
    "(extract the official DvsGesture.tar.gz into <root>)."
)


def read_gesture_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """Parse a ``*_labels.csv`` into an int64 array ``[n, 3]`` of (label 0..10, start, end).

    Raises:
        DatasetFormatError: the header is not ``class,startTime_usec,endTime_usec``, a row does
            not hold three integers, a class is outside 1..11, or ``start >= end``; the message
            names the file and line.
    """
    path = Path(path)
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != _HEADER:
            raise DatasetFormatError(
                f"{path}: line 1 is {header!r}, expected the header {','.join(_HEADER)}"
            )
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                if len(row) != 3:
                    raise ValueError
                cls, start, end = (int(c.strip()) for c in row)
            except ValueError:
                raise DatasetFormatError(
                    f"{path}: line {line_no} {row!r} is not three integers "
                    "class,startTime_usec,endTime_usec"
                ) from None
            if not 1 <= cls <= len(DVS_GESTURE_CLASSES):
                raise DatasetFormatError(f"{path}: line {line_no}: class {cls} outside 1..11")
            if start >= end or start < 0:
                raise DatasetFormatError(
                    f"{path}: line {line_no}: window {start}..{end} is empty or negative"
                )
            rows.append((cls - 1, start, end))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def _recordings(directory: Path) -> list[str]:
    """Stems of the ``.aedat`` files in ``directory`` that have a ``_labels.csv`` beside them."""
    stems = []
    with os.scandir(directory) as it:
        for entry in it:
            if entry.name.lower().endswith(".aedat") and entry.is_file():
                stem = entry.name[: -len(".aedat")]
                if (directory / f"{stem}_labels.csv").is_file():
                    stems.append(stem)
    stems.sort(key=natural_key)
    return stems


class DVSGesture(EventDataset):
    """DVS128 Gesture: one sample per labelled window of a recording.

    Args:
        root: the folder holding the ``.aedat`` / ``_labels.csv`` files (or ``DvsGesture/``).
        split: ``"train"``, ``"test"`` or ``None`` (every recording).

    Raises:
        DatasetNotFoundError: no searched folder holds an ``.aedat`` file with its labels file.
    """

    name = "dvs_gesture"
    classes = DVS_GESTURE_CLASSES
    sensor_size = DVS128_SENSOR

    def __init__(
        self, root: str | os.PathLike[str], split: Literal["train", "test"] | None = "train"
    ):
        super().__init__()
        if split not in ("train", "test", None):
            raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
        self.split = split
        root = Path(root)
        searched, details = [], []
        for cand in (root, root / "DvsGesture"):
            searched.append(cand)
            if not cand.is_dir():
                details.append(f"{cand}: no such directory")
                continue
            if not _recordings(cand):
                details.append(f"{cand}: no *.aedat file with a *_labels.csv beside it")
                continue
            self.directory = cand
            return
        raise DatasetNotFoundError(self.name, searched, details, _HINT)

    def _split_recordings(self) -> list[str]:
        available = _recordings(self.directory)
        if self.split is None:
            return available
        listing = self.directory / _LISTS[self.split]
        if listing.is_file():
            stems = []
            for line_no, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), 1):
                name = line.strip()
                if not name:
                    continue
                stem = name[: -len(".aedat")] if name.lower().endswith(".aedat") else name
                if stem not in available:
                    raise DatasetFormatError(
                        f"{listing}: line {line_no} lists {name}, but {self.directory} has no "
                        f"{stem}.aedat with {stem}_labels.csv"
                    )
                stems.append(stem)
            return stems
        out = []
        for stem in available:
            m = _USER.match(stem)
            if m is None:
                raise DatasetFormatError(
                    f"{self.directory / (stem + '.aedat')}: name does not start with userNN_, "
                    f"and there is no {_LISTS[self.split]} to say which split it belongs to"
                )
            is_test = int(m.group(1)) >= _TEST_USERS_FROM
            if is_test == (self.split == "test"):
                out.append(stem)
        return out

    def _build_index(self) -> None:
        stems = self._split_recordings()
        files, windows = [], []
        for k, stem in enumerate(stems):
            rows = read_gesture_labels(self.directory / f"{stem}_labels.csv")
            files.append(stem)
            windows.append(np.column_stack([np.full(len(rows), k, dtype=np.int64), rows]))
        table = np.concatenate(windows) if windows else np.zeros((0, 4), dtype=np.int64)
        self._stems = files
        self._windows = table  # columns: recording, label, start, end
        self._files: dict[int, Aedat31File] = {}
        self._labels = table[:, 1].copy()

    def recording(self, i: int) -> str:
        """The name (without ``.aedat``) of the recording sample ``i`` is cut from."""
        i = self._check_index(i)
        return self._stems[int(self._windows[i, 0])]

    def window(self, i: int) -> tuple[int, int]:
        """The ``(start, end)`` µs window of sample ``i`` (``start <= t < end``)."""
        i = self._check_index(i)
        return int(self._windows[i, 2]), int(self._windows[i, 3])

    def source(self, i: int) -> Path:
        return self.directory / f"{self.recording(i)}.aedat"

    def _read(self, i: int) -> np.ndarray:
        k, _, start, end = (int(v) for v in self._windows[i])
        f = self._files.get(k)
        if f is None:
            f = self._files[k] = Aedat31File(self.directory / f"{self._stems[k]}.aedat")
        return validate_events(f.read_window(start, end), self.sensor_size, source=f.path)
