"""The batches a run reads: held in memory or streamed from disk, for one process or this
process's share of a multi-process run (:mod:`spikebridge.distributed`).

* :func:`open_dataset` — a split by name: an in-memory :class:`ImageDataset` (MNIST, CIFAR, …)
  or a streamed :class:`ImageFolderDataset` (ImageNet, image folders), which never has to fit
  in RAM.
* :func:`training_loader` — this process's part of every global batch. ``R`` processes with
  ``batch_size / R`` images each see exactly the global batches one process sees with
  ``batch_size`` (same shuffle order and augmentation from the same seed), which is what makes
  DistributedDataParallel training equal to one-process training.
* :func:`evaluation_loader` — this process's share of the test set: whole batches of the
  one-process run, every image exactly once over all processes (no padding duplicates), so the
  correct counts summed over processes are exactly the one-process counts.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from spikebridge import distributed
from spikebridge.data.datasets import (
    STREAMING_DATASETS,
    ImageDataset,
    dataset_key,
    load_dataset,
)
from spikebridge.data.imagefolder import (
    ImageFolderDataset,
    StreamingLoader,
    load_streaming_dataset,
    make_loader,
)
from spikebridge.data.loader import BatchLoader

__all__ = [
    "Dataset",
    "RankShare",
    "evaluation_loader",
    "is_streamed",
    "open_checkpoint_split",
    "open_dataset",
    "training_loader",
]

Dataset = ImageDataset | ImageFolderDataset
Loader = BatchLoader | StreamingLoader


def is_streamed(name: str) -> bool:
    """Whether dataset ``name`` is read image by image from disk (ImageNet, image folders)."""
    return dataset_key(name) in STREAMING_DATASETS


def open_dataset(
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    augment: bool | None = None,
    input_size: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Dataset:
    """Split ``split`` of dataset ``name``: loaded into memory, or opened for streaming.

    ``augment``, ``input_size`` (``(S, S)``), ``mean`` and ``std`` apply to streamed datasets
    only (their transforms run per image; in-memory sets augment per batch in the loader):
    default training transform for ``"train"``, 224 pixels, ImageNet's normalisation.
    """
    if not is_streamed(name):
        return load_dataset(name, split, data_dir)
    options: dict[str, Any] = {"augment": augment, "mean": mean, "std": std}
    if input_size is not None:
        height, width = input_size
        if height != width:
            raise ValueError(f"streamed datasets produce square images, got size {input_size}")
        options["image_size"] = int(height)
    return load_streaming_dataset(name, split, data_dir, **options)


def open_checkpoint_split(
    config: dict, split: str, data_dir: str | os.PathLike[str] | None = None
) -> Dataset:
    """Split ``split`` of the dataset a checkpoint's ``config`` was trained on, for evaluation:
    in memory, or streamed at the model's input size and normalisation (no augmentation)."""
    norm = config.get("normalization") or {}
    return open_dataset(config["dataset"], split, data_dir, augment=False,
                        input_size=config.get("input_size"), mean=norm.get("mean"),
                        std=norm.get("std"))


