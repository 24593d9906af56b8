"""Simulation: step-by-step == layer-wise (bitwise), SNN == ANN where theory says so, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import spikebridge as sb
from spikebridge.activations import QCFS
from spikebridge.models import create_model
from spikebridge.simulate import correct_over_time


def _random_qcfs_model(name: str, in_channels: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model(name, 10, in_channels)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(0.0, 0.3)
        if isinstance(m, QCFS):
            m.theta.data.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize(("name", "shape"), [("fashion_cnn", (6, 1, 28, 28)),
                                             ("resnet20", (3, 3, 16, 16))])
def test_step_and_layer_modes_are_bit_identical(name, shape):
    model = _random_qcfs_model(name, shape[1])
    snn = sb.convert(model)
    x = torch.randn(*shape)
    stepped = sb.simulate(snn, x, 6, mode="step")
    layered = sb.simulate(snn, x, 6, mode="layer")
    assert stepped.shape == (6, shape[0], 10)
    assert torch.equal(stepped, layered)
    assert stepped.abs().sum() > 0  # spikes reached the output


# every registered model: (in_channels, input H×W, IF neurons); ImageNet forms at 64×64 instead of
# 224×224 to stay fast on a CPU (their adaptive pools accept any size)
EVERY_MODEL = {
    "fashion_cnn": (1, (28, 28), 5),
    "vgg16": (3, (32, 32), 15),
    "resnet18": (3, (32, 32), 17),
    "resnet20": (3, (32, 32), 19),
    "resnet34": (3, (32, 32), 33),
    "vgg16_imagenet": (3, (64, 64), 15),
    "resnet34_imagenet": (3, (64, 64), 33),
    "vgg7": (2, (42, 42), 6),
}


def test_every_registered_model_is_covered():
    from spikebridge.models import list_models

    assert sorted(EVERY_MODEL) == list_models()


@pytest.mark.parametrize("name", sorted(EVERY_MODEL))
def test_every_model_converts_and_runs_step_layer_hybrid_alike(name):
    channels, size, neurons = EVERY_MODEL[name]
    model = _random_qcfs_model(name, channels)
    x = torch.randn(2, channels, *size, generator=torch.Generator().manual_seed(0))
    snn = sb.convert(model, "cos", rho=2)
    assert len(snn.neurons()) == neurons
    layered = sb.simulate(snn, x, 3, mode="layer")
    assert torch.equal(layered, sb.simulate(snn, x, 3, mode="hybrid"))
    qcfs = sb.convert(model)
    stepped = sb.simulate(qcfs, x, 3, mode="step")
    assert torch.equal(sb.simulate(qcfs, x, 3, mode="layer"), stepped)
    assert torch.equal(sb.simulate(qcfs, x, 3, mode="hybrid"), stepped)
    assert stepped.shape == (3, 2, 10) and bool(torch.isfinite(stepped).all())


def test_first_layer_runs_once_in_the_time_invariant_prefix():
    snn = sb.convert(_random_qcfs_model("fashion_cnn", 1))
    prefix_targets = [n.target for n in snn.split.prefix.graph.nodes if n.op == "call_module"]
    assert prefix_targets == ["features.0"]  # the first conv (BN folded into it)
    assert snn.split.neuron_only == [True]


def test_single_layer_snn_equals_qcfs_ann_when_T_equals_L():
    """Constant input, T = L, v(0) = θ/2 ⇒ φ(T) is exactly the QCFS output (§3.5 Thm 1)."""
    torch.manual_seed(3)
    L = 4
    model = nn.Sequential(nn.Linear(5, 16), QCFS(levels=L, theta=1.3), nn.Linear(16, 3)).double()
    model.eval()
    x = torch.randn(64, 5, dtype=torch.float64)
    snn = sb.convert(model)
    out = sb.simulate(snn, x, L)
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(out.mean(dim=0), expected, atol=1e-9)


def test_accuracy_at_every_step_from_one_run():
    model = _random_qcfs_model("fashion_cnn", 1, seed=2)
    x = torch.randn(20, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    snn = sb.convert(model)
    result = sb.evaluate(snn, [(x[:10], y[:10]), (x[10:], y[10:])], [1, 4, 64], ann=model)
    assert result.n_samples == 20 and result.ann_accuracy == 1.0
    assert sorted(result.snn_accuracy) == list(range(1, 65))
    outputs = sb.simulate(snn, x, 64)
    per_t = correct_over_time(outputs, y)
    assert [result.snn_accuracy[t] for t in (1, 4, 64)] == [float(per_t[t - 1]) / 20
                                                           for t in (1, 4, 64)]
    assert result.snn_accuracy[64] >= 0.8  # long simulations approach the ANN


def test_state_is_reset_between_batches():
    snn = sb.convert(_random_qcfs_model("fashion_cnn", 1))
    x = torch.randn(4, 1, 28, 28)
    first = sb.simulate(snn, x, 3)
    sb.simulate(snn, torch.randn(4, 1, 28, 28), 5)
    assert torch.equal(sb.simulate(snn, x, 3), first)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_time_steps(bad):
    snn = sb.convert(_random_qcfs_model("fashion_cnn", 1))
    with pytest.raises(ValueError, match="T must be an integer >= 1"):
        sb.simulate(snn, torch.randn(2, 1, 28, 28), bad)


def test_bad_inputs():
    snn = sb.convert(_random_qcfs_model("fashion_cnn", 1))
    with pytest.raises(ValueError, match="batch dimension"):
        sb.simulate(snn, torch.randn(28), 2)
    with pytest.raises(TypeError, match="SpikingNetwork"):
        sb.simulate(nn.Linear(2, 2), torch.randn(2, 2), 2)
    with pytest.raises(ValueError, match="mode must be one of"):
        sb.simulate(snn, torch.randn(2, 1, 28, 28), 2, mode="fast")


def _random_relu_model(name: str, in_channels: int, seed: int = 0) -> nn.Module:
    from spikebridge.activations import ActivationSpec

    torch.manual_seed(seed)
    model = create_model(name, 10, in_channels, ActivationSpec("relu"))
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(0.0, 0.3)
    return model.eval()


@pytest.mark.parametrize(("method", "name", "shape"), [
    ("maxnorm", "resnet20", (2, 3, 8, 8)),  # residual adds: shortcut rescaling nodes
    ("ecc", "fashion_cnn", (4, 1, 28, 28)),
    ("threshold-balancing", "fashion_cnn", (4, 1, 28, 28)),
    ("rmp", "fashion_cnn", (4, 1, 28, 28)),
])
def test_normalized_methods_step_and_layer_bit_identical(method, name, shape):
    """Unit spikes, hard reset and ECC's TRE current ηθ/T keep step == layer to the last bit."""
    model = _random_relu_model(name, shape[1])
    torch.manual_seed(1)
    calibration = [torch.randn(*shape) for _ in range(2)]
    params = {"balance_steps": 4} if method == "threshold-balancing" else {}
    snn = sb.convert(model, method, calibration_data=calibration, calibration_samples=8, **params)
    assert all(n.amplitude == 1.0 for n in snn.neurons().values())
    x = torch.randn(*shape)
    stepped = sb.simulate(snn, x, 7, mode="step")
    layered = sb.simulate(snn, x, 7, mode="layer")
    assert torch.equal(stepped, layered)
    assert stepped.abs().sum() > 0
    assert snn.horizon_dependent() == (method == "ecc")
