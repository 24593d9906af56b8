"""Tests for the model registry and the model definitions in :mod:`spikebridge.models`."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.fx
from torch import nn

from spikebridge.activations import QCFS, ActivationSpec, ClippedReLU
from spikebridge.models import create_model, list_models, register_model

ACTIVATION_TYPES = (QCFS, ClippedReLU, nn.ReLU)

# name -> (in_channels, input H×W, expected number of activation modules)
EXPECTED = {
    "fashion_cnn": (1, (28, 28), 5),
    "vgg16": (3, (32, 32), 15),
    "resnet20": (3, (32, 32), 19),
    "resnet18": (3, (32, 32), 17),
    "resnet34": (3, (32, 32), 33),
    # ImageNet forms, built for 224×224; 64×64 keeps these tests fast (adaptive pooling)
    "vgg16_imagenet": (3, (64, 64), 15),
    "resnet34_imagenet": (3, (64, 64), 33),
    "vgg7": (2, (42, 42), 6),  # event count images (tests/test_events_training.py: other sizes)
}
CASES = [
    (name, num_classes)
    for name in EXPECTED
    for num_classes in (
        (10,) if name == "fashion_cnn" else (1000,) if name.endswith("_imagenet") else (10, 100)
    )
]


class _ActivationLeafTracer(torch.fx.Tracer):
    """Keeps activation modules as ``call_module`` nodes instead of tracing through them."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, ACTIVATION_TYPES) or super().is_leaf_module(m, module_qualified_name)


@functools.cache
def _model(name: str, num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    in_channels = EXPECTED[name][0]
    return create_model(name, num_classes=num_classes, in_channels=in_channels).eval()


def _input(name: str) -> torch.Tensor:
    in_channels, (h, w), _ = EXPECTED[name]
    return torch.randn(2, in_channels, h, w, generator=torch.Generator().manual_seed(1))


def _activations(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, ACTIVATION_TYPES)}


def test_registry_lists_exactly_the_expected_models() -> None:
    assert list_models() == sorted(EXPECTED)


@pytest.mark.parametrize(("name", "num_classes"), CASES)
def test_forward_shape_with_qcfs(name: str, num_classes: int) -> None:
    model = _model(name, num_classes)
    acts = _activations(model)
    assert acts and all(isinstance(m, QCFS) for m in acts.values())
    with torch.no_grad():
        out = model(_input(name))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "num_classes"), CASES)
def test_symbolic_trace_matches_eager(name: str, num_classes: int) -> None:
    model = _model(name, num_classes)
    x = _input(name)
    traced_plain = torch.fx.symbolic_trace(model)
    leaf_graph = _ActivationLeafTracer().trace(model)
    traced_leaf = torch.fx.GraphModule(model, leaf_graph)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(traced_plain(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(traced_leaf(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_activation_is_called_exactly_once(name: str) -> None:
    model = _model(name, 10)
    acts = _activations(model)
    assert len(acts) == EXPECTED[name][2]
    # Distinct objects, not one module registered under several names.
    assert len({id(m) for m in acts.values()}) == len(acts)
    graph = _ActivationLeafTracer().trace(model)
    targets = [n.target for n in graph.nodes if n.op == "call_module" and n.target in acts]
    assert sorted(targets) == sorted(acts), "each activation must be called exactly once"


@pytest.mark.parametrize("name", list(EXPECTED))
def test_no_max_pooling(name: str) -> None:
    max_pools = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool2d)
    assert not any(isinstance(m, max_pools) for m in _model(name, 10).modules())
    graph = torch.fx.symbolic_trace(_model(name, 10)).graph
    assert not any("max_pool" in str(n.target) for n in graph.nodes)


@pytest.mark.parametrize("name", ["fashion_cnn", "resnet20"])
def test_relu_spec_builds_relu_activations(name: str) -> None:
    model = create_model(name, in_channels=EXPECTED[name][0], activation=ActivationSpec("relu"))
    acts = _activations(model)
    assert len(acts) == EXPECTED[name][2]
    assert all(type(m) is nn.ReLU for m in acts.values())


def test_factory_and_default_activation() -> None:
    calls = []

    def factory() -> nn.Module:
        calls.append(1)
        return ClippedReLU(theta=3.0)

    model = create_model("fashion_cnn", in_channels=1, activation=factory)
    assert len(calls) == 5
    assert all(isinstance(m, ClippedReLU) for m in _activations(model).values())
    default = _activations(create_model("resnet20"))
    assert all(isinstance(m, QCFS) and m.levels == 4 for m in default.values())
    assert all(m.theta.detach().item() == 2.0 for m in default.values())


def test_unknown_model_raises_and_names_known_models() -> None:
    with pytest.raises(ValueError) as excinfo:
        create_model("resnet9000")
    message = str(excinfo.value)
    assert "resnet9000" in message
    for name in EXPECTED:
        assert name in message


def test_duplicate_registration_is_rejected() -> None:
    with pytest.raises(ValueError):
        register_model("vgg16")(lambda num_classes, in_channels, activation: nn.Identity())
    assert list_models() == sorted(EXPECTED)


def test_fashion_cnn_other_input_size() -> None:
    from spikebridge.models.small_cnn import fashion_cnn

    model = fashion_cnn(7, 3, ActivationSpec().build, input_size=(32, 16)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 16)).shape == (2, 7)
    # sizes not divisible by 4 (N-MNIST's 2×34×34 counts): the pools floor, 34 → 17 → 8
    odd = fashion_cnn(10, 2, ActivationSpec().build, input_size=(34, 30)).eval()
    assert odd.classifier[0].in_features == 64 * 8 * 7
    with torch.no_grad():
        assert odd(torch.randn(2, 2, 34, 30)).shape == (2, 10)
    with pytest.raises(ValueError, match="at least 4"):
        fashion_cnn(10, 1, ActivationSpec().build, input_size=(3, 28))


def test_imagenet_forms_have_torchvision_layouts_with_average_pools() -> None:
    vgg = _model("vgg16_imagenet", 1000)
    assert vgg.classifier[0].in_features == 512 * 7 * 7
    assert isinstance(vgg.features[-1], nn.AdaptiveAvgPool2d) and vgg.features[-1].output_size == (
        7, 7)
    assert sum(p.numel() for p in vgg.parameters()) == pytest.approx(138.36e6, rel=1e-3)
    resnet = _model("resnet34_imagenet", 1000)
    assert resnet.conv1.kernel_size == (7, 7) and resnet.conv1.stride == (2, 2)
    pool = resnet.stem_pool
    assert isinstance(pool, nn.AvgPool2d)
    assert (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 1)
    assert sum(p.numel() for p in resnet.parameters()) == pytest.approx(21.80e6, rel=1e-3)
    with torch.no_grad():
        out = resnet(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    # the CIFAR form has no stem pool
    assert _model("resnet34", 10).stem_pool is None


def test_resnet_shortcuts() -> None:
    from spikebridge.models.resnet import BasicBlock

    blocks = [m for m in _model("resnet20", 10).modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 9
    projections = [b for b in blocks if not isinstance(b.shortcut, nn.Identity)]
    assert len(projections) == 2  # first block of stages 2 and 3
    for block in projections:
        conv = block.shortcut[0]
        assert conv.kernel_size == (1, 1) and conv.stride == (2, 2)
