"""fx conversion: BatchNorm folding, activation → IF neuron, residual blocks, clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikebridge as sb
from spikebridge.activations import QCFS, ActivationSpec
from spikebridge.analysis import offset_spikes
from spikebridge.batchnorm_folding import fold_batchnorm
from spikebridge.convert import fold_graph_batchnorms, trace
from spikebridge.models import create_model
from spikebridge.neurons import IFNeuron


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.05)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
        if isinstance(m, QCFS):
            m.theta.data.fill_(float(torch.rand(1, generator=g)) * 2 + 0.5)
    return model.eval()


@pytest.mark.parametrize("bias", [True, False])
def test_batchnorm_folding_equals_unfolded(bias):
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 8, 3, padding=1, bias=bias).double(), nn.BatchNorm2d(8, eps=1e-3)
    _randomize_bn(bn.double())
    x = torch.randn(4, 3, 9, 9, dtype=torch.float64)
    assert torch.allclose(fold_batchnorm(conv, bn)(x), bn(conv(x)), atol=1e-12, rtol=0)
    linear, bn1 = nn.Linear(6, 5, bias=bias).double(), _randomize_bn(nn.BatchNorm1d(5).double())
    y = torch.randn(7, 6, dtype=torch.float64)
    assert torch.allclose(fold_batchnorm(linear, bn1)(y), bn1(linear(y)), atol=1e-12, rtol=0)


def test_folding_uses_epsilon():
    conv, bn = nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, eps=0.5)
    bn.eval()
    bn.running_var.fill_(0.01)
    x = torch.randn(2, 1, 3, 3)
    assert torch.allclose(fold_batchnorm(conv, bn)(x), bn(conv(x)), atol=1e-5)


def test_converted_network_folds_bn_and_maps_thresholds():
    model = _randomize_bn(create_model("fashion_cnn", 10, 1))
    snn = sb.convert(model)
    modules = dict(snn.network.named_modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules.values())
    neurons = snn.neurons()
    qcfs = {n: m for n, m in model.named_modules() if isinstance(m, QCFS)}
    assert list(neurons) == list(qcfs)  # same names, forward order
    for name, neuron in neurons.items():
        assert float(neuron.threshold) == pytest.approx(float(qcfs[name].theta.detach()))
        assert neuron.initial_fraction == 0.5 and neuron.reset == "subtract"
    # The ANN itself is untouched.
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, QCFS) for m in model.modules()) == 5


def test_folded_ann_graph_equals_ann():
    """Before neurons replace activations, the folded graph computes the same function."""
    model = _randomize_bn(create_model("resnet20", 10, 3)).double()
    gm = trace(model)
    fold_graph_batchnorms(gm)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        # QCFS floors: compare pre-activation-free parts through the whole net at float64.
        assert torch.allclose(gm(x), model(x), atol=1e-9)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gm.modules())


class TinyResidual(nn.Module):
    """A ResNet basic block written with functional ReLUs, as users often do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.shortcut = nn.Conv2d(2, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = torch.relu(out + self.shortcut(x))
        return self.fc(torch.flatten(self.pool(out), 1))


def test_functional_relu_and_residual_add_are_converted():
    model = _randomize_bn(TinyResidual())
    snn = sb.convert(model, thresholds=1.0)
    neurons = snn.neurons()
    assert len(neurons) == 2 and all(float(n.threshold) == 1.0 for n in neurons.values())
    assert not any(n.op == "call_function" and "relu" in str(n.target)
                   for n in snn.network.graph.nodes)
    assert all(isinstance(snn.network.get_submodule(name), IFNeuron) for name in neurons)
    targets = [n.target for n in snn.network.graph.nodes if n.op == "call_function"]
    assert any(getattr(t, "__name__", "") == "add" for t in targets)
    out = sb.simulate(snn, torch.randn(2, 2, 5, 5), 4)
    assert out.shape == (4, 2, 3)
    # per-site thresholds by name, and unknown names are rejected
    named = sb.convert(model, thresholds={"relu": 0.5, "relu_1": 2.0})
    assert sorted(float(n.threshold) for n in named.neurons().values()) == [0.5, 2.0]
    with pytest.raises(ValueError, match="unknown activation"):
        sb.convert(model, thresholds={"nope": 1.0})


class SharedReLU(nn.Module):
    """torchvision-style: one nn.ReLU module called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


def test_shared_activation_module_gets_one_neuron_per_call():
    snn = sb.convert(SharedReLU(), thresholds=1.0)
    neurons = snn.neurons()
    assert list(neurons) == ["relu", "relu_call"]
    assert neurons["relu"] is not neurons["relu_call"]
    assert snn.sources == {"relu": "relu", "relu_call": "relu"}
    x = torch.randn(3, 3)
    assert torch.equal(sb.simulate(snn, x, 5, mode="step"), sb.simulate(snn, x, 5, mode="layer"))
    with pytest.raises(ValueError, match="called more than once"):
        offset_spikes(SharedReLU(), snn, x, 4)


def test_relu_without_threshold_is_a_clear_error():
    with pytest.raises(ValueError, match="plain ReLU.*thresholds="):
        sb.convert(TinyResidual())


class WithLayer(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.act = QCFS()
        self.layer = layer
        self.fc = nn.Linear(2 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.layer(self.act(self.conv(x))), 1))


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        # MaxPool2d converts (spiking max-pool); adaptive max-pooling has no counterpart
        (nn.AdaptiveMaxPool2d(4), "'layer' \\(AdaptiveMaxPool2d\\).*average pooling.*to_qcfs"),
        (nn.GELU(), "'layer' \\(GELU\\).*QCFS"),
        (nn.LSTM(2, 2), "'layer' \\(LSTM\\) is not supported"),
    ],
)
def test_unsupported_layers_raise_naming_the_layer(layer, message):
    with pytest.raises(sb.UnsupportedLayerError, match=message):
        sb.convert(WithLayer(layer))


class Functional(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.act = QCFS()
        self.fn = fn

    def forward(self, x):
        return torch.flatten(self.fn(self.act(self.conv(x))), 1)


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda x: F.adaptive_max_pool2d(x, 2), "adaptive_max_pool2d.*average pooling"),
        (torch.sigmoid, "sigmoid.*no spiking counterpart"),
        (lambda x: x * x, "multiplies two signals"),
        (lambda x: torch.flatten(x, 0), "batch dimension"),
    ],
)
def test_unsupported_functions_raise(fn, message):
    with pytest.raises(sb.UnsupportedLayerError, match=message):
        sb.convert(Functional(fn))


def test_scaling_by_constant_and_dropout_are_fine():
    model = nn.Sequential(nn.Linear(4, 4), QCFS(), nn.Dropout(0.5), nn.Linear(4, 2))
    snn = sb.convert(model)
    assert not any(isinstance(m, nn.Dropout) for m in snn.modules())
    assert sb.convert(Functional(lambda x: x * 0.5)).neurons()


def test_model_without_activations_and_custom_activation():
    with pytest.raises(sb.UnsupportedLayerError, match="no activation layers"):
        sb.convert(nn.Sequential(nn.Linear(3, 2)))

    class Swish(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x)

    with pytest.raises(sb.UnsupportedLayerError, match="sigmoid.*inside module 'act'"):
        sb.convert(_SwishNet(Swish()))


class _SwishNet(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.q = QCFS()
        self.act = act

    def forward(self, x):
        return self.act(self.q(self.fc(x)))


def test_unknown_method_and_parameters():
    model = nn.Sequential(nn.Linear(3, 3), QCFS(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="unknown conversion method"):
        sb.convert(model, method="magic")
    with pytest.raises(ValueError, match="no parameter.*rho"):
        sb.convert(model, method="qcfs", rho=4)
    assert isinstance(create_model("vgg16", 10, 3, ActivationSpec()), nn.Module)
