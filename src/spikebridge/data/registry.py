"""The dataset registry: one :class:`DatasetInfo` per name ``--dataset`` accepts.

A record holds both what a dataset is (classes, channels, image size, normalisation, where it
is held, its default transforms) and the function that loads it. :func:`load_dataset
<spikebridge.data.datasets.load_dataset>`, :func:`list_datasets
<spikebridge.data.datasets.list_datasets>`, :data:`STREAMING_DATASETS
<spikebridge.data.datasets.STREAMING_DATASETS>`, :func:`load_streaming_dataset
<spikebridge.data.imagefolder.load_streaming_dataset>`, ``spikebridge info`` (which prints
:data:`DATASETS`; docs/data.md explains the facts) and training's default augmentation all read
these records; ``tests/test_data.py`` checks the facts against what each loader produces.

This module holds only the registry mechanics and imports nothing else of
:mod:`spikebridge.data`, so every module defining a loader can import it. The records are
registered when their modules are imported; :mod:`spikebridge.data` imports all of them (through
:mod:`spikebridge.data.datasets`), and Python runs that package ``__init__`` before any of its
modules, so the registry is complete whenever anything of :mod:`spikebridge.data` is imported.

How to add a dataset — everything goes in the module that defines its loader:

1. write the loader: ``loader(split, data_dir) -> ImageDataset`` for a dataset held in memory
   (``split`` is ``"train"`` or ``"test"``, checked by ``load_dataset``), or
   ``loader(split, data_dir, **options) -> ImageFolderDataset`` for a streamed one;
2. right after it, register its record: ``register_dataset(memory_dataset_info(...,
   loader=...))`` (:func:`spikebridge.data.image_dataset.memory_dataset_info`) or
   ``register_dataset(DatasetInfo(..., storage="streamed", loader=...))``;
3. a new module must also be imported by :mod:`spikebridge.data.datasets` (the public face),
   which is what registers it.

An event-camera dataset is registered the same way, by :mod:`spikebridge.data.event_sets`: its
loader turns each recording into a count image (an in-memory ``ImageDataset``, so training,
augmentation and evaluation are those of the image sets) and its record's ``events`` field
(:class:`EventDefaults`) says how, and how the frames an SNN takes are made.

Nothing else lists the datasets: the names known to ``load_dataset``, ``dataset_info``,
``spikebridge info`` and the error messages are all generated from the records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "EventDefaults",
    "dataset_info",
    "dataset_key",
    "dataset_names",
    "register_dataset",
]


@dataclass(frozen=True)
class EventDefaults:
    """How an event-camera dataset becomes tensors: the facts of its two representations.

    * counts (the CNN input, what ``--dataset`` trains on): per pixel and polarity, the events of
      the window ``[t0, t0 + window_us)`` (``t0`` = the sample's first timestamp; ``None`` = the
      whole sample) after binning the ``sensor_size`` pixels to the record's ``image_size``,
      saturated at ``count_scale`` and divided by it;
    * frames (the SNN input): the same window sliced into ``frames`` equal durations, each frame
      the counts of its slice times ``frames / count_scale`` — so the mean over the frames equals
      the CNN input wherever no count saturates.

    ``sensor_size`` is ``(width, height)`` (the event convention; ``image_size`` is ``(H, W)``);
    ``polarity`` is ``"split"`` (2 channels, OFF then ON) or ``"sum"`` (1). ``split`` says how
    train and test are told apart and ``source`` where the defaults come from.
    """

    sensor_size: tuple[int, int]
    window_us: int | None
    frames: int
    polarity: str
    count_scale: float
    split: str
    source: str


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset's fixed properties, and its loader.

    ``num_classes`` is ``None`` when the data defines it (an image-folder tree's class
    folders); ``image_size`` is ``None`` for streamed datasets, whose images are cropped to
    ``--image-size`` (default 224); ``mean``/``std`` are ``None`` when computed from the
    training split (scikit-learn's digits). ``crop_padding`` is the zero padding of the random
    crop in-memory training uses (0: streamed, augmented per image instead). ``loader`` loads a
    split: ``loader(split, data_dir)`` (streamed datasets also take the options of
    :func:`spikebridge.data.load_streaming_dataset`); it is left out of ``repr`` and ``==``.
    ``horizontal_flip`` says whether a left-right mirror keeps a sample's label, i.e. whether
    training flips it (not DVS Gesture's left/right-hand classes, nor N-MNIST's digits).
    ``events`` is set for event-camera datasets (:mod:`spikebridge.data.event_sets`): the
    defaults of their count and frame representations; ``None`` for image datasets.
    """

    name: str
    num_classes: int | None
    channels: int
    image_size: tuple[int, int] | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    storage: str  # "memory" (held in RAM, augmented per batch) or "streamed" (decoded per image)
    crop_padding: int
    train_transform: str
    test_transform: str
    loader: Callable[..., Any] = field(kw_only=True, repr=False, compare=False)
    horizontal_flip: bool = field(default=True, kw_only=True)
    events: EventDefaults | None = field(default=None, kw_only=True)

    @property
    def streaming(self) -> bool:
        """Whether the dataset is read image by image from disk (``storage == "streamed"``)."""
        return self.storage == "streamed"


DATASETS: dict[str, DatasetInfo] = {}
"""Every registered dataset by name: those held in memory, then the streamed ones, each group
sorted by name."""


def dataset_key(name: str) -> str:
    """The registry spelling of a dataset name: ``Fashion_MNIST`` → ``fashion-mnist``."""
    return name.strip().lower().replace("_", "-")


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add ``info`` to :data:`DATASETS` (and return it).

    Raises:
        ValueError: the name is not in registry spelling (:func:`dataset_key`), the storage is
            neither ``"memory"`` nor ``"streamed"``, or the name is registered already.
    """
    if info.name != dataset_key(info.name):
        raise ValueError(f"dataset name {info.name!r} must be spelled {dataset_key(info.name)!r}")
    if info.storage not in ("memory", "streamed"):
        raise ValueError(
            f"{info.name}: storage must be 'memory' or 'streamed', got {info.storage!r}"
        )
    if info.name in DATASETS:
        raise ValueError(f"dataset {info.name!r} is registered already")
    records = sorted([*DATASETS.values(), info], key=lambda r: (r.streaming, r.name))
    DATASETS.clear()  # the same dict object, re-ordered: modules may hold a reference to it
    DATASETS.update((record.name, record) for record in records)
    return info


def dataset_names(*, streaming: bool) -> list[str]:
    """Sorted names of the registered datasets that are streamed from disk (or held in memory)."""
    return sorted(name for name, info in DATASETS.items() if info.streaming == streaming)


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered dataset (names as ``--dataset`` takes them).

    Raises:
        ValueError: ``name`` is not registered; the message lists the names that are.
    """
    key = dataset_key(name)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))}")
    return DATASETS[key]
