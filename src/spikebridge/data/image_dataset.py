"""The in-memory image-classification dataset, and the registry record of one.

:class:`ImageDataset` holds a whole split as uint8 tensors (what :func:`load_dataset
<spikebridge.data.datasets.load_dataset>` returns and :class:`~spikebridge.data.loader.BatchLoader`
batches); every in-memory loader (MNIST-style IDX files, scikit-learn's digits, CIFAR) builds
one. :func:`memory_dataset_info` fills in what all such datasets share in their
:class:`~spikebridge.data.registry.DatasetInfo`: they are held in memory and augmented per batch
(random crop with zero padding + horizontal flip).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from spikebridge.data.registry import DatasetInfo
from spikebridge.dataset_errors import DatasetFormatError

__all__ = ["ImageDataset", "memory_dataset_info"]


@dataclass
class ImageDataset:
    """An image-classification dataset held in memory.

    Attributes:
        images: uint8 tensor ``[N, C, H, W]``.
        labels: int64 tensor ``[N]`` with values in ``[0, num_classes)``.
        name: registry name of the dataset (e.g. ``"fashion-mnist"``).
        split: ``"train"`` or ``"test"``.
        classes: human-readable class names; ``labels`` index into it.
        mean: per-channel mean of the images scaled to ``[0, 1]`` (the normalisation constants).
        std: per-channel standard deviation of the images scaled to ``[0, 1]``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    split: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DatasetFormatError(
                f"{self.name}/{self.split}: images must be a uint8 tensor [N, C, H, W], "
                f"got {self.images.dtype} of shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise DatasetFormatError(
                f"{self.name}/{self.split}: labels must be an int64 tensor [N], "
                f"got {self.labels.dtype} of shape {tuple(self.labels.shape)}"
            )
        if len(self.images) != len(self.labels):
            raise DatasetFormatError(
                f"{self.name}/{self.split}: {len(self.images)} images but {len(self.labels)} labels"
            )
        self.classes = tuple(self.classes)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        channels = self.images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise DatasetFormatError(
                f"{self.name}/{self.split}: mean/std need one value per channel ({channels}), "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if any(not s > 0 for s in self.std):
            raise DatasetFormatError(f"{self.name}/{self.split}: std must be > 0, got {self.std}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """Number of image channels ``C``."""
        return int(self.images.shape[1])

    @property
    def input_size(self) -> tuple[int, int]:
        """Image size ``(H, W)``."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def fingerprint(self) -> str:
        """SHA-256 of the images and labels (shapes included): the identity of this exact data.

        A checkpoint records its test set's fingerprint, so evaluating it later on other files
        under the same dataset name (MNIST's digits handed over as Fashion-MNIST, a different
        subset) is caught (docs/reliability.md).
        """
        digest = hashlib.sha256()
        digest.update(repr((tuple(self.images.shape), tuple(self.labels.shape))).encode())
        digest.update(self.images.contiguous().numpy().tobytes())
        digest.update(self.labels.contiguous().numpy().tobytes())
        return digest.hexdigest()

    def subset(self, n: int | None, seed: int = 0) -> ImageDataset:
        """Return a random subset of ``n`` samples (not stratified), or ``self``.

        The subset is the first ``n`` indices of a permutation drawn with ``seed``, so subsets of
        different sizes with the same seed are nested. ``mean``/``std`` are kept from the full
        dataset.

        Args:
            n: subset size; ``None`` or ``n >= len(self)`` returns ``self`` unchanged.
            seed: seed of the permutation.
        """
        if n is None or n >= len(self):
            return self
        if n < 0:
            raise ValueError(f"subset size must be >= 0 or None, got {n}")
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(self), generator=generator)[:n]
        return ImageDataset(
            images=self.images[index],
            labels=self.labels[index],
            name=self.name,
            split=self.split,
            classes=self.classes,
            mean=self.mean,
            std=self.std,
        )


_MEMORY_TEST = "none (scale to [0, 1], normalise)"


def _memory_train(padding: int) -> str:
    return (f"random crop with zero padding {padding} + horizontal flip (per batch; AutoAugment "
            "and Cutout on request), normalise")


def memory_dataset_info(
    name: str,
    num_classes: int,
    channels: int,
    image_size: tuple[int, int],
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    crop_padding: int,
    *,
    loader: Callable[[str, str | Path | None], ImageDataset],
) -> DatasetInfo:
    """The :class:`DatasetInfo` of a dataset held in memory (``storage="memory"``), with the
    description of its per-batch training transform (random crop with zero padding
    ``crop_padding`` + flip) and of its test transform (none)."""
    return DatasetInfo(name, num_classes, channels, image_size, mean, std, "memory", crop_padding,
                       _memory_train(crop_padding), _MEMORY_TEST, loader=loader)
