"""Datasets, IDX file I/O, batch transforms and the in-memory batch loader.

* :mod:`spikebridge.data.idx` — read/write MNIST-style IDX files (gzip or raw).
* :mod:`spikebridge.data.datasets` — :class:`ImageDataset` and :func:`load_dataset` by name.
* :mod:`spikebridge.data.transforms` — vectorised batch transforms (normalise, crop, flip).
* :mod:`spikebridge.data.loader` — :class:`BatchLoader`, reproducible shuffled mini-batches.
"""

from __future__ import annotations

from spikebridge.data.datasets import (
    DATA_DIR_ENV,
    DatasetFormatError,
    DatasetNotFoundError,
    ImageDataset,
    list_datasets,
    load_dataset,
)
from spikebridge.data.idx import IdxFormatError, read_idx, write_idx
from spikebridge.data.loader import BatchLoader
from spikebridge.data.transforms import normalize, random_crop, random_horizontal_flip, to_float

__all__ = [
    "DATA_DIR_ENV",
    "BatchLoader",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "IdxFormatError",
    "ImageDataset",
    "list_datasets",
    "load_dataset",
    "normalize",
    "random_crop",
    "random_horizontal_flip",
    "read_idx",
    "to_float",
    "write_idx",
]
