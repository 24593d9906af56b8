"""Datasets, IDX file I/O, batch transforms and the in-memory batch loader.

* :mod:`spikebridge.data.registry` — one :class:`~spikebridge.data.registry.DatasetInfo` per
  dataset name (its facts and its loader); how to add a dataset.
* :mod:`spikebridge.data.datasets` — :func:`load_dataset` by name; the MNIST-style datasets and
  scikit-learn's digits.
* :mod:`spikebridge.data.image_dataset` — :class:`ImageDataset`, a split held in memory.
* :mod:`spikebridge.data.locating` — where dataset files are looked for (``--data-dir``,
  ``$SPIKEBRIDGE_DATA_DIR``).
* :mod:`spikebridge.data.idx` — read/write MNIST-style IDX files (gzip or raw).
* :mod:`spikebridge.data.cifar` — CIFAR-10/100 from the official python or binary files.
* :mod:`spikebridge.data.safe_pickle` — an unpickler that admits only numpy arrays and plain
  containers (so data pickles cannot run code).
* :mod:`spikebridge.data.imagefolder` — ImageNet / ImageFolder trees streamed from disk
  (:func:`load_streaming_dataset`, :func:`decode_image`), built on
  :mod:`~spikebridge.data.class_folders` (listing the tree),
  :mod:`~spikebridge.data.image_transforms` (per-image crops and resizes),
  :mod:`~spikebridge.data.seeded_sampling` (order and augmentation seeds) and
  :mod:`~spikebridge.data.streaming_loader` (:func:`make_loader`).
* :mod:`spikebridge.data.event_sets` — the event-camera datasets (N-MNIST, CIFAR10-DVS, DVS128
  Gesture): their count images for the CNN, :func:`event_loader` for the frames an SNN takes.
* :mod:`spikebridge.data.errors` — the exceptions for missing or malformed dataset files.
* :mod:`spikebridge.data.transforms` — vectorised batch transforms (normalise, crop, flip).
* :mod:`spikebridge.data.loader` — :class:`BatchLoader`, reproducible shuffled mini-batches.
"""

from __future__ import annotations

from spikebridge.batch_transforms import normalize, random_crop, random_horizontal_flip, to_float
from spikebridge.data.cifar import ChecksumWarning, load_cifar10, load_cifar100
from spikebridge.data.datasets import (
    DATA_DIR_ENV,
    STREAMING_DATASETS,
    DatasetFormatError,
    DatasetNotFoundError,
    ImageDataset,
    list_datasets,
    load_dataset,
)
from spikebridge.data.event_sets import event_dataset_names, event_loader, open_event_dataset
from spikebridge.data.idx import IdxFormatError, read_idx, write_idx
from spikebridge.data.imagefolder import (
    CorruptImageError,
    ImageFolderDataset,
    StreamingLoader,
    decode_image,
    list_streaming_datasets,
    load_streaming_dataset,
    make_loader,
)
from spikebridge.data.loader import BatchLoader
from spikebridge.data.safe_pickle import UnsafePickleError, safe_load

__all__ = [
    "DATA_DIR_ENV",
    "STREAMING_DATASETS",
    "BatchLoader",
    "ChecksumWarning",
    "CorruptImageError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "IdxFormatError",
    "ImageDataset",
    "ImageFolderDataset",
    "StreamingLoader",
    "UnsafePickleError",
    "decode_image",
    "event_dataset_names",
    "event_loader",
    "list_datasets",
    "list_streaming_datasets",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_streaming_dataset",
    "make_loader",
    "normalize",
    "open_event_dataset",
    "random_crop",
    "random_horizontal_flip",
    "read_idx",
    "safe_load",
    "to_float",
    "write_idx",
]
