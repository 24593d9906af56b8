"""channels_last (the CPU simulator's layout) changes no value: COS calibration and simulation."""

from __future__ import annotations

import pytest
import torch

import spikebridge as sb
from spikebridge.methods.cos import OffsetSpikeCalibration

CL = torch.channels_last


def _currents(seed: int, rho: int = 4, shape=(3, 5, 6, 7)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rho, *shape, generator=g) * 0.8 + 0.3


@pytest.mark.parametrize("constant", [False, True])
@pytest.mark.parametrize("layouts", [("nchw", "nchw"), ("cl", "cl"), ("cl", "nchw"),
                                     ("nchw", "cl")])
def test_calibrated_initial_potential_does_not_depend_on_the_layout(constant, layouts):
    rule = OffsetSpikeCalibration(rho=4, iterations=2)
    frames = _currents(3)
    currents = frames[0] if constant else frames
    theta = 0.9
    # θ/2 for frame input; starts in [-θ, 2θ) for constant input (θ/2 is exact there, §2.5)
    g = torch.Generator().manual_seed(1)
    v0 = (torch.rand(frames[0].shape, generator=g) * 3 - 1) * theta if constant \
        else torch.full_like(frames[0], 0.45)
    expected = rule.initial_potential(currents, theta, v0, constant=constant, reset="subtract")

    def to(t: torch.Tensor, layout: str) -> torch.Tensor:
        if layout == "nchw":
            return t.contiguous()
        if t.dim() == 4:
            return t.contiguous(memory_format=CL)
        folded = t.flatten(0, 1)  # [ρ·B, C, H, W] channels_last, seen as [ρ, B, C, H, W]
        return torch.empty_like(folded, memory_format=CL).copy_(folded).view(t.shape)

    got = rule.initial_potential(to(currents, layouts[0]), theta, to(v0, layouts[1]),
                                 constant=constant, reset="subtract")
    assert torch.equal(got, expected)
    assert not torch.equal(expected, v0)  # some neurons were shifted: the test can fail


def test_cos_layer_and_hybrid_agree_and_keep_channels_last_state():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 6, 3, padding=1), sb.activations.QCFS(4, 1.0),
        torch.nn.Conv2d(6, 6, 3, padding=1), sb.activations.QCFS(4, 1.2),
        torch.nn.Flatten(), torch.nn.Linear(6 * 8 * 8, 3)).eval()
    snn = sb.convert(model, "cos", rho=3)
    x = torch.randn(4, 2, 8, 8)
    layered = sb.simulate(snn, x, 5, mode="layer")
    assert torch.equal(layered, sb.simulate(snn, x, 5, mode="hybrid"))
    assert all(n.v.is_contiguous(memory_format=CL) for n in snn.neurons().values())


def test_channels_last_weights_also_when_parameters_are_inference_tensors():
    """A method may prepare the network under torch.inference_mode (threshold balancing)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), sb.activations.QCFS(4, 1.0),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3)).eval()
    snn = sb.convert(model)
    x, y = torch.randn(5, 2, 8, 8), torch.randint(0, 3, (5,))
    expected = sb.simulate(snn, x, 4)
    snn = sb.convert(model)
    with torch.inference_mode():
        for module in snn.network.modules():
            for name, param in list(module.named_parameters(recurse=False)):
                setattr(module, name, torch.nn.Parameter(param.detach().clone()))
        assert snn.network.get_submodule("0").weight.is_inference()
        sb.simulate(snn, x, 2)  # first simulation (weights to channels_last) in inference mode
    result = sb.evaluate(snn, [(x, y)], 4)  # operation counting reads the weights afterwards
    weight = snn.network.get_submodule("0").weight
    assert not weight.is_inference() and weight.is_contiguous(memory_format=CL)
    assert torch.equal(sb.simulate(snn, x, 4), expected)
    assert result.operations is not None


@pytest.mark.parametrize("method", ["qcfs", "cos"])
def test_one_channel_input_still_runs_every_layer_channels_last(method):
    # A [C, 1, k, k] weight (and a [B, 1, H, W] image) count as channels_last-contiguous in
    # NCHW strides; unless they are restrided, oneDNN runs the first layer — its IF update and
    # the pooling after it — in NCHW, where average pooling was ~7× slower (issue #10).
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 3, padding=1), sb.activations.QCFS(4, 1.0),
        torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(6, 6, 3, padding=1), sb.activations.QCFS(4, 1.2),
        torch.nn.Flatten(), torch.nn.Linear(6 * 4 * 4, 3)).eval()
    snn = sb.convert(model, method, **({"rho": 2} if method == "cos" else {}))
    x = torch.rand(5, 1, 8, 8)
    outputs = sb.simulate(snn, x, 3)
    states = [n.v for n in snn.neurons().values() if n.v.dim() == 4]
    assert len(states) == 2
    assert all(v.stride()[1] == 1 for v in states), [v.stride() for v in states]
    assert torch.equal(outputs, sb.simulate(snn, x, 3, mode="layer"))
