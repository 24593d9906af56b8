"""The common shape of an event-camera dataset: a lazily indexed, file-backed sequence.

Every dataset class here (:class:`~.nmnist.NMNIST`, :class:`~.dvs_gesture.DVSGesture`,
:class:`~.cifar10dvs.CIFAR10DVS`) is an :class:`EventDataset`:

- the constructor only checks that the root has the expected folder structure (raising
  :class:`~spikebridge.dataset_errors.DatasetNotFoundError` that lists every place searched and what
  was expected there);
- the list of samples is built on first use (``len``, indexing, ``labels``) from directory
  listings and small label files, never from the event files themselves;
- ``dataset[i]`` reads the one file (or file window) of sample ``i`` and returns
  ``(events, label)``, ``events`` a :data:`~.types.EVENT_DTYPE` array checked against
  ``sensor_size``; nothing is cached, so memory does not grow with the dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .types import SensorSize

__all__ = ["EventDataset"]


class EventDataset:
    """Base class: subclasses set ``name``, ``classes``, ``sensor_size`` and implement
    ``_build_index()`` (filling ``self._labels``) and ``_read(i) -> events``."""

    name: str = "events"
    classes: tuple[str, ...] = ()
    sensor_size: SensorSize = SensorSize(0, 0)

    def __init__(self) -> None:
        self._labels: np.ndarray | None = None

    # -- to implement --------------------------------------------------------------------------
    def _build_index(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, i: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def source(self, i: int) -> Path:
        """The file sample ``i`` is read from (``self._paths``, set by ``_build_index``, unless
        a subclass stores its files otherwise)."""
        i = self._check_index(i)
        return self._paths[i]

    # -- common --------------------------------------------------------------------------------
    def _ensure_index(self) -> np.ndarray:
        if self._labels is None:
            self._build_index()
        assert self._labels is not None
        return self._labels

    def _check_index(self, i: int) -> int:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.name}: sample index {i} out of range for {n} samples")
        return i

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return int(self._ensure_index().shape[0])

    def labels(self) -> np.ndarray:
        """Every sample's label (int64), without reading any event file."""
        return self._ensure_index().copy()

    def label(self, i: int) -> int:
        return int(self._ensure_index()[self._check_index(i)])

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        i = self._check_index(i)
        return self._read(i), int(self._labels[i])  # type: ignore[index]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        n = len(self) if self._labels is not None else "?"
        return f"{type(self).__name__}({self.name}, {n} samples, {len(self.classes)} classes)"
