"""Reproducible in-memory mini-batch iteration over an :class:`ImageDataset`."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from spikebridge.batch_transforms import normalize, to_float
from spikebridge.data.augment import Augmentation
from spikebridge.data.image_dataset import ImageDataset

__all__ = ["BatchLoader"]


class EpochCounter:
    """The epoch state shared by our loaders: each ``iter()`` uses the current epoch and
    advances it; :meth:`set_epoch` makes the next ``iter()`` reproduce a given epoch."""

    _epoch: int = 0

    @property
    def epoch(self) -> int:
        """The epoch the next ``iter()`` will use."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` reproduce epoch ``epoch`` (shuffle order and augmentation)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch = int(epoch)

    def _next_epoch(self) -> int:
        """The epoch this ``iter()`` uses; the next one will use the following epoch."""
        epoch = self._epoch
        self._epoch += 1
        return epoch


class BatchLoader(EpochCounter):
    """Iterate over an in-memory dataset in mini-batches ``(x, y)``.

    ``x`` is float32 ``[B, C, H, W]``, scaled to ``[0, 1]`` and normalised with the dataset's
    ``mean``/``std``; ``y`` is int64 ``[B]``. Batches are produced on ``device`` (the CPU by
    default): the uint8 images are moved there first, so augmentation runs on the GPU when
    ``device`` is one — with the same random draws, from a CPU generator, as on the CPU.

    Randomness (shuffling and augmentation) comes from a generator seeded from ``(seed, epoch)``.
    Every call of ``iter()`` uses the current epoch and then advances it by one, so successive
    epochs differ while a rerun with the same seed repeats them exactly; :meth:`set_epoch` sets
    the epoch the next ``iter()`` uses (e.g. when resuming a training run).

    Args:
        dataset: the dataset to iterate over.
        batch_size: samples per batch (>= 1).
        shuffle: visit the samples in a fresh random order every epoch.
        augment: apply random crop (zero padding ``crop_padding``), if ``hflip`` random
            horizontal flip (p = 0.5), if ``autoaugment`` AutoAugment's CIFAR-10 policy, then
            normalise and, if ``cutout`` > 0, Cutout of that side
            (:class:`~spikebridge.data.augment.Augmentation`). Off for evaluation.
        seed: base seed of the per-epoch generator.
        drop_last: drop the final batch if it is smaller than ``batch_size``.
        crop_padding: padding of the random crop (0 disables the crop).
        hflip: include the random horizontal flip in the augmentation.
        autoaugment: include AutoAugment (CIFAR-10 policy) in the augmentation.
        cutout: side of the Cutout square in pixels (0 = no Cutout).
        device: where batches are assembled, augmented and returned.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        crop_padding: int = 2,
        hflip: bool = True,
        autoaugment: bool = False,
        cutout: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.seed = int(seed)
        self.drop_last = drop_last
        self.crop_padding = int(crop_padding)
        self.hflip = hflip
        self.augmentation = Augmentation(self.crop_padding, hflip, autoaugment, int(cutout))
        self.device = torch.device(device)
        self._epoch = 0

    def __len__(self) -> int:
        n = len(self.dataset)
        if self.drop_last:
            return n // self.batch_size
        return -(-n // self.batch_size)

    def _generator(self, epoch: int) -> torch.Generator:
        # Mix (seed, epoch) through SeedSequence so nearby pairs give unrelated streams.
        state = np.random.SeedSequence([self.seed % 2**64, epoch]).generate_state(1, np.uint64)
        return torch.Generator().manual_seed(int(state[0]))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._batches(self._next_epoch())

    def _batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = self._generator(epoch)
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        images, labels = self.dataset.images, self.dataset.labels
        mean, std = self.dataset.mean, self.dataset.std
        for b in range(len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            batch = images[index].to(self.device, non_blocking=True)
            if self.augment:
                x = self.augmentation(batch, generator, mean, std)
            else:
                x = normalize(to_float(batch), mean, std)
            yield x, labels[index].to(self.device, non_blocking=True)
