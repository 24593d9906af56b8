"""Batched augmentation (spikebridge.data.augment): AutoAugment operations against the PIL
functions that define them, Cutout / crop / flip properties, determinism, dtype and devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageEnhance, ImageOps

from spikebridge.data import augment as A
from spikebridge.data.augment import (
    AUTOAUGMENT_CIFAR10_POLICY,
    AUTOAUGMENT_OPERATIONS,
    Augmentation,
    auto_augment_cifar10,
    cutout,
    magnitude,
)

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _hand_made_images() -> np.ndarray:
    """Six 40×36 RGB images [N, H, W, 3]: noise, few grey levels, flat, a one-colour channel,
    a gradient and a checkerboard (large enough for equalize's step to be > 0)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 40, 36, 3), dtype=np.uint8)
    images[1] = (images[1] // 64) * 40 + 20
    images[2] = 77
    images[3, :, :, 0] = 5
    images[4] = (np.arange(40)[:, None, None] * 5 + np.arange(36)[None, :, None] * 2).astype(
        np.uint8)
    images[5] = ((np.indices((40, 36)).sum(0) % 2) * 255)[..., None].astype(np.uint8)
    return images


IMAGES = _hand_made_images()
BATCH = torch.from_numpy(IMAGES).permute(0, 3, 1, 2).contiguous()


def _with_pil(fn) -> torch.Tensor:
    out = [np.asarray(fn(Image.fromarray(a))) for a in IMAGES]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


GREY = (128, 128, 128)
SHEARS = (0.1, -0.3, 0.2333, -0.2667)  # incl. the policy's levels 7 and 8
PIL_DEFINITIONS = {
    "invert": (lambda x: A.invert(x), ImageOps.invert),
    "posterize 5": (lambda x: A.posterize(x, 5), lambda im: ImageOps.posterize(im, 5)),
    "posterize 4": (lambda x: A.posterize(x, 4), lambda im: ImageOps.posterize(im, 4)),
    "solarize": (lambda x: A.solarize(x, magnitude("solarize", 2)),
                 lambda im: ImageOps.solarize(im, magnitude("solarize", 2))),
    "autocontrast": (A.autocontrast, ImageOps.autocontrast),
    "equalize": (A.equalize, ImageOps.equalize),
    **{
        f"{name} {factor}": (lambda x, n=name, f=factor: getattr(A, n)(x, f),
                             lambda im, c=cls, f=factor: c(im).enhance(f))
        for name, cls in [("brightness", ImageEnhance.Brightness),
                          ("color", ImageEnhance.Color),
                          ("contrast", ImageEnhance.Contrast),
                          ("sharpness", ImageEnhance.Sharpness)]
        for factor in (0.1, 0.73, 1.6, 1.9)
    },
    **{
        f"rotate {d}": (lambda x, d=d: A.rotate(x, d), lambda im, d=d: im.rotate(d, fillcolor=GREY))
        for d in (6.6667, -13.3, 30.0, 3.3333, -26.6667, 20.0)
    },
    **{
        f"shear_x {s}": (lambda x, s=s: A.shear_x(x, s), lambda im, s=s: im.transform(
            im.size, Image.AFFINE, (1, s, 0, 0, 1, 0), fillcolor=GREY)) for s in SHEARS
    },
    **{
        f"shear_y {s}": (lambda x, s=s: A.shear_y(x, s), lambda im, s=s: im.transform(
            im.size, Image.AFFINE, (1, 0, 0, s, 1, 0), fillcolor=GREY)) for s in SHEARS
    },
    **{
        f"translate_x {t}": (lambda x, t=t: A.translate_x(x, t), lambda im, t=t: im.transform(
            im.size, Image.AFFINE, (1, 0, t, 0, 1, 0), fillcolor=GREY)) for t in (3.0, -4.53)
    },
    **{
        f"translate_y {t}": (lambda x, t=t: A.translate_y(x, t), lambda im, t=t: im.transform(
            im.size, Image.AFFINE, (1, 0, 0, 0, 1, t), fillcolor=GREY)) for t in (-3.0, 5.4)
    },
}


@pytest.mark.parametrize("name", sorted(PIL_DEFINITIONS))
def test_operation_equals_its_pil_definition(name):
    ours, pil = PIL_DEFINITIONS[name]
    out = ours(BATCH)
    assert out.dtype == torch.uint8 and out.shape == BATCH.shape
    assert torch.equal(out, _with_pil(pil))


def test_every_policy_operation_is_checked_against_pil():
    checked = {name.split()[0] for name in PIL_DEFINITIONS}
    assert checked == set(AUTOAUGMENT_OPERATIONS)


def test_operations_change_images_they_should():
    assert not torch.equal(A.equalize(BATCH), BATCH)
    assert torch.equal(A.autocontrast(BATCH[2:3]), BATCH[2:3])  # flat image: unchanged
    assert torch.equal(A.translate_x(BATCH, 0.0), BATCH)
    shifted = A.translate_x(BATCH, 2.0)
    assert torch.equal(shifted[..., :-2], BATCH[..., 2:]) and bool((shifted[..., -2:] == 128).all())


def test_one_channel_images():
    grey = BATCH[:, :1]
    assert torch.equal(A.color(grey, 0.0), grey)  # grey is its own grey image
    pil = [np.asarray(ImageEnhance.Contrast(Image.fromarray(a[..., 0])).enhance(1.6))
           for a in IMAGES]
    assert torch.equal(A.contrast(grey, 1.6)[:, 0], torch.from_numpy(np.stack(pil)))


def test_per_sample_magnitudes():
    out = A.brightness(BATCH[:2], torch.tensor([0.5, 1.5]))
    assert torch.equal(out[0:1], A.brightness(BATCH[0:1], 0.5))
    assert torch.equal(out[1:2], A.brightness(BATCH[1:2], 1.5))
    with pytest.raises(ValueError, match="one value per sample"):
        A.brightness(BATCH, torch.tensor([0.5, 1.5]))


def test_magnitudes_follow_the_ten_level_ranges():
    assert magnitude("shear_x", 9) == pytest.approx(0.3)
    assert magnitude("translate_y", 9) == pytest.approx(150 / 331)
    assert magnitude("rotate", 3) == pytest.approx(10.0)
    assert magnitude("color", 0) == 0.0
    assert [magnitude("posterize", k) for k in range(10)] == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    assert magnitude("solarize", 0) == 256.0 and magnitude("solarize", 9) == 0.0
    assert magnitude("equalize", 5) == 0.0
    with pytest.raises(ValueError, match="0..9"):
        magnitude("rotate", 10)
    with pytest.raises(ValueError, match="unknown AutoAugment operation"):
        magnitude("zoom", 1)


def test_policy_is_the_25_cifar10_subpolicies():
    assert len(AUTOAUGMENT_CIFAR10_POLICY) == 25
    for sub in AUTOAUGMENT_CIFAR10_POLICY:
        assert len(sub) == 2
        for op, p, level in sub:
            assert op in AUTOAUGMENT_OPERATIONS and 0.0 <= p <= 1.0 and 0 <= level <= 9
    assert AUTOAUGMENT_CIFAR10_POLICY[0] == (("invert", 0.1, 7), ("contrast", 0.2, 6))
    assert AUTOAUGMENT_CIFAR10_POLICY[-1] == (("translate_y", 0.7, 9), ("autocontrast", 0.9, 1))


def test_signed_operations_use_the_sign():
    x = BATCH[:2]
    sign = torch.tensor([1.0, -1.0], dtype=torch.float64)
    out = A._apply("translate_x", x, 9, sign)
    pixels = magnitude("translate_x", 9) * x.shape[3]
    assert torch.equal(out[0:1], A.translate_x(x[0:1], pixels))
    assert torch.equal(out[1:2], A.translate_x(x[1:2], -pixels))
    out = A._apply("contrast", x, 6, sign)
    assert torch.equal(out[1:2], A.contrast(x[1:2], 1 - magnitude("contrast", 6)))


def test_auto_augment_is_deterministic_per_sample_and_keeps_dtype():
    images = BATCH[:1].expand(64, -1, -1, -1).contiguous()  # 64 copies of one image
    out = auto_augment_cifar10(images, torch.Generator().manual_seed(3))
    again = auto_augment_cifar10(images, torch.Generator().manual_seed(3))
    other = auto_augment_cifar10(images, torch.Generator().manual_seed(4))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(out, again)
    assert not torch.equal(out, other)
    assert torch.equal(images, BATCH[:1].expand(64, -1, -1, -1))  # input untouched
    distinct = {bytes(o.numpy().tobytes()) for o in out}
    assert len(distinct) > 8  # sub-policies are drawn per sample, not per batch
    assert any(torch.equal(o, images[0]) for o in out)  # some samples draw no operation


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(1, 20), h=st.integers(4, 24),
       w=st.integers(4, 24))
def test_cutout_sets_one_clipped_square(seed, size, h, w):
    x = torch.rand(5, 2, h, w) + 1.0  # never 0, so the hole is visible
    out = cutout(x, size, torch.Generator().manual_seed(seed))
    for b in range(5):
        hole = out[b, 0] == 0
        assert torch.equal(hole, out[b, 1] == 0)  # same hole in every channel
        assert torch.equal(out[b][:, ~hole], x[b][:, ~hole])  # the rest unchanged
        rows = hole.any(dim=1).nonzero().reshape(-1)
        cols = hole.any(dim=0).nonzero().reshape(-1)
        if size < 2:
            assert not hole.any()  # size // 2 == 0: an empty square, as the reference code
            continue
        assert hole.any()
        # one axis-aligned rectangle at most (size//2)*2 on a side, clipped to the image
        assert int(hole.sum()) == len(rows) * len(cols)
        assert len(rows) <= 2 * (size // 2) and len(cols) <= 2 * (size // 2)
        assert int(rows[-1] - rows[0]) + 1 == len(rows)


def test_cutout_full_square_inside_and_fill_value():
    x = torch.ones(400, 1, 32, 32)
    out = cutout(x, 16, torch.Generator().manual_seed(0), fill=-2.0)
    holes = (out == -2.0).sum(dim=(1, 2, 3))
    assert int(holes.max()) == 256  # a centre away from the border gives the full 16 × 16
    assert int(holes.min()) >= 64  # a corner centre still keeps a quarter
    assert cutout(x, 0, torch.Generator()) is x


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), padding=st.integers(0, 5))
def test_crop_and_flip_give_a_window_of_the_padded_image(seed, padding):
    x = torch.randint(1, 256, (6, 3, 9, 7), dtype=torch.uint8)
    aug = Augmentation(crop_padding=padding, hflip=True)
    out = aug(x, torch.Generator().manual_seed(seed), (0.0,) * 3, (1 / 255,) * 3).round()
    padded = torch.nn.functional.pad(x, (padding,) * 4).float()
    for b in range(6):
        windows = [padded[b, :, dy:dy + 9, dx:dx + 7] for dy in range(2 * padding + 1)
                   for dx in range(2 * padding + 1)]
        assert any(torch.equal(out[b], win) or torch.equal(out[b], win.flip(-1))
                   for win in windows)


