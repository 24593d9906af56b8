"""Batch image transforms on tensors ``[B, C, H, W]``.

All functions are pure (they never modify their input) and vectorised over the batch: random
transforms draw one independent value per sample from the ``generator`` they are given, so a
seeded generator makes them reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "normalize",
    "random_crop",
    "random_horizontal_flip",
    "to_float",
]


def _check_batch(x: torch.Tensor, what: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{what} expects a batch [B, C, H, W], got shape {tuple(x.shape)}")


def to_float(images: torch.Tensor) -> torch.Tensor:
    """Convert uint8 images (0..255) to float32 in ``[0, 1]`` (divides by 255).

    Raises:
        TypeError: ``images`` is not uint8.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 images, got {images.dtype}")
    return images.to(torch.float32).div_(255.0)


def normalize(
    x: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """Per-channel standardisation ``(x[:, c] - mean[c]) / std[c]`` of a batch ``[B, C, H, W]``.

    Raises:
        ValueError: ``x`` is not 4-D, ``mean``/``std`` do not have one value per channel, or a
            ``std`` is not positive.
    """
    _check_batch(x, "normalize")
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(-1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(-1)
    channels = x.shape[1]
    if mean_t.numel() != channels or std_t.numel() != channels:
        raise ValueError(
            f"normalize: mean and std need {channels} values (one per channel), "
            f"got {mean_t.numel()} and {std_t.numel()}"
        )
    if not bool((std_t > 0).all()):
        raise ValueError(f"normalize: std must be > 0, got {std_t.tolist()}")
    return (x - mean_t.view(1, -1, 1, 1)) / std_t.view(1, -1, 1, 1)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random translation: zero-pad by ``padding`` on each side, then crop back to ``H × W``.

    Each sample gets its own offset ``(dy, dx)``, uniform in ``[0, 2·padding]²``; the output is
    ``padded[b, :, dy:dy+H, dx:dx+W]``. Implemented with one gather (index arithmetic), no loop
    over samples. ``padding = 0`` returns ``x`` itself and draws nothing from ``generator``.

    Raises:
        ValueError: ``x`` is not 4-D or ``padding`` is negative.
    """
    _check_batch(x, "random_crop")
    if padding < 0:
        raise ValueError(f"random_crop: padding must be >= 0, got {padding}")
    if padding == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    gen_device = generator.device
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=gen_device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=gen_device)
    dy, dx = dy.to(x.device), dx.to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = dx[:, None] + torch.arange(w, device=x.device)  # [B, W]
    batch = torch.arange(b, device=x.device)
    chan = torch.arange(c, device=x.device)
    return padded[
        batch[:, None, None, None],
        chan[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def random_horizontal_flip(
    x: torch.Tensor, generator: torch.Generator, p: float = 0.5
) -> torch.Tensor:
    """Mirror each sample left-right (along ``W``) independently with probability ``p``.

    ``p = 0`` never flips, ``p = 1`` always flips. One uniform number is drawn per sample.

    Raises:
        ValueError: ``x`` is not 4-D or ``p`` is outside ``[0, 1]``.
    """
    _check_batch(x, "random_horizontal_flip")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"random_horizontal_flip: p must be in [0, 1], got {p}")
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device) < p
    flip = flip.to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)
