"""Batches of dense tensors from an event dataset, streamed sample by sample.

:class:`EventBatchLoader` reads the samples of a batch one at a time, turns each into a tensor
with the given transform (:class:`~.frames.ToFrames` or :class:`~.frames.ToCounts`) and drops
its events before reading the next; it yields

- ``(frames [T, B, C, H, W], labels [B])`` for a transform giving ``[T, C, H, W]`` (time-major,
  the layout a spiking network is stepped in), or
- ``(counts [B, C, H, W], labels [B])`` for one giving ``[C, H, W]``.

Memory: at most one sample's event array is alive at any moment (so never more than one batch
of events), plus the tensors of the batch being built; nothing is cached across batches.

Order: dataset order, or with ``shuffle=True`` a permutation drawn from
``numpy.random.default_rng([seed, epoch])``: reproducible for a seed, different each epoch (the
epoch advances at each ``iter()``, or is set with :meth:`EventBatchLoader.set_epoch`).

Augmentation (``augment``, e.g. :class:`~.augment.EventAugmentation`) runs on each assembled
batch with a :class:`torch.Generator` seeded from ``(seed, epoch)`` and drawn from batch after
batch, so an epoch's augmentation is reproducible for a seed, as its order is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

__all__ = ["EventBatchLoader"]


class EventBatchLoader:
    """Iterate an event dataset in batches of transformed tensors.

    Args:
        dataset: an object with ``len()`` and ``dataset[i] -> (events, label)``.
        batch_size: samples per batch (> 0).
        transform: ``events -> tensor`` of shape ``[T, C, H, W]`` or ``[C, H, W]``, the same
            for every sample.
        shuffle: permute the samples each epoch.
        seed: seed of the permutation.
        drop_last: drop a final batch smaller than ``batch_size``.
        indices: iterate only these dataset indices (e.g. a validation subset).
        augment: ``(batch, generator) -> batch`` applied to every batch (training only), e.g.
            :class:`~.augment.EventAugmentation`.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        transform: Callable[[np.ndarray], torch.Tensor],
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        indices: Sequence[int] | None = None,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset, self.batch_size, self.transform = dataset, int(batch_size), transform
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)
        self.augment = augment
        self.epoch = 0

    def _n(self) -> int:
        return len(self.dataset) if self.indices is None else int(self.indices.shape[0])

    def __len__(self) -> int:
        n = self._n()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Fix the epoch whose permutation the next ``iter()`` uses."""
        self.epoch = int(epoch)

    def order(self, epoch: int | None = None) -> np.ndarray:
        """The sample order of an epoch (the current one by default)."""
        base = np.arange(self._n(), dtype=np.int64) if self.indices is None else self.indices.copy()
        if self.shuffle:
            epoch = self.epoch if epoch is None else int(epoch)
            base = base[np.random.default_rng([self.seed, epoch]).permutation(base.shape[0])]
        return base

    def augmentation_generator(self, epoch: int | None = None) -> torch.Generator:
        """The generator an epoch's augmentation draws from (the current epoch by default)."""
        epoch = self.epoch if epoch is None else int(epoch)
        state = np.random.SeedSequence([self.seed % 2**64, epoch, 2]).generate_state(1, np.uint64)
        return torch.Generator().manual_seed(int(state[0]))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order()
        generator = self.augmentation_generator() if self.augment is not None else None
        self.epoch += 1
        n = order.shape[0]
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            batch, labels = self._batch(order[start : start + self.batch_size])
            if self.augment is not None:
                batch = self.augment(batch, generator)
            yield batch, labels

    def _batch(self, which: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        tensors, labels = [], []
        for i in which:
            events, label = self.dataset[int(i)]
            tensors.append(self.transform(events))
            del events  # release this sample's events before reading the next one
            labels.append(int(label))
        shape = tensors[0].shape
        if any(t.shape != shape for t in tensors):
            shapes = sorted({tuple(t.shape) for t in tensors})
            raise ValueError(f"the transform gave tensors of different shapes: {shapes}")
        if len(shape) == 4:  # [T, C, H, W] -> [T, B, C, H, W]
            batch = torch.stack(tensors, dim=1)
        elif len(shape) == 3:  # [C, H, W] -> [B, C, H, W]
            batch = torch.stack(tensors, dim=0)
        else:
            raise ValueError(f"transform must give [T, C, H, W] or [C, H, W], got {tuple(shape)}")
        return batch, torch.tensor(labels, dtype=torch.int64)
