"""The event-camera datasets of the registry — ``nmnist``, ``cifar10-dvs``, ``dvs-gesture`` — and
their two representations.

* **Counts, for the CNN** (what ``spikebridge train --dataset NAME`` trains on): each recording
  becomes one count image ``[C, H, W]`` — per pixel and polarity, the events of the record's
  window, binned to ``image_size`` — held in memory as an :class:`ImageDataset` like any image
  set, so batching, augmentation (random crop with zero padding + flip, per batch), checkpoints,
  ``evaluate`` and conversion are those of the image sets. The counts are stored as uint8,
  saturated at ``count_scale`` = 255, and the record's normalisation (mean 0, std
  ``count_scale / 255``) turns them into ``min(count, 255) / 255`` in ``[0, 1]``: the ECC paper's
  "number of spikes ... normalized with a constant representing the maximum number of spikes",
  the constant being the largest count the storage holds (so ``λ0 = max x <= 1``, as ECC's
  current normalisation assumes).
* **Frames, for the SNN** (:func:`event_loader`): the same window sliced into ``T`` equal
  durations, a float32 batch ``[T, B, C, H, W]`` (time-major) from
  :class:`~spikebridge.events.EventBatchLoader`, each frame divided by ``count_scale / T``, so
  the mean of the ``T`` frames equals the CNN's count input (wherever no count reaches 255).

Defaults (the record's :class:`~spikebridge.data.registry.EventDefaults`; docs/data.md):

===============  =======  =====  ====================  ======  ===========================
dataset          sensor   input  window                frames  split
===============  =======  =====  ====================  ======  ===========================
``nmnist``       34×34    34×34  whole (≈ 300 ms)      30      official Train / Test
``cifar10-dvs``  128×128  42×42  first 1.3 s           48      seeded random 9:1 per class
``dvs-gesture``  128×128  64×64  each labelled window  60      official: users 1–23 / 24–29
===============  =======  =====  ====================  ======  ===========================

CIFAR10-DVS follows the ECC paper (first 1.3 s, 128 → 42, 48 frames; the paper follows Wu et al.
2021 and Kugele et al. 2020). The N-MNIST and DVS Gesture frame counts (≈ 10 ms and ≈ 100 ms a
frame) and DVS Gesture's 2×2 binning to 64×64 (an integer ratio, so crops and flips of the
frames are exactly those of the events; 4× less compute than 128×128) are our choices. Every set
keeps the two polarities as two channels. CIFAR10-DVS has no official split: the registry uses
the seeded random 9:1 per-class split (seed 0; :class:`~spikebridge.events.CIFAR10DVS` with
``split_scheme="random"``).

Where the files are looked for: ``--data-dir DIR`` (only there) or ``$SPIKEBRIDGE_DATA_DIR``;
``DIR`` may be the dataset's folder or hold it as ``DIR/<name>`` (also the folder names the
dataset classes accept). A missing dataset raises :class:`DatasetNotFoundError` listing every
directory searched and what was missing there, as the image sets do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import torch

from spikebridge.data.image_dataset import ImageDataset
from spikebridge.data.locating import DATA_DIR_ENV, _first_directory_with_data, _search_roots
from spikebridge.data.registry import (
    DATASETS,
    DatasetInfo,
    EventDefaults,
    dataset_info,
    register_dataset,
)
from spikebridge.dataset_errors import DatasetNotFoundError
from spikebridge.events.augment import EventAugmentation
from spikebridge.events.cifar10dvs import CIFAR10DVS
from spikebridge.events.dataset import EventDataset
from spikebridge.events.dvs_gesture import DVSGesture
from spikebridge.events.frames import ToCounts, ToFrames
from spikebridge.events.loader import EventBatchLoader
from spikebridge.events.nmnist import NMNIST

__all__ = ["event_dataset_names", "event_loader", "event_transform", "open_event_dataset"]

COUNT_SCALE = 255.0
"""Counts saturate at this value (uint8 storage) and are divided by it."""

CIFAR10DVS_SPLIT_SEED = 0
"""Seed of the random 9:1 per-class split of CIFAR10-DVS the registry uses."""

Representation = Literal["frames", "counts"]

# name -> (opener(directory, split) -> EventDataset, sub-folders of a search root, hint)
_OPENERS: dict[str, tuple[Callable[[Path, str], EventDataset], tuple[str, ...], str]] = {}


def event_dataset_names() -> list[str]:
    """Sorted names of the registered event-camera datasets (records with ``events`` set)."""
    return sorted(name for name, info in DATASETS.items() if info.events is not None)


def _hint(name: str, layout: str, download: str) -> str:
    return (f"To get the data, download {download} and pass --data-dir DIR (or set "
            f"${DATA_DIR_ENV}=DIR) where DIR, or DIR/{name}, holds {layout}.")


def open_event_dataset(
    name: str, split: str = "train", data_dir: str | os.PathLike[str] | None = None
) -> EventDataset:
    """Split ``split`` of event dataset ``name`` as a lazily indexed
    :class:`~spikebridge.events.EventDataset` (``dataset[i] -> (events, label)``), found in
    ``data_dir`` (only there) or else ``$SPIKEBRIDGE_DATA_DIR``.

    Raises:
        ValueError: ``name`` is not an event dataset, or ``split`` is not train/test.
        DatasetNotFoundError: no searched directory holds the dataset (every one is listed,
            with what was missing).
    """
    info = _event_info(name)
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r} for dataset {info.name!r}; use 'train' or "
                         "'test'")
    opener, subdirs, hint = _OPENERS[info.name]

    def candidates() -> Iterator[Path]:
        for root in _search_roots(data_dir, ()):
            yield from [root / s for s in subdirs] + [root]

    def probe(directory: Path) -> tuple[EventDataset | None, str]:
        try:
            dataset = opener(directory, split)
            len(dataset)  # builds the index: are there sample files?
        except DatasetNotFoundError as exc:
            return None, "; ".join(exc.details) or str(exc)
        return dataset, ""

    return _first_directory_with_data(info.name, candidates(), probe, hint)


def event_transform(
    name: str, representation: Representation = "frames", frames: int | None = None
) -> ToFrames | ToCounts:
    """The transform ``events -> tensor`` of a representation of event dataset ``name``, with the
    record's defaults (module docstring): ``"frames"`` gives float32 ``[T, C, H, W]`` (``T`` =
    ``frames`` or the record's), ``"counts"`` the CNN's input ``[C, H, W]``, normalised as
    training normalises it."""
    info = _event_info(name)
    defaults = info.events
    assert defaults is not None
    if representation == "counts":
        return _counting(info, defaults.count_scale)
    if representation != "frames":
        raise ValueError(f"representation must be 'frames' or 'counts', got {representation!r}")
    steps = defaults.frames if frames is None else frames
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"frames must be an integer >= 1, got {steps!r}")
    return ToFrames(defaults.sensor_size, steps, slicing="time", polarity=defaults.polarity,
                    out_size=_binned_size(info), duration_us=defaults.window_us,
                    normalization=defaults.count_scale / steps)


def _binned_size(info: DatasetInfo) -> tuple[int, int] | None:
    """``(width, height)`` the sensor is binned to, ``None`` when it is not."""
    assert info.events is not None and info.image_size is not None
    height, width = info.image_size
    return None if (width, height) == tuple(info.events.sensor_size) else (width, height)


def _counting(info: DatasetInfo, normalization: float) -> ToCounts:
    """Counts of the record's window and binning, saturated at ``count_scale``, divided by
    ``normalization``."""
    defaults = info.events
    assert defaults is not None
    return ToCounts(defaults.sensor_size, duration_us=defaults.window_us,
                    polarity=defaults.polarity, out_size=_binned_size(info),
                    normalization=normalization, max_count=defaults.count_scale)


def event_loader(
    name: str,
    split: str = "test",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    representation: Representation = "frames",
    frames: int | None = None,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    augment: bool = False,
    drop_last: bool = False,
    indices=None,
) -> EventBatchLoader:
    """Batches of event dataset ``name`` streamed from its files, for an SNN run on events.

    ``representation="frames"`` (default) yields ``(frames [T, B, C, H, W] float32, labels [B]
    int64)`` with ``T = frames`` (default: the record's, e.g. 48 for CIFAR10-DVS), each frame
    the counts of its slice of the record's window divided by ``count_scale / T`` — the mean over
    ``T`` is the count image the CNN was trained on. ``"counts"`` yields that count image
    ``[B, C, H, W]`` (as :func:`~spikebridge.data.load_dataset` + ``BatchLoader`` give it, but
    read sample by sample). One sample's events are in memory at a time.

    ``augment`` applies the record's training augmentation to each batch — random crop with zero
    padding ``crop_padding`` and, where the record allows it, a horizontal flip, one draw per
    sample for all its frames (:mod:`spikebridge.events.augment`) — seeded from ``(seed,
    epoch)``. ``indices`` restricts the loader to these samples (e.g. a fixed test subset).

    Raises:
        ValueError: not an event dataset, bad split, ``frames`` or ``representation``.
        DatasetNotFoundError: the files are in none of the searched directories.
    """
    info = _event_info(name)
    transform = event_transform(info.name, representation, frames)
    dataset = open_event_dataset(info.name, split, data_dir)
    augmentation = (EventAugmentation(info.crop_padding, info.horizontal_flip) if augment
                    else None)
    return EventBatchLoader(dataset, batch_size, transform, shuffle=shuffle, seed=seed,
                            drop_last=drop_last, indices=indices, augment=augmentation)


def _event_info(name: str) -> DatasetInfo:
    info = dataset_info(name)
    if info.events is None:
        raise ValueError(f"{info.name} is not an event-camera dataset; those are "
                         f"{', '.join(event_dataset_names())}")
    return info


def _load_counts(name: str, split: str, data_dir: str | os.PathLike[str] | None) -> ImageDataset:
    """The count images of a split, in memory: uint8 ``[N, C, H, W]`` (counts saturated at 255),
    normalised by the record's mean 0 / std ``count_scale / 255``."""
    info = dataset_info(name)
    dataset = open_event_dataset(name, split, data_dir)
    counting = _counting(info, 1.0)  # whole counts <= count_scale <= 255: exact in uint8
    height, width = info.image_size
    images = torch.empty((len(dataset), info.channels, height, width), dtype=torch.uint8)
    for i in range(len(dataset)):
        events, _ = dataset[i]
        images[i] = counting(events)
    return ImageDataset(images=images, labels=torch.from_numpy(dataset.labels()), name=name,
                        split=split, classes=dataset.classes, mean=info.mean, std=info.std)


def _register(
    name: str,
    classes: int,
    image_size: tuple[int, int],
    crop_padding: int,
    horizontal_flip: bool,
    defaults: EventDefaults,
    opener: Callable[[Path, str], EventDataset],
    subdirs: tuple[str, ...],
    hint: str,
) -> None:
    channels = 2 if defaults.polarity == "split" else 1
    scale = defaults.count_scale
    if not 0 < scale <= 255:
        raise ValueError(f"{name}: count_scale must lie in (0, 255] (uint8 storage), got {scale}")
    height, width = image_size
    sensor = "x".join(map(str, defaults.sensor_size))
    window = ("the whole sample" if defaults.window_us is None
              else f"the first {defaults.window_us / 1e6:g} s")
    binning = f"{sensor} -> {width}x{height}" if (width, height) != defaults.sensor_size else sensor
    flip = " + horizontal flip" if horizontal_flip else " (no flip)"
    info = DatasetInfo(
        name, classes, channels, image_size, (0.0,) * channels, (scale / 255.0,) * channels,
        "memory", crop_padding,
        f"random crop with zero padding {crop_padding}{flip} of the count image (per batch)",
        f"event counts of {window} ({binning}), saturated at and divided by {scale:g}; "
        f"SNN: {defaults.frames} frames of that window; split: {defaults.split}",
        loader=lambda split, data_dir: _load_counts(name, split, data_dir),
        horizontal_flip=horizontal_flip, events=defaults)
    register_dataset(info)
    _OPENERS[name] = (opener, subdirs, hint)


_register(
    "nmnist", 10, (34, 34), crop_padding=2, horizontal_flip=False,
    defaults=EventDefaults(
        sensor_size=(34, 34), window_us=None, frames=30, polarity="split",
        count_scale=COUNT_SCALE, split="official Train/ and Test/ folders, 60000/10000",
        source="N-MNIST (Orchard et al. 2015): 34x34 sensor, three 100 ms saccades; frames "
               "(about 10 ms each) our choice"),
    opener=lambda directory, split: NMNIST(directory, split),
    subdirs=("nmnist",),
    hint=_hint("nmnist", "Train/<0..9>/*.bin and Test/<0..9>/*.bin (or NMNIST/ with them)",
               "Train.zip and Test.zip from https://www.garrickorchard.com/datasets/n-mnist, "
               "unzip both"),
)

_register(
    "cifar10-dvs", 10, (42, 42), crop_padding=4, horizontal_flip=True,
    defaults=EventDefaults(
        sensor_size=(128, 128), window_us=1_300_000, frames=48, polarity="split",
        count_scale=COUNT_SCALE,
        split=f"no official split: seeded random 9:1 per class (seed {CIFAR10DVS_SPLIT_SEED})",
        source="ECC paper section 4.5 (first 1.3 s, 128 -> 42, 48 frames)"),
    opener=lambda directory, split: CIFAR10DVS(directory, split, split_scheme="random",
                                               split_seed=CIFAR10DVS_SPLIT_SEED),
    subdirs=("cifar10-dvs",),
    hint=_hint("cifar10-dvs", "the ten class folders airplane/ ... truck/ with *.aedat (or "
               "SpikingJelly's *.npz)", "the ten class zips of CIFAR10-DVS (Li et al. 2017, "
               "figshare) and unzip them into one folder"),
)

_register(
    "dvs-gesture", 11, (64, 64), crop_padding=4, horizontal_flip=False,
    defaults=EventDefaults(
        sensor_size=(128, 128), window_us=None, frames=60, polarity="split",
        count_scale=COUNT_SCALE,
        split="official trials_to_train.txt / trials_to_test.txt (users 1-23 / 24-29)",
        source="DVS128 Gesture (Amir et al. 2017), one sample per labelled window; 64x64 "
               "binning and frames (about 100 ms each) our choice"),
    opener=lambda directory, split: DVSGesture(directory, split),
    subdirs=("dvs-gesture",),
    hint=_hint("dvs-gesture", "userNN_<lighting>.aedat with userNN_<lighting>_labels.csv and "
               "trials_to_train.txt / trials_to_test.txt (or DvsGesture/ with them)",
               "DvsGesture.tar.gz from https://research.ibm.com/interactive/dvsgesture/ and "
               "extract it"),
)
