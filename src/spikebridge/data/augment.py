"""Training augmentation of the COS / QCFS recipes, batched on tensors (CPU or CUDA).

The CIFAR pipeline of the COS paper's released code, in its order: random crop (zero padding 4)
→ horizontal flip → AutoAugment with the CIFAR-10 policy → to float and normalise → Cutout
(one square hole, filled with 0 *after* normalisation, i.e. with the dataset mean colour). The
COS paper cites Cutout (DeVries & Taylor 2017) and AutoAugment (Cubuk et al. 2019) for it
(docs/methods.md §3.6; docs/reproduce.md lists the sizes per data set).

Every function takes a batch ``[B, C, H, W]`` and a :class:`torch.Generator`; all random numbers
are drawn from that generator *on its device* (a CPU generator for a CUDA batch is fine: the
draws are moved to the batch), one fixed-size draw per batch whatever the images hold, so a given
``(generator state, batch)`` always gives the same result and a resumed training repeats its
augmentation. Nothing here loops over samples.

AutoAugment operations work on ``uint8`` images and follow the Python Imaging Library functions
the policy was defined with (``ImageOps`` / ``ImageEnhance`` / ``Image.transform``), pixel for
pixel for the colour operations; geometric operations use nearest-neighbour sampling with PIL's
pixel-centre convention and fill uncovered pixels with grey 128 (the reference code's
``fillcolor``). One deliberate difference: the reference code's shear uses bicubic resampling,
ours nearest (like its translate and rotate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from spikebridge.batch_transforms import normalize, random_crop, random_horizontal_flip, to_float

__all__ = [
    "AUTOAUGMENT_CIFAR10_POLICY",
    "AUTOAUGMENT_OPERATIONS",
    "Augmentation",
    "auto_augment_cifar10",
    "autocontrast",
    "brightness",
    "color",
    "contrast",
    "cutout",
    "equalize",
    "invert",
    "magnitude",
    "posterize",
    "rotate",
    "sharpness",
    "shear_x",
    "shear_y",
    "solarize",
    "translate_x",
    "translate_y",
]

FILL = 128
"""Grey value given to pixels that a geometric operation uncovers."""

#: The 25 sub-policies ``((op, probability, magnitude level 0..9), (op, p, level))`` that
#: AutoAugment found on reduced CIFAR-10 (Cubuk et al. 2019, appendix table of the CIFAR-10
#: policy), in the order of the COS code. Levels of operations without magnitude are ignored.
AUTOAUGMENT_CIFAR10_POLICY: tuple[tuple[tuple[str, float, int], tuple[str, float, int]], ...] = (
    (("invert", 0.1, 7), ("contrast", 0.2, 6)),
    (("rotate", 0.7, 2), ("translate_x", 0.3, 9)),
    (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)),
    (("shear_y", 0.5, 8), ("translate_y", 0.7, 9)),
    (("autocontrast", 0.5, 8), ("equalize", 0.9, 2)),
    (("shear_y", 0.2, 7), ("posterize", 0.3, 7)),
    (("color", 0.4, 3), ("brightness", 0.6, 7)),
    (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
    (("equalize", 0.6, 5), ("equalize", 0.5, 1)),
    (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
    (("color", 0.7, 7), ("translate_x", 0.5, 8)),
    (("equalize", 0.3, 7), ("autocontrast", 0.4, 8)),
    (("translate_y", 0.4, 3), ("sharpness", 0.2, 6)),
    (("brightness", 0.9, 6), ("color", 0.2, 8)),
    (("solarize", 0.5, 2), ("invert", 0.0, 3)),
    (("equalize", 0.2, 0), ("autocontrast", 0.6, 0)),
    (("equalize", 0.2, 8), ("equalize", 0.6, 4)),
    (("color", 0.9, 9), ("equalize", 0.6, 6)),
    (("autocontrast", 0.8, 4), ("solarize", 0.2, 8)),
    (("brightness", 0.1, 3), ("color", 0.7, 0)),
    (("solarize", 0.4, 5), ("autocontrast", 0.9, 3)),
    (("translate_y", 0.9, 9), ("translate_y", 0.7, 9)),
    (("autocontrast", 0.9, 2), ("solarize", 0.8, 3)),
    (("equalize", 0.8, 8), ("invert", 0.1, 3)),
    (("translate_y", 0.7, 9), ("autocontrast", 0.9, 1)),
)  # fmt: skip


def magnitude(op: str, level: int) -> float:
    """The magnitude of operation ``op`` at discrete level ``level`` (0..9).

    Ten evenly spaced values over the ranges of Cubuk et al. 2019 (as the COS code ports them):
    shear 0..0.3; translate 0..150/331 of the image size; rotate 0..30°; colour, contrast,
    sharpness and brightness 0..0.9 (factor 1 ± m); posterize 8..4 bits (rounded); solarize
    threshold 256..0. Operations without a magnitude return 0.
    """
    if not 0 <= level <= 9:
        raise ValueError(f"AutoAugment magnitude level must be in 0..9, got {level}")
    spans = {
        "shear_x": (0.0, 0.3), "shear_y": (0.0, 0.3),
        "translate_x": (0.0, 150 / 331), "translate_y": (0.0, 150 / 331),
        "rotate": (0.0, 30.0),
        "color": (0.0, 0.9), "contrast": (0.0, 0.9), "sharpness": (0.0, 0.9),
        "brightness": (0.0, 0.9), "posterize": (8.0, 4.0), "solarize": (256.0, 0.0),
    }  # fmt: skip
    if op not in AUTOAUGMENT_OPERATIONS:
        raise ValueError(f"unknown AutoAugment operation {op!r}")
    if op not in spans:
        return 0.0
    lo, hi = spans[op]
    value = lo + (hi - lo) * level / 9
    return float(round(value)) if op == "posterize" else value


def _check_uint8(x: torch.Tensor, what: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{what} expects a batch [B, C, H, W], got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise TypeError(f"{what} expects uint8 images, got {x.dtype}")


def _per_sample(value: float | torch.Tensor, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``value`` as a ``[B, 1, 1, 1]`` tensor of ``dtype`` on ``x``'s device."""
    t = torch.as_tensor(value, dtype=dtype, device=x.device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(x.shape[0])
    if t.numel() != x.shape[0]:
        raise ValueError(f"expected one value per sample ({x.shape[0]}), got {t.numel()}")
    return t.view(-1, 1, 1, 1)


# ------------------------------------------------------------------------------------------
# colour operations (exactly PIL's ImageOps / ImageEnhance on 8-bit images)


def invert(x: torch.Tensor) -> torch.Tensor:
    """``255 - x`` (``ImageOps.invert``)."""
    _check_uint8(x, "invert")
    return 255 - x


def posterize(x: torch.Tensor, bits: int | torch.Tensor) -> torch.Tensor:
    """Keep the ``bits`` most significant bits of every value (``ImageOps.posterize``)."""
    _check_uint8(x, "posterize")
    bits_t = _per_sample(bits, x, torch.int32)
    if bool(((bits_t < 0) | (bits_t > 8)).any()):
        raise ValueError("posterize: bits must be in 0..8")
    mask = (255 - ((1 << (8 - bits_t)) - 1)).to(torch.int32)
    return (x.to(torch.int32) & mask).to(torch.uint8)


def solarize(x: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """Invert every value ``>= threshold``, keep the others (``ImageOps.solarize``)."""
    _check_uint8(x, "solarize")
    t = _per_sample(threshold, x, torch.float32)
    return torch.where(x.to(torch.float32) < t, x, 255 - x)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``convert("L")``: ``(299 R + 587 G + 114 B) / 1000`` in 16-bit fixed point,
    rounded; a one-channel batch is its own grey image. Returns int32 ``[B, 1, H, W]``."""
    if x.shape[1] == 1:
        return x.to(torch.int32)
    if x.shape[1] != 3:
        raise ValueError(f"colour operations need 1 or 3 channels, got {x.shape[1]}")
    r, g, b = (x[:, i : i + 1].to(torch.int32) for i in range(3))
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ``Image.blend(degenerate, x, factor)``: ``d + factor·(x − d)`` in float32,
    clipped to 0..255 and truncated (``ImageEnhance``)."""
    d = degenerate.to(torch.float32)
    out = d + factor * (x.to(torch.float32) - d)
    return out.clamp_(0, 255).trunc_().to(torch.uint8)


def brightness(x: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """Blend with black by ``factor`` (``ImageEnhance.Brightness``; 1 = unchanged)."""
    _check_uint8(x, "brightness")
    return _blend(torch.zeros_like(x), x, _per_sample(factor, x, torch.float32))


def color(x: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """Blend with the grey image by ``factor`` (``ImageEnhance.Color``, saturation)."""
    _check_uint8(x, "color")
    return _blend(_grey(x).expand_as(x), x, _per_sample(factor, x, torch.float32))


def contrast(x: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """Blend with a flat image of the grey mean, rounded (``ImageEnhance.Contrast``)."""
    _check_uint8(x, "contrast")
    grey = _grey(x).to(torch.float64)
    mean = torch.floor(grey.mean(dim=(1, 2, 3), keepdim=True) + 0.5)
    return _blend(mean.expand_as(x), x, _per_sample(factor, x, torch.float32))


def sharpness(x: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """Blend with the image smoothed by PIL's SMOOTH kernel ``[[1,1,1],[1,5,1],[1,1,1]]/13``,
    whose border pixels stay unchanged (``ImageEnhance.Sharpness``)."""
    _check_uint8(x, "sharpness")
    b, c, h, w = x.shape
    kernel = torch.ones(1, 1, 3, 3, dtype=torch.float32, device=x.device)
    kernel[0, 0, 1, 1] = 5.0
    kernel = kernel / 13.0
    smooth = F.conv2d(x.to(torch.float32).reshape(b * c, 1, h, w), kernel).reshape(b, c, h - 2,
                                                                                      w - 2)
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = (smooth + 0.5).clamp_(0, 255).to(torch.uint8)
    return _blend(degenerate, x, _per_sample(factor, x, torch.float32))


def _lookup(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Apply a per-(sample, channel) lookup table ``lut [B, C, 256]`` to ``x``."""
    b, c, h, w = x.shape
    return torch.gather(lut, 2, x.reshape(b, c, h * w).to(torch.int64)).reshape(b, c, h, w)


def _histogram(x: torch.Tensor) -> torch.Tensor:
    """Per-(sample, channel) histogram of the 256 values, int64 ``[B, C, 256]``."""
    b, c, h, w = x.shape
    hist = torch.zeros(b, c, 256, dtype=torch.int64, device=x.device)
    return hist.scatter_add_(2, x.reshape(b, c, h * w).to(torch.int64),
                             torch.ones(b, c, h * w, dtype=torch.int64, device=x.device))


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel's range ``[lo, hi]`` to ``[0, 255]``: ``int(v·s − lo·s)``,
    ``s = 255/(hi − lo)``; a flat channel stays (``ImageOps.autocontrast``, cutoff 0)."""
    _check_uint8(x, "autocontrast")
    lo = x.amin(dim=(2, 3)).to(torch.float64)  # [B, C]
    hi = x.amax(dim=(2, 3)).to(torch.float64)
    flat = hi <= lo
    scale = 255.0 / torch.where(flat, torch.ones_like(hi), hi - lo)
    offset = -lo * scale
    ramp = torch.arange(256, dtype=torch.float64, device=x.device)
    lut = (ramp * scale[..., None] + offset[..., None]).trunc().clamp(0, 255)
    lut = torch.where(flat[..., None], ramp, lut).to(torch.uint8)
    return _lookup(x, lut)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per channel (``ImageOps.equalize``): with ``h`` the histogram,
    ``step = (Σh − h[last non-empty value]) // 255``, value ``i`` maps to
    ``(step // 2 + Σ_{j<i} h[j]) // step``; channels with ``step = 0`` stay."""
    _check_uint8(x, "equalize")
    hist = _histogram(x)
    values = torch.arange(256, device=x.device)
    last = torch.where(hist > 0, values, -1).amax(dim=2, keepdim=True)  # [B, C, 1]
    step = (hist.sum(dim=2, keepdim=True) - torch.gather(hist, 2, last.clamp(min=0))) // 255
    below = torch.cumsum(hist, dim=2) - hist  # Σ_{j<i} h[j]
    lut = (step // 2 + below) // step.clamp(min=1)
    lut = torch.where(step > 0, lut.clamp(max=255), values).to(torch.uint8)
    return _lookup(x, lut)


# ------------------------------------------------------------------------------------------
# geometric operations (PIL's Image.transform / rotate with nearest sampling)


def _affine(x: torch.Tensor, matrix: torch.Tensor, fill: int = FILL) -> torch.Tensor:
    """Resample ``x`` with per-sample affine maps ``matrix [B, 2, 3]`` from output to input
    coordinates, as PIL's ``Image.transform(AFFINE, NEAREST)``: output pixel ``(x, y)`` reads
    input pixel ``floor(M·(x + ½, y + ½, 1))``; pixels mapped outside the image get ``fill``.

    Like PIL, a pure shift/scale (``M₀₁ = M₁₀ = 0``) is computed in double precision and any
    other map (shear, rotation) in 16.16 fixed point — coefficients rounded to 1/65536 — so
    that pixels on a sampling boundary land on the same side as in PIL.
    """
    b, c, h, w = x.shape
    m = matrix.to(device=x.device, dtype=torch.float64)
    xs = torch.arange(w, device=x.device, dtype=torch.float64)
    ys = torch.arange(h, device=x.device, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # [H, W]

    def coefficient(i: int, j: int) -> torch.Tensor:
        return m[:, i, j, None, None]

    # double precision (PIL's ImagingScaleAffine)
    u = coefficient(0, 0) * (gx + 0.5) + coefficient(0, 1) * (gy + 0.5) + coefficient(0, 2)
    v = coefficient(1, 0) * (gx + 0.5) + coefficient(1, 1) * (gy + 0.5) + coefficient(1, 2)
    col, row = torch.floor(u).to(torch.int64), torch.floor(v).to(torch.int64)  # [B, H, W]

    # 16.16 fixed point (PIL's affine_fixed)
    def fix(value: torch.Tensor) -> torch.Tensor:
        return torch.floor(value * 65536.0 + 0.5).to(torch.int64)

    ix, iy = gx.to(torch.int64), gy.to(torch.int64)
    a0, a1, a3, a4 = fix(coefficient(0, 0)), fix(coefficient(0, 1)), fix(coefficient(1, 0)), \
        fix(coefficient(1, 1))
    a2 = fix(coefficient(0, 2) + 0.5 * coefficient(0, 0) + 0.5 * coefficient(0, 1))
    a5 = fix(coefficient(1, 2) + 0.5 * coefficient(1, 0) + 0.5 * coefficient(1, 1))
    col_fixed = torch.div(a2 + ix * a0 + iy * a1, 65536, rounding_mode="floor")
    row_fixed = torch.div(a5 + ix * a3 + iy * a4, 65536, rounding_mode="floor")
    scaling = ((m[:, 0, 1] == 0) & (m[:, 1, 0] == 0))[:, None, None]
    col = torch.where(scaling, col, col_fixed)
    row = torch.where(scaling, row, row_fixed)

    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    flat = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1)).reshape(b, 1, h * w).expand(b, c, -1)
    out = torch.gather(x.reshape(b, c, h * w), 2, flat).reshape(b, c, h, w)
    return torch.where(inside[:, None], out, torch.full_like(out, fill))


def _matrices(values: torch.Tensor, entries: dict[tuple[int, int], torch.Tensor]) -> torch.Tensor:
    m = torch.zeros(values.shape[0], 2, 3, dtype=torch.float64, device=values.device)
    m[:, 0, 0] = 1.0
    m[:, 1, 1] = 1.0
    for (i, j), value in entries.items():
        m[:, i, j] = value
    return m


def _signed(x: torch.Tensor, value: float | torch.Tensor) -> torch.Tensor:
    return _per_sample(value, x, torch.float64).reshape(-1)


def shear_x(x: torch.Tensor, amount: float | torch.Tensor) -> torch.Tensor:
    """Horizontal shear: output ``(x, y)`` reads input ``(x + amount·y, y)`` (PIL affine
    ``(1, amount, 0, 0, 1, 0)``)."""
    _check_uint8(x, "shear_x")
    s = _signed(x, amount)
    return _affine(x, _matrices(s, {(0, 1): s}))


def shear_y(x: torch.Tensor, amount: float | torch.Tensor) -> torch.Tensor:
    """Vertical shear: output ``(x, y)`` reads input ``(x, y + amount·x)``."""
    _check_uint8(x, "shear_y")
    s = _signed(x, amount)
    return _affine(x, _matrices(s, {(1, 0): s}))


def translate_x(x: torch.Tensor, pixels: float | torch.Tensor) -> torch.Tensor:
    """Output ``(x, y)`` reads input ``(x + pixels, y)``: the content moves left by ``pixels``."""
    _check_uint8(x, "translate_x")
    s = _signed(x, pixels)
    return _affine(x, _matrices(s, {(0, 2): s}))


def translate_y(x: torch.Tensor, pixels: float | torch.Tensor) -> torch.Tensor:
    """Output ``(x, y)`` reads input ``(x, y + pixels)``: the content moves up by ``pixels``."""
    _check_uint8(x, "translate_y")
    s = _signed(x, pixels)
    return _affine(x, _matrices(s, {(1, 2): s}))


def rotate(x: torch.Tensor, degrees: float | torch.Tensor) -> torch.Tensor:
    """Rotate counter-clockwise by ``degrees`` about the image centre ``(W/2, H/2)``
    (``Image.rotate``, nearest, uncovered pixels grey)."""
    _check_uint8(x, "rotate")
    a = -torch.deg2rad(_signed(x, degrees))
    cos, sin = torch.cos(a), torch.sin(a)
    cx, cy = x.shape[3] / 2.0, x.shape[2] / 2.0
    return _affine(x, _matrices(a, {
        (0, 0): cos, (0, 1): sin, (0, 2): cx - cos * cx - sin * cy,
        (1, 0): -sin, (1, 1): cos, (1, 2): cy + sin * cx - cos * cy,
    }))  # fmt: skip


AUTOAUGMENT_OPERATIONS: tuple[str, ...] = (
    "autocontrast", "brightness", "color", "contrast", "equalize", "invert", "posterize",
    "rotate", "sharpness", "shear_x", "shear_y", "solarize", "translate_x", "translate_y",
)  # fmt: skip
"""The 14 operations the CIFAR-10 policy uses."""

_SIGNED = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate"}
_FACTOR = {"color", "contrast", "sharpness", "brightness"}


def _apply(op: str, x: torch.Tensor, level: int, sign: torch.Tensor) -> torch.Tensor:
    """Operation ``op`` at magnitude ``level`` with a random ±1 ``sign`` per sample where the
    operation has a direction (shear, translate, rotate, factor 1 ± m)."""
    m = magnitude(op, level)
    if op in ("translate_x", "translate_y"):
        m *= x.shape[3] if op == "translate_x" else x.shape[2]
    if op in _SIGNED:
        return globals()[op](x, sign * m)
    if op in _FACTOR:
        return globals()[op](x, 1.0 + sign * m)
    if op == "posterize":
        return posterize(x, int(m))
    if op == "solarize":
        return solarize(x, m)
    return globals()[op](x)


def auto_augment_cifar10(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """AutoAugment with the CIFAR-10 policy (Cubuk et al. 2019) on a uint8 batch.

    Each sample gets one of the 25 sub-policies uniformly at random; each of the sub-policy's
    two operations is applied with its probability, in order, at its magnitude, with a random
    direction. Draws per batch: the sub-policy index, then for each of the two slots one uniform
    (apply?) and one sign per sample — always the same number, so the stream stays aligned.
    """
    _check_uint8(x, "auto_augment_cifar10")
    b = x.shape[0]
    gen_device = generator.device
    policy = torch.randint(0, len(AUTOAUGMENT_CIFAR10_POLICY), (b,), generator=generator,
                           device=gen_device).to(x.device)
    out = x
    for slot in range(2):
        u = torch.rand(b, generator=generator, device=gen_device).to(x.device)
        coin = torch.rand(b, generator=generator, device=gen_device).to(x.device)
        sign = torch.where(coin < 0.5, -1.0, 1.0).to(torch.float64)
        probability = torch.tensor([sub[slot][1] for sub in AUTOAUGMENT_CIFAR10_POLICY],
                                   device=x.device)[policy]
        chosen = u < probability
        if not bool(chosen.any()):
            continue
        out = out.clone() if out is x else out
        for index, sub in enumerate(AUTOAUGMENT_CIFAR10_POLICY):
            selected = torch.nonzero(chosen & (policy == index)).reshape(-1)
            if selected.numel() == 0:
                continue
            op, _, level = sub[slot]
            out[selected] = _apply(op, out[selected], level, sign[selected])
    return out


# ------------------------------------------------------------------------------------------
# Cutout and the whole pipeline


def cutout(x: torch.Tensor, size: int, generator: torch.Generator,
           fill: float = 0.0) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017): one ``size × size`` square per sample set to ``fill``.

    The centre ``(cy, cx)`` is uniform over the image's pixels and the square covers rows
    ``[cy − size//2, cy + size//2)`` and the same columns, clipped to the image (so squares at
    the border are partly outside, as in the reference code). ``size = 0`` returns ``x`` itself
    and draws nothing. Works on any dtype; the output has ``x``'s dtype.
    """
    if x.dim() != 4:
        raise ValueError(f"cutout expects a batch [B, C, H, W], got shape {tuple(x.shape)}")
    if size < 0:
        raise ValueError(f"cutout: size must be >= 0, got {size}")
    if size == 0:
        return x
    b, _, h, w = x.shape
    gen_device = generator.device
    cy = torch.randint(0, h, (b, 1), generator=generator, device=gen_device).to(x.device)
    cx = torch.randint(0, w, (b, 1), generator=generator, device=gen_device).to(x.device)
    half = size // 2
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= cy - half) & (rows < cy + half)  # [B, H]
    in_cols = (cols >= cx - half) & (cols < cx + half)  # [B, W]
    hole = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # [B, 1, H, W]
    return torch.where(hole, torch.as_tensor(fill, dtype=x.dtype, device=x.device), x)


@dataclass(frozen=True)
class Augmentation:
    """The training augmentation of one recipe, applied to a uint8 batch.

    ``__call__(images, generator, mean, std)`` computes, in this order: random crop with zero
    padding ``crop_padding`` (0 = none), random horizontal flip (if ``hflip``), AutoAugment's
    CIFAR-10 policy (if ``autoaugment``), conversion to float in [0, 1], normalisation with
    ``mean``/``std``, and Cutout of side ``cutout`` (0 = none) filled with 0 — the normalised
    mean colour. Returns float32 ``[B, C, H, W]`` on the images' device. With only crop and flip
    the random draws (and results) equal :class:`~spikebridge.data.BatchLoader`'s classic
    augmentation.
    """

    crop_padding: int = 4
    hflip: bool = True
    autoaugment: bool = False
    cutout: int = 0

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if self.cutout < 0:
            raise ValueError(f"cutout must be >= 0, got {self.cutout}")

    def __call__(self, images: torch.Tensor, generator: torch.Generator,
                 mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
        _check_uint8(images, "Augmentation")
        x = random_crop(images, self.crop_padding, generator)
        if self.hflip:
            x = random_horizontal_flip(x, generator)
        if self.autoaugment:
            x = auto_augment_cifar10(x, generator)
        x = normalize(to_float(x), mean, std)
        return cutout(x, self.cutout, generator)

    def describe(self) -> str:
        """A short human-readable list of the steps, e.g. ``crop(4)+flip+autoaugment+cutout(8)``."""
        parts = []
        if self.crop_padding:
            parts.append(f"crop({self.crop_padding})")
        if self.hflip:
            parts.append("flip")
        if self.autoaugment:
            parts.append("autoaugment")
        if self.cutout:
            parts.append(f"cutout({self.cutout})")
        return "+".join(parts) or "none"