class RankShare:
    """This process's part of every batch of ``loader``: samples ``rank, rank + R, …``.

    Every process runs the whole ``loader`` (same order, same augmentation draws) and keeps its
    share, so the ``R`` shares of a batch are exactly that batch. Used for in-memory datasets,
    whose batch augmentation draws its random numbers batch by batch.
    """

    def __init__(self, loader: BatchLoader, rank: int, world_size: int) -> None:
        if loader.batch_size % world_size:
            raise ValueError(f"batch size {loader.batch_size} is not divisible by "
                             f"{world_size} processes")
        self.loader, self.rank, self.world_size = loader, rank, world_size
        self.batch_size = loader.batch_size // world_size

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def epoch(self) -> int:
        """The epoch the next ``iter()`` will use."""
        return self.loader.epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` reproduce epoch ``epoch``."""
        self.loader.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = iter(self.loader)  # now, as the loader's own iter(): it starts the epoch
        share = slice(self.rank, None, self.world_size)
        return ((x[share], y[share]) for x, y in batches)


def training_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    seed: int = 0,
    augment: bool = True,
    workers: int = 0,
    crop_padding: int = 2,
    horizontal_flip: bool = True,
    autoaugment: bool = False,
    cutout: int = 0,
    device: str | torch.device = "cpu",
) -> BatchLoader | RankShare | StreamingLoader:
    """Shuffled training batches of this process; ``batch_size`` is the global batch.

    In a run of ``R`` processes each gets ``batch_size / R`` images per step, together exactly
    the one-process batch (see the module docstring); incomplete batches are dropped.
    In-memory sets: every process prepares the whole batch and keeps its share (augmentation
    identical to one process; the loading is not divided — these sets are small). Streamed sets:
    a :class:`~torch.utils.data.DistributedSampler` gives each process its own images to decode,
    with ``workers`` decoding processes each. ``augment`` (the master switch: random crop with
    ``crop_padding`` and, if ``horizontal_flip``, a flip), ``autoaugment`` and ``cutout`` apply
    to in-memory sets, batched on ``device`` (a streamed set's transform is
    chosen when it is opened).

    Raises:
        ValueError: ``batch_size`` not divisible by the number of processes, or bad arguments.
    """
    world = distributed.world_size()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    _check_workers(workers)
    if batch_size % world:
        raise ValueError(
            f"the global batch size {batch_size} does not split evenly over {world} processes; "
            f"use a multiple of {world} (each process takes batch_size / {world} images)"
        )
    if isinstance(dataset, ImageFolderDataset):
        if autoaugment or cutout:
            raise ValueError(f"AutoAugment and Cutout run on in-memory batches; {dataset.name} is "
                             "streamed from disk (its transform: random resized crop + flip)")
        return make_loader(dataset, batch_size // world, shuffle=True, workers=workers,
                           seed=seed, distributed=world > 1, drop_last=True)
    if workers:
        raise ValueError(f"--workers {workers}: {dataset.name} is held in memory and batched in "
                         "this process; worker processes only decode streamed datasets")
    loader = BatchLoader(dataset, batch_size, shuffle=True, augment=augment, seed=seed,
                         drop_last=True, crop_padding=crop_padding, hflip=horizontal_flip,
                         autoaugment=autoaugment,
                         cutout=cutout, device=device)
    return loader if world == 1 else RankShare(loader, distributed.rank(), world)


class _Slice(torch.utils.data.Dataset):
    """Samples ``start … stop - 1`` of a streamed dataset (its metadata passes through)."""

    def __init__(self, dataset: ImageFolderDataset, start: int, stop: int) -> None:
        self.dataset, self.start, self.stop = dataset, start, stop

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling in a spawned worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return self.stop - self.start

    def load(self, index: int, seed: int | None = None) -> tuple[torch.Tensor, int]:
        """Sample ``start + index`` of the underlying dataset."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.dataset.load(self.start + index, seed)


def _check_workers(workers: int) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"--workers must be an integer >= 0 (decoding processes), got {workers!r}")


def _share_of_batches(batches: int, world: int) -> tuple[int, int]:
    """Batches ``first … stop - 1`` (of ``batches``) evaluated by this process."""
    rank = distributed.rank() if world > 1 else 0
    return rank * batches // world, (rank + 1) * batches // world


def evaluation_loader(
    dataset: Dataset, batch_size: int, *, workers: int = 0, shard: bool = True,
    idle_processes: bool = False,
) -> BatchLoader | StreamingLoader:
    """Batches of ``dataset`` in order, no augmentation; in a run of ``R`` processes only this
    process's share (all of them with ``shard=False``, e.g. calibration images every process
    must see).

    The one-process run's batches are dealt out whole: process ``r`` takes batches
    ``⌊r·n/R⌋ … ⌊(r+1)·n/R⌋ - 1`` of the ``n``. Every image is evaluated exactly once, in the
    same batch as in one process (same arithmetic, so identical spikes), and counts summed over
    the processes equal the one-process counts exactly.

    Raises:
        ValueError: fewer batches than processes (some process would have nothing to do),
            unless ``idle_processes``; the message says how to fix it.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    _check_workers(workers)
    n = len(dataset)
    batches = -(-n // batch_size)
    world = distributed.world_size() if shard else 1
    if world > batches and not idle_processes:
        if world > n:
            advice = f"use at most {n} processes"
        else:
            advice = (f"use --batch-size {n // world} or less, or at most {batches} "
                      "process(es)")
        raise ValueError(
            f"{world} processes share {n} test images in {batches} batch(es) of {batch_size}: "
            f"fewer batches than processes; {advice}"
        )
    first, stop = _share_of_batches(batches, world)
    start, end = first * batch_size, min(stop * batch_size, n)
    if isinstance(dataset, ImageFolderDataset):
        part = dataset if world == 1 else _Slice(dataset, start, end)
        return make_loader(part, batch_size, workers=workers)
    if workers:
        raise ValueError(f"--workers {workers}: {dataset.name} is held in memory and batched in "
                         "this process; worker processes only decode streamed datasets")
    part = dataset if world == 1 else dataclasses.replace(
        dataset, images=dataset.images[start:end], labels=dataset.labels[start:end])
    return BatchLoader(part, batch_size)
