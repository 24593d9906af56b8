"""b-bit signed weight quantization (docs/methods.md §7.6): the grid, the error bounds, and its
effect on converted networks (16 bits: no prediction changes; 2 bits: visible changes)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import spikebridge as sb
from spikebridge.activations import ActivationSpec
from spikebridge.batchnorm_folding import FOLDABLE
from spikebridge.checkpoint import load_checkpoint
from spikebridge.data import BatchLoader, load_dataset
from spikebridge.evaluation import evaluate
from spikebridge.models import create_model
from spikebridge.quantization import check_bits, quantize_tensor, quantize_weights
from spikebridge.shipped import SHIPPED_MODEL_DIR
from spikebridge.simulate import simulate

pytestmark = pytest.mark.usefixtures("single_torch_thread")


# ---------------------------------------------------------------------------------- check_bits


@pytest.mark.parametrize("bits", [1, 17, 0, -4, 2.5, True, False])
def test_check_bits_rejects(bits):
    with pytest.raises(ValueError, match="weight bits must be an integer from 2 to 16"):
        check_bits(bits)


@pytest.mark.parametrize("bits", [2, 8, 16, 8.0])
def test_check_bits_accepts(bits):
    assert check_bits(bits) == int(bits) and type(check_bits(bits)) is int


# ------------------------------------------------------------------------------ quantize_tensor


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits", [2, 3, 4, 8, 12, 16])
@pytest.mark.parametrize("rounding", ["nearest", "trunc"])
def test_quantize_tensor_grid_and_error_bounds(bits, rounding, dtype):
    g = torch.Generator().manual_seed(bits)
    w = (torch.rand(40, 30, generator=g) * 1.6 - 0.8).to(dtype)
    w[3, 7] = -0.9  # the largest magnitude is negative
    q, step = quantize_tensor(w, bits, rounding)
    levels = 2 ** (bits - 1) - 1
    assert q.dtype == dtype and q.shape == w.shape
    assert step == pytest.approx(0.9 / levels, rel=1e-6)
    integers = q.double() / step
    # integers, within ±(2^{b-1} - 1)
    assert torch.allclose(integers, integers.round(), atol=1e-4)
    assert integers.round().abs().max() <= levels
    assert integers.round().unique().numel() <= 2 * levels + 1
    error = (q.double() - w.double()).abs()
    if rounding == "nearest":
        assert integers.round().abs().max() == levels
        # the largest-magnitude weight is representable: exactly in float32 (every model here),
        # within an ulp in float64 (Δ·levels is rounded once)
        if dtype == torch.float32:
            assert q[3, 7].item() == w[3, 7].item()
        else:
            assert q[3, 7].item() == pytest.approx(w[3, 7].item(), rel=1e-15)
        assert float(error.max()) <= step / 2 * (1 + 1e-5)
        # nearest: every weight maps to the closest level
        assert torch.equal(integers.round(), (w.double() / step).round().clamp(-levels, levels))
    else:
        assert float(error.max()) < step
        # truncation toward zero never increases a magnitude
        assert bool((q.double().abs() <= w.double().abs() + 1e-12).all())
        inner = w.double().abs() < 0.89  # away from the top level (tested exactly below)
        assert torch.equal(integers.round()[inner], (w.double() / step).trunc()[inner])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trunc_keeps_the_largest_weight_on_the_top_level(dtype):
    g = torch.Generator().manual_seed(0)
    for bits in (3, 4, 8, 16):
        for _ in range(40):
            w = (torch.rand(5, generator=g) * 2 - 1).to(dtype)
            q, step = quantize_tensor(w, bits, rounding="trunc")
            top = int(w.abs().argmax())
            assert round(abs(q[top].item()) / step) == 2 ** (bits - 1) - 1, (bits, w[top].item())
    w = torch.tensor([0.5, -0.9803780317306519])
    assert quantize_tensor(w, 4, rounding="trunc")[0][1].item() == w[1].item()


def test_quantize_tensor_2_bits_is_ternary_and_trunc_is_coarser():
    w = torch.tensor([-1.0, -0.6, -0.4, 0.0, 0.3, 0.5, 0.51, 1.0])
    q, step = quantize_tensor(w, 2)
    assert step == 1.0
    # round-half-to-even (torch.round): 0.5 → 0, 0.51 → 1
    assert q.tolist() == [-1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    q, _ = quantize_tensor(w, 2, rounding="trunc")
    assert q.tolist() == [-1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_quantize_tensor_zero_and_bad_rounding():
    q, step = quantize_tensor(torch.zeros(3, 3), 4)
    assert step == 0.0 and torch.equal(q, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="rounding"):
        quantize_tensor(torch.ones(2), 4, rounding="floor")
    with pytest.raises(ValueError, match="weight bits"):
        quantize_tensor(torch.ones(2), 1)


def test_quantize_weights_touches_only_conv_and_linear_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    gm = torch.fx.symbolic_trace(model)
    out = quantize_weights(gm, 3)
    for (name, before), (_, after) in zip(gm.named_parameters(), out.named_parameters(),
                                          strict=True):
        if name.endswith("bias"):
            assert torch.equal(before, after)  # biases stay in full precision
        else:
            assert not torch.equal(before, after)
            assert torch.equal(after, quantize_tensor(before, 3)[0])
    assert torch.equal(gm.get_submodule("0").weight, model[0].weight)  # input untouched


# ------------------------------------------------------------------ converted networks


@pytest.fixture(scope="module")
def fashion_images():
    test = load_dataset("fashion-mnist", "test").subset(64, seed=3)
    return next(iter(BatchLoader(test, 64)))


@pytest.fixture(scope="module")
def qcfs_ann():
    ann, _ = load_checkpoint(SHIPPED_MODEL_DIR)
    return ann


@pytest.fixture(scope="module")
def digits():
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test").subset(64, seed=0)
    return train, next(iter(BatchLoader(test, 64)))


@pytest.fixture(scope="module")
def relu_ann(digits):
    """A ReLU fashion_cnn trained for one epoch on 8×8 digits (~85% test accuracy). Plain SGD
    with momentum written out: torch.optim's first use imports torch._dynamo (seconds)."""
    train, _ = digits
    torch.manual_seed(0)
    model = create_model("fashion_cnn", 10, 1, ActivationSpec("relu"), input_size=(8, 8))
    params = list(model.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    model.train()
    for x, y in BatchLoader(train, 32, shuffle=True, seed=0):
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p, v in zip(params, velocity, strict=True):
                p.sub_(v.mul_(0.9).add_(p.grad), alpha=0.05)
    return model.eval()


def _convert(kind, ann, digits, **kw):
    if kind == "qcfs":
        return sb.convert(ann, "qcfs", **kw)
    train, _ = digits
    return sb.convert(ann, "maxnorm", calibration_data=BatchLoader(train, 128),
                      calibration_samples=256, **kw)


def _layers(snn):
    return {n: m for n, m in snn.network.named_modules() if isinstance(m, FOLDABLE)}


@pytest.mark.parametrize("kind", ["qcfs", "maxnorm"])
def test_16_bits_change_no_prediction_and_2_bits_do(kind, qcfs_ann, relu_ann, digits,
                                                    fashion_images):
    ann = qcfs_ann if kind == "qcfs" else relu_ann
    x, y = fashion_images if kind == "qcfs" else digits[1]
    steps = 8 if kind == "qcfs" else 32  # max-norm needs more steps to be accurate
    full = _convert(kind, ann, digits)
    reference = simulate(full, x, steps)
    predictions = reference.sum(0).argmax(-1)
    assert (predictions == y).float().mean() >= 0.75  # a real (trained) model
    fine = _convert(kind, ann, digits, weight_bits=16)
    assert fine.weight_bits == 16
    assert any(not torch.equal(a.weight, b.weight)
               for a, b in zip(_layers(full).values(), _layers(fine).values(), strict=True))
    # 16 bits move single spikes, which can only decide near-ties: no confident prediction
    # (winner ahead of the runner-up by >= 2%) changes, and at most one of 64 overall
    top2 = reference.sum(0).topk(2, dim=-1).values
    confident = (top2[:, 0] - top2[:, 1]) >= 0.02 * top2[:, 0].abs()
    assert confident.sum() >= 56
    changed = simulate(fine, x, steps).sum(0).argmax(-1) != predictions
    assert not changed[confident].any() and changed.sum() <= 1
    coarse = simulate(_convert(kind, ann, digits, weight_bits=2), x, steps)
    assert not torch.equal(coarse, reference)
    assert (coarse.sum(0).argmax(-1) != predictions).sum() >= 4


@pytest.mark.parametrize("bits", [2, 5, 8])
def test_convert_quantizes_after_normalization(bits, relu_ann, digits):
    """weight_bits applies §7.6's grid to the normalized weights, layer by layer."""
    plain = _convert("maxnorm", relu_ann, digits)
    quantized = _convert("maxnorm", relu_ann, digits, weight_bits=bits)
    levels = 2 ** (bits - 1) - 1
    plain_layers, quant_layers = _layers(plain), _layers(quantized)
    assert list(plain_layers) == list(quant_layers) and len(plain_layers) == 6
    for name, layer in quant_layers.items():
        source = plain_layers[name]
        assert torch.equal(layer.weight, quantize_tensor(source.weight, bits)[0]), name
        step = float(source.weight.detach().abs().max()) / levels
        integers = layer.weight.double() / step
        assert torch.allclose(integers, integers.round(), atol=1e-4)
        assert integers.round().abs().max() == levels
        if source.bias is not None:
            assert torch.equal(layer.bias, source.bias)  # biases stay in full precision
    # thresholds are untouched by quantization
    for a, b in zip(plain.neurons().values(), quantized.neurons().values(), strict=True):
        assert float(a.threshold) == float(b.threshold) and a.amplitude == b.amplitude


def test_weight_bits_recorded_and_validated(qcfs_ann, fashion_images):
    x, y = fashion_images
    snn = sb.convert(qcfs_ann, weight_bits=6)
    result = evaluate(snn, [(x[:8], y[:8])], [2])
    assert result.params["weight_bits"] == 6
    assert "weight_bits" not in evaluate(sb.convert(qcfs_ann), [(x[:8], y[:8])], [2]).params
    for bad in (1, 17, 3.5):
        with pytest.raises(ValueError, match="weight bits"):
            sb.convert(qcfs_ann, weight_bits=bad)


def test_ecc_rounding_is_eccs_own_grid():
    """rounding="ecc": Δ = max|W| / 2^(b−1), truncation toward zero, no clamp — the largest
    weight lands on level 2^(b−1), one beyond b signed bits, as in ECC's code."""
    w = torch.tensor([0.9, -0.35, 0.5, -0.9, 0.1], dtype=torch.float32)
    q, step = quantize_tensor(w, 3, rounding="ecc")  # 2^(3-1) = 4 levels per sign
    assert step == pytest.approx(0.9 / 4)
    assert (q / step).round().tolist() == [4.0, -1.0, 2.0, -4.0, 0.0]  # trunc(W / Δ)
    ours, _ = quantize_tensor(w, 3, rounding="trunc")  # our grid: 3 levels, fits 3 bits
    assert (ours / (0.9 / 3)).round().abs().max() == 3


def test_convert_refuses_an_unknown_rounding():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), sb.QCFS(4, 1.0)).eval()
    with pytest.raises(ValueError, match="weight_rounding"):
        sb.convert(model, "qcfs", weight_bits=4, weight_rounding="up")
