"""Training augmentation of event samples: random crop (zero padding + crop) and horizontal
flip, one draw per sample shared by all of its frames.

Peers training on CIFAR10-DVS (TET's data loader, for instance) augment the framed sample, not
the event list: a random translation (zero padding + crop) and a left-right mirror of the whole
``[T, C, H, W]`` sample. We do the same, on the dense tensors, for three reasons:

* it is the augmentation the count image of the CNN gets (:class:`~spikebridge.data.BatchLoader`
  with the record's crop padding and flip, :mod:`spikebridge.data.transforms`), in the same
  pixel units, so the CNN and the SNN that runs on the frames see the same family of inputs;
* a shift of the events before a non-integer down-scaling (CIFAR10-DVS: 128 → 42 pixels) is not a
  shift of the down-scaled image — ``x * 42 // 128`` does not commute with ``x + d`` — while a
  shift of the tensor is exactly one output pixel per step;
* one random draw per sample, applied to the ``T·C`` planes at once, makes "every frame gets the
  same transform" true by construction (one gather, no loop over frames or samples).

For the full-resolution grid (or an integer binning) the dense transforms equal the event-level
ones, which :func:`flip_events` and :func:`shift_events` implement (and the tests use as the
oracle): mirroring the events, ``x → W - 1 - x``, and then framing gives the mirrored frames;
shifting them by ``(dx, dy)`` and dropping those that leave the sensor gives the frames cropped
from the zero-padded frames at offset ``(padding - dx, padding - dy)``.

Randomness: :func:`augment_event_batch` draws from the generator it is given, exactly the draws
of :func:`~spikebridge.data.transforms.random_crop` then
:func:`~spikebridge.data.transforms.random_horizontal_flip` on a batch of ``B`` images (two
offsets and one uniform number per sample), so a seeded generator reproduces it and a batch of
count images ``[B, C, H, W]`` gets the very transform BatchLoader would give it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spikebridge.batch_transforms import random_crop, random_horizontal_flip

from .types import SensorSize

__all__ = ["EventAugmentation", "augment_event_batch", "flip_events", "shift_events"]


def flip_events(events: np.ndarray, sensor_size) -> np.ndarray:
    """The left-right mirror of a sample: ``x → width - 1 - x`` (a copy; y, t, p unchanged)."""
    width = int(sensor_size[0])
    out = events.copy()
    out["x"] = width - 1 - events["x"].astype(np.int64)
    return out


def shift_events(events: np.ndarray, sensor_size, dx: int, dy: int) -> np.ndarray:
    """Translate a sample by ``(dx, dy)`` pixels, dropping the events that leave the sensor."""
    size = SensorSize(int(sensor_size[0]), int(sensor_size[1]))
    x = events["x"].astype(np.int64) + int(dx)
    y = events["y"].astype(np.int64) + int(dy)
    keep = (x >= 0) & (x < size.width) & (y >= 0) & (y < size.height)
    out = events[keep].copy()
    out["x"], out["y"] = x[keep], y[keep]
    return out


def augment_event_batch(
    batch: torch.Tensor, generator: torch.Generator, *, padding: int, flip: bool
) -> torch.Tensor:
    """Random crop (zero padding ``padding``) and, if ``flip``, random horizontal flip of each
    sample of a batch of frames ``[T, B, C, H, W]`` or count images ``[B, C, H, W]``.

    Sample ``b`` gets one offset and one flip decision, applied to all its ``T`` frames and ``C``
    channels: the batch is viewed as ``B`` images of ``T·C`` channels for
    :func:`~spikebridge.data.transforms.random_crop` and
    :func:`~spikebridge.data.transforms.random_horizontal_flip`.

    Raises:
        ValueError: ``batch`` is neither 4-D nor 5-D, or ``padding`` is negative.
    """
    if batch.dim() == 4:
        x = random_crop(batch, padding, generator)
        return random_horizontal_flip(x, generator) if flip else x
    if batch.dim() != 5:
        raise ValueError(f"expected frames [T, B, C, H, W] or counts [B, C, H, W], got shape "
                         f"{tuple(batch.shape)}")
    t, b, c, h, w = batch.shape
    planes = batch.permute(1, 0, 2, 3, 4).reshape(b, t * c, h, w)
    planes = random_crop(planes, padding, generator)
    if flip:
        planes = random_horizontal_flip(planes, generator)
    return planes.reshape(b, t, c, h, w).permute(1, 0, 2, 3, 4).contiguous()


@dataclass(frozen=True)
class EventAugmentation:
    """:func:`augment_event_batch` with fixed settings, for
    :class:`~spikebridge.events.EventBatchLoader`'s ``augment``: ``(batch, generator) -> batch``."""

    padding: int = 4
    flip: bool = True

    def __post_init__(self) -> None:
        if self.padding < 0:
            raise ValueError(f"padding must be >= 0, got {self.padding}")

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return augment_event_batch(batch, generator, padding=self.padding, flip=self.flip)
