"""What each registered dataset is: classes, channels, image size, normalisation, transforms.

One :class:`DatasetInfo` per name accepted by ``--dataset`` (``spikebridge info`` prints them;
docs/data.md explains them). It is the reference the loaders are tested against
(``tests/test_data.py``) and where training reads its default augmentation from.
"""

from __future__ import annotations

from dataclasses import dataclass

from spikebridge.data.cifar import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD
from spikebridge.data.datasets import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    MNIST_MEAN,
    MNIST_STD,
    dataset_key,
)
from spikebridge.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["DATASETS", "DatasetInfo", "dataset_info"]


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset's fixed properties.

    ``num_classes`` is ``None`` when the data defines it (an image-folder tree's class
    folders); ``image_size`` is ``None`` for streamed datasets, whose images are cropped to
    ``--image-size`` (default 224); ``mean``/``std`` are ``None`` when computed from the
    training split (scikit-learn's digits). ``crop_padding`` is the zero padding of the random
    crop in-memory training uses (0: streamed, augmented per image instead).
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


_MEMORY_TEST = "none (scale to [0, 1], normalise)"
_STREAMED_TRAIN = ("RandomResizedCrop(S, scale 0.08-1, ratio 3/4-4/3) + horizontal flip, "
                   "normalise")
_STREAMED_TEST = "resize the shorter side to S·256/224, centre crop S×S, normalise"


def _memory_train(padding: int) -> str:
    return (f"random crop with zero padding {padding} + horizontal flip (per batch; AutoAugment "
            "and Cutout on request), normalise")


DATASETS: dict[str, DatasetInfo] = {info.name: info for info in (
    DatasetInfo("fashion-mnist", 10, 1, (28, 28), FASHION_MNIST_MEAN, FASHION_MNIST_STD,
                "memory", 2, _memory_train(2), _MEMORY_TEST),
    DatasetInfo("mnist", 10, 1, (28, 28), MNIST_MEAN, MNIST_STD, "memory", 2,
                _memory_train(2), _MEMORY_TEST),
    DatasetInfo("digits", 10, 1, (8, 8), None, None, "memory", 2, _memory_train(2),
                _MEMORY_TEST),
    DatasetInfo("cifar10", 10, 3, (32, 32), CIFAR10_MEAN, CIFAR10_STD, "memory", 4,
                _memory_train(4), _MEMORY_TEST),
    DatasetInfo("cifar100", 100, 3, (32, 32), CIFAR100_MEAN, CIFAR100_STD, "memory", 4,
                _memory_train(4), _MEMORY_TEST),
    DatasetInfo("cifar100-coarse", 20, 3, (32, 32), CIFAR100_MEAN, CIFAR100_STD, "memory", 4,
                _memory_train(4), _MEMORY_TEST),
    DatasetInfo("imagenet", 1000, 3, None, IMAGENET_MEAN, IMAGENET_STD, "streamed", 0,
                _STREAMED_TRAIN, _STREAMED_TEST),
    DatasetInfo("imagefolder", None, 3, None, IMAGENET_MEAN, IMAGENET_STD, "streamed", 0,
                _STREAMED_TRAIN, _STREAMED_TEST),
)}


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered dataset (names as ``--dataset`` takes them).

    Raises:
        ValueError: ``name`` is not registered; the message lists the names that are.
    """
    key = dataset_key(name)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))}")
    return DATASETS[key]