def test_pipeline_equals_the_classic_loader_augmentation():
    from spikebridge.data.transforms import normalize, random_crop, random_horizontal_flip, to_float

    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    classic = normalize(random_horizontal_flip(random_crop(to_float(x), 4, g1), g1), MEAN, STD)
    assert torch.equal(Augmentation(4, True)(x, g2, MEAN, STD), classic)


def test_full_pipeline_dtype_range_and_determinism():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    aug = Augmentation(crop_padding=4, hflip=True, autoaugment=True, cutout=8)
    out = aug(x, torch.Generator().manual_seed(1), MEAN, STD)
    assert out.dtype == torch.float32 and out.shape == x.shape
    low = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    high = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert bool((out >= low.view(1, 3, 1, 1) - 1e-6).all())
    assert bool((out <= high.view(1, 3, 1, 1) + 1e-6).all())
    assert bool(((out == 0).all(dim=1).sum(dim=(1, 2)) > 0).all())  # every sample has a hole
    assert torch.equal(out, aug(x, torch.Generator().manual_seed(1), MEAN, STD))
    assert aug.describe() == "crop(4)+flip+autoaugment+cutout(8)"
    with pytest.raises(TypeError, match="uint8"):
        aug(x.float(), torch.Generator(), MEAN, STD)
    with pytest.raises(ValueError, match="cutout"):
        Augmentation(cutout=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batch_with_cpu_generator_equals_cpu():
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    aug = Augmentation(crop_padding=4, hflip=True, autoaugment=True, cutout=16)
    cpu = aug(x, torch.Generator().manual_seed(2), MEAN, STD)
    gpu = aug(x.cuda(), torch.Generator().manual_seed(2), MEAN, STD)
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-6)
