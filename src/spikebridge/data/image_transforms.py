"""The per-image transforms of streamed datasets, on uint8 tensors ``[3, H, W]`` (no torchvision).

Bilinear interpolation with antialiasing throughout:

* training (:class:`TrainTransform`): RandomResizedCrop to ``size`` (area scale ``(0.08, 1)``,
  aspect ratio ``(3/4, 4/3)``; :func:`random_resized_crop_box`, :func:`resized_crop`) and a
  horizontal flip with probability 0.5;
* evaluation (:class:`EvalTransform`): resize the shorter side to ``resize_size`` (256 for 224;
  :func:`resize_shorter_side`) and take the centre ``size`` crop (:func:`center_crop`).

Random draws come from the ``generator`` passed in, so an image's augmentation is fixed by its
seed. The batch transforms of in-memory datasets are in :mod:`spikebridge.data.transforms`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "EvalTransform",
    "TrainTransform",
    "center_crop",
    "random_resized_crop_box",
    "resize_shorter_side",
    "resized_crop",
]


def _interpolate(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of a uint8 ``[3, H, W]`` tensor (channels-last fast path)."""
    batch = image.unsqueeze(0).contiguous(memory_format=torch.channels_last)
    if tuple(batch.shape[-2:]) == size:
        return batch[0]
    out = F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out[0]


def random_resized_crop_box(
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """Draw the box ``(top, left, h, w)`` of a RandomResizedCrop (the usual Inception recipe).

    Up to 10 tries draw an area fraction uniformly from ``scale`` and an aspect ratio ``w / h``
    log-uniformly from ``ratio``; the first box that fits gets a uniform position. If none fits,
    the centred box of the whole image clamped to ``ratio`` is used.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=generator))
        aspect = math.exp(
            float(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator))
        )
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(
    image: torch.Tensor, top: int, left: int, height: int, width: int, size: int
) -> torch.Tensor:
    """Crop ``image[:, top:top+height, left:left+width]`` and resize it to ``size × size``."""
    return _interpolate(image[:, top : top + height, left : left + width], (size, size))


def resize_shorter_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so that the shorter side is ``size``, keeping the aspect ratio (longer side
    ``int(size * long / short)``)."""
    h, w = image.shape[-2:]
    if h <= w:
        new = (size, int(size * w / h))
    else:
        new = (int(size * h / w), size)
    return _interpolate(image, new)


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """The centred ``size × size`` window (offsets rounded to nearest).

    Raises:
        ValueError: the image is smaller than ``size``.
    """
    h, w = image.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"center_crop: image {h}×{w} is smaller than the crop {size}")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image[..., top : top + size, left : left + size]


class TrainTransform:
    """RandomResizedCrop to ``size`` then a random horizontal flip; uint8 ``[3, H, W]`` in/out."""

    def __init__(
        self,
        size: int = 224,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
    ) -> None:
        if size < 1 or not 0 < scale[0] <= scale[1] or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(
                f"bad RandomResizedCrop settings: size {size}, scale {scale}, ratio {ratio}"
            )
        self.size, self.scale, self.ratio, self.flip = int(size), scale, ratio, flip

    def __call__(
        self, image: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        box = random_resized_crop_box(*image.shape[-2:], generator, self.scale, self.ratio)
        out = resized_crop(image, *box, self.size)
        if self.flip and float(torch.rand(1, generator=generator)) < 0.5:
            out = out.flip(-1)
        return out


class EvalTransform:
    """Resize the shorter side to ``resize_size``, then centre-crop ``size``; uint8 in/out."""

    def __init__(self, size: int = 224, resize_size: int | None = None) -> None:
        resize_size = round(size * 256 / 224) if resize_size is None else int(resize_size)
        if size < 1 or resize_size < size:
            raise ValueError(
                f"need 1 <= size <= resize_size, got size {size}, resize {resize_size}"
            )
        self.size, self.resize_size = int(size), resize_size

    def __call__(
        self, image: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        del generator  # deterministic
        return center_crop(resize_shorter_side(image, self.resize_size), self.size)
