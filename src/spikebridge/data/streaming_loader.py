"""Batching a streamed dataset with worker processes: :func:`make_loader` and its loader.

:func:`make_loader` wraps an :class:`~spikebridge.data.imagefolder.ImageFolderDataset` (or
anything with ``len()`` and ``load(index, seed)``) in a :class:`StreamingLoader`: a
:class:`~torch.utils.data.DataLoader` whose sampler (:mod:`spikebridge.data.seeded_sampling`)
fixes the order and every image's augmentation by ``(seed, epoch)``, with the epoch logic of
:class:`~spikebridge.data.loader.BatchLoader`. A :class:`CorruptImageError` in a worker comes
back as a record, and is raised in the main process (not as a worker traceback), or, with
``skip_corrupt=True``, the image is dropped, warned about and recorded in ``loader.skipped``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from spikebridge.data.loader import EpochCounter
from spikebridge.data.seeded_sampling import SeededSampler, _SeededDistributedSampler
from spikebridge.dataset_errors import CorruptImageError

__all__ = ["StreamedDataset", "StreamingLoader", "make_loader"]


class StreamedDataset(Protocol):
    """What :func:`make_loader` batches, e.g. an
    :class:`~spikebridge.data.imagefolder.ImageFolderDataset`: ``len()`` samples, each decoded
    and transformed by ``load(index, seed)``."""

    def __len__(self) -> int: ...

    def load(self, index: int, seed: int | None = None) -> tuple[torch.Tensor, int]: ...


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch single-threaded inside the block (restoring the thread count after it).

    The per-image ops are far too small to gain from intra-op threads, and when the CPUs are
    busy (training, other processes) their thread hand-offs cost 10-100× the work itself.
    DataLoader workers are single-threaded already; this covers ``workers=0``.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _Guarded(Dataset):
    """Wraps a dataset so that a corrupt image becomes a record, not a worker exception."""

    def __init__(self, dataset: StreamedDataset) -> None:
        self.dataset = dataset

    def __getattr__(self, name: str) -> Any:  # loader.dataset.classes etc. reach the dataset
        if name == "dataset":  # not set yet (during unpickling in a spawned worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, int, tuple[str, str] | None]:
        try:
            x, y = self.dataset.load(*key)
        except CorruptImageError as exc:
            return None, -1, (exc.path, exc.reason)
        return x, y, None


def _collate(items: list[tuple[Any, int, tuple[str, str] | None]]):
    good = [(x, y) for x, y, failure in items if failure is None]
    failures = [failure for _, _, failure in items if failure is not None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), failures
    with _one_thread():  # a memory copy: threads only add hand-offs
        x = torch.stack([x for x, _ in good])
    y = torch.tensor([y for _, y in good], dtype=torch.int64)
    return x, y, failures


class StreamingLoader(EpochCounter, DataLoader):
    """A :class:`DataLoader` yielding ``(x, y)`` batches with the epoch logic of ``BatchLoader``.

    Every ``iter()`` uses the current epoch (shuffle order and augmentation seeds) and then
    advances it; :meth:`set_epoch` replays an epoch. Build it with :func:`make_loader`.

    Attributes:
        skip_corrupt: drop unreadable images (else raise :class:`CorruptImageError`).
        skipped: ``(path, reason)`` of every image dropped so far.
    """

    def __init__(self, *args: Any, skip_corrupt: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skip_corrupt = skip_corrupt
        self.skipped: list[tuple[str, str]] = []
        self._epoch = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.set_epoch(self._next_epoch())
        return self._batches()

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        skipped = 0
        for x, y, failures in super().__iter__():
            if failures:
                if not self.skip_corrupt:
                    path, reason = failures[0]
                    raise CorruptImageError(path, reason) from None
                self.skipped += failures
                skipped += len(failures)
            if len(y):
                yield x, y
        if skipped:
            first = self.skipped[-skipped][0]
            warnings.warn(
                f"skipped {skipped} unreadable image(s) this epoch (first: {first}); "
                f"see loader.skipped",
                stacklevel=2,
            )


def make_loader(
    dataset: StreamedDataset,
    batch_size: int,
    shuffle: bool = False,
    workers: int = 0,
    seed: int = 0,
    distributed: bool | None = False,
    *,
    drop_last: bool = False,
    skip_corrupt: bool = False,
    pin_memory: bool | None = None,
) -> StreamingLoader:
    """Batch a streamed dataset with worker processes.

    Batches ``(x, y)``: float32 ``[B, 3, S, S]`` and int64 ``[B]``. The shuffle order and every
    image's augmentation are fixed by ``(seed, epoch)`` and the image's index, so any number of
    workers yields the same batches.

    Args:
        dataset: an :class:`ImageFolderDataset` (or anything with ``load(index, seed)``).
        batch_size: images per batch.
        shuffle: a fresh order every epoch.
        workers: decoding processes (0 decodes in the calling process).
        seed: base seed of order and augmentation.
        distributed: use a :class:`DistributedSampler` (this rank's share of every epoch);
            ``None`` does so exactly when ``torch.distributed`` is initialised.
        drop_last: drop the final short batch.
        skip_corrupt: drop unreadable images (warning once per epoch, listing them in
            ``loader.skipped``) instead of raising :class:`CorruptImageError`.
        pin_memory: page-locked batches for fast GPU copies; default: when CUDA is available.

    Raises:
        ValueError: bad ``batch_size``/``workers``, or ``distributed=True`` without an
            initialised process group.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed is None:
        distributed = initialised
    if distributed:
        if not initialised:
            raise ValueError(
                "distributed=True needs torch.distributed.init_process_group() to be called first"
            )
        sampler: Sampler = _SeededDistributedSampler(
            dataset, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
    else:
        sampler = SeededSampler(len(dataset), shuffle=shuffle, seed=seed)
    return StreamingLoader(
        _Guarded(dataset),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
        skip_corrupt=skip_corrupt,
    )
