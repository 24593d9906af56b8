"""The order a streamed dataset is visited in, and each image's augmentation seed.

Both are fixed by ``(seed, epoch)``: :func:`_epoch_order` is the epoch's (optionally shuffled)
order, :func:`_item_seeds` one augmentation seed per dataset index. :class:`SeededSampler`
yields ``(index, seed)`` pairs in that order; :class:`_SeededDistributedSampler` yields one
rank's share of it, so the ranks of a distributed run together see the batches of one process.
Any number of DataLoader workers therefore yields the same batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler

__all__ = ["SeededSampler"]


def _item_seeds(seed: int, epoch: int, n: int) -> np.ndarray:
    """One augmentation seed per dataset index, fixed by ``(seed, epoch)``."""
    sequence = np.random.SeedSequence([seed % 2**64, epoch, 1])
    return np.random.default_rng(sequence).integers(0, 2**63 - 1, size=n, dtype=np.int64)


class SeededSampler(Sampler):
    """Yields ``(index, augmentation seed)`` pairs, shuffled per epoch from ``(seed, epoch)``."""

    def __init__(self, n: int, shuffle: bool = False, seed: int = 0) -> None:
        self.n, self.shuffle, self.seed, self.epoch = int(n), shuffle, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next iteration (order and augmentation)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = _epoch_order(self.n, self.shuffle, self.seed, self.epoch)
        seeds = _item_seeds(self.seed, self.epoch, self.n)
        return ((i, int(seeds[i])) for i in order)


def _epoch_order(n: int, shuffle: bool, seed: int, epoch: int) -> list[int]:
    """The order one epoch visits ``n`` samples in: a permutation drawn from ``(seed, epoch)``."""
    if not shuffle:
        return list(range(n))
    state = np.random.SeedSequence([seed % 2**64, epoch]).generate_state(1, np.uint64)
    generator = torch.Generator().manual_seed(int(state[0]))
    return torch.randperm(n, generator=generator).tolist()


class _SeededDistributedSampler(DistributedSampler):
    """:class:`DistributedSampler` (this rank's share) yielding ``(index, seed)`` pairs.

    The epoch's order is :class:`SeededSampler`'s, and rank ``r`` of ``R`` takes positions
    ``r, r + R, r + 2R, …`` of it (truncated or padded as :class:`DistributedSampler` does). So
    the ``k``-th batches of ``b`` images of the ``R`` ranks together hold exactly the ``k``-th
    batch of ``R·b`` images of one process: DDP with a per-rank batch of ``b`` sees the same
    global batches as one process.
    """

    def __iter__(self) -> Iterator[tuple[int, int]]:
        n = len(self.dataset)
        order = _epoch_order(n, self.shuffle, self.seed, self.epoch)
        if self.drop_last:
            order = order[: self.total_size]
        else:
            padding = self.total_size - len(order)
            order += (order * math.ceil(padding / max(len(order), 1)))[:padding]
        seeds = _item_seeds(self.seed, self.epoch, n)
        share = order[self.rank : self.total_size : self.num_replicas]
        return ((i, int(seeds[i])) for i in share)
