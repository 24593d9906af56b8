"""SlipReLU (docs/methods.md §5): forward special cases bit for bit (§5.4), gradients (§5.2), and
the SNN mapping (§5.3): with T = L and constant input the IF neuron reproduces the step branch."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

import spikebridge as sb
from spikebridge.activations import QCFS, ActivationSpec, ClippedReLU, SlipReLU
from spikebridge.methods import WrongSourceModelError
from spikebridge.models import create_model


def _inputs(theta: float, L: int, dtype: torch.dtype) -> torch.Tensor:
    """Random values plus every quantization boundary of both branches (and 0, −0, θ)."""
    g = torch.Generator().manual_seed(L)
    z = torch.randn(5000, generator=g, dtype=dtype) * theta
    k = torch.arange(-2 * L, 3 * L + 1, dtype=dtype)
    edges = [k * theta / L, (k - 0.5) * theta / L, torch.tensor([0.0, -0.0, theta, -theta])]
    return torch.cat([z, *(e.to(dtype) for e in edges)])


CASES = [(2.0, 4), (1.0, 8), (0.7, 3), (2.3, 5), (4.0, 1), (1.37, 16)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("theta", "L"), CASES)
def test_special_cases_are_bit_identical(theta, L, dtype):
    """§5.4: c=0, δ₂=½ is QCFS; c=0, δ₂=0 is clip-floor = QCFS(shift 0); c=1, δ₁=0 is
    ClippedReLU."""
    z = _inputs(theta, L, dtype)
    qcfs = SlipReLU(L, theta, c=0.0, delta2=0.5).to(dtype)
    assert torch.equal(qcfs(z), QCFS(L, theta).to(dtype)(z))
    floor = SlipReLU(L, theta, c=0.0, delta2=0.0).to(dtype)
    t = floor.theta
    clip_floor = torch.clamp(torch.floor(z * (L / t)) / L, 0.0, 1.0) * t
    assert torch.equal(floor(z), clip_floor)
    assert torch.equal(floor(z), QCFS(L, theta, shift=0.0).to(dtype)(z))
    for delta2 in (0.0, 0.5, 0.8):
        ramp = SlipReLU(L, theta, c=1.0, delta1=0.0, delta2=delta2).to(dtype)
        assert torch.equal(ramp(z), ClippedReLU(theta).to(dtype)(z))
    learned = SlipReLU(L, theta, c=0.0, learn_c=True).to(dtype)  # same through the c clamp
    assert torch.equal(learned(z), QCFS(L, theta).to(dtype)(z))


@settings(max_examples=200, deadline=None)
@given(st.floats(-4, 8), st.floats(0.3, 4.0), st.integers(1, 16), st.floats(0.0, 1.0),
       st.floats(-0.5, 0.5), st.floats(0.0, 1.0))
def test_forward_matches_definition(z, theta, L, c, delta1, delta2):
    """h(z) = cθ clip(z/θ + δ₁/L, 0, 1) + (1−c)θ clip(⌊Lz/θ + δ₂⌋/L, 0, 1) (§5.1)."""
    u = L * z / theta + delta2
    assume(abs(u - round(u)) > 1e-9)
    act = SlipReLU(L, theta, c=c, delta1=delta1, delta2=delta2).double()
    act.theta.data.fill_(theta)
    act.c.fill_(c)
    out = float(act(torch.tensor([z], dtype=torch.float64)).detach())
    clip = lambda x: min(max(x, 0.0), 1.0)  # noqa: E731
    expected = c * theta * clip(z / theta + delta1 / L) + (1 - c) * theta * clip(
        math.floor(u) / L)
    assert out == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("c", "delta1", "delta2", "L"),
                         [(0.3, 0.0, 0.5, 4), (0.7, 0.25, 0.5, 8), (0.5, -0.4, 0.1, 3)])
def test_gradients_follow_section_5_2(c, delta1, delta2, L):
    r"""∂h/∂z = c𝟙₁ + (1−c)𝟙₂, ∂h/∂c = θ(clip₁ − clip₂),
    ∂h/∂θ = c(clip₁ − 𝟙₁ z/θ) + (1−c)(clip₂ − 𝟙₂ z/θ) (STE floor, autograd clamps)."""
    act = SlipReLU(L, 1.7, c=c, delta1=delta1, delta2=delta2, learn_c=True).double()
    theta = float(act.theta.detach())  # the float32-rounded 1.7
    g = torch.Generator().manual_seed(1)
    z = (torch.rand(400, generator=g, dtype=torch.float64) * 2.6 - 0.6) * theta
    u1, u2 = z / theta + delta1 / L, torch.floor(L * z / theta + delta2) / L
    z = z[((u1.abs() > 1e-6) & ((u1 - 1).abs() > 1e-6) & (u2.abs() > 1e-6)
           & ((u2 - 1).abs() > 1e-6))].requires_grad_(True)
    weights = torch.rand(z.shape, generator=g, dtype=torch.float64)  # no cancellation
    (act(z) * weights).sum().backward()
    zd = z.detach()
    u1, u2 = zd / theta + delta1 / L, torch.floor(L * zd / theta + delta2) / L
    clip1, clip2 = u1.clamp(0, 1), u2.clamp(0, 1)
    in1, in2 = ((u1 >= 0) & (u1 <= 1)).double(), ((u2 >= 0) & (u2 <= 1)).double()
    assert in1.min() == 0 and in1.max() == 1 and in2.min() == 0  # every case is exercised
    assert torch.allclose(z.grad, weights * (c * in1 + (1 - c) * in2), atol=1e-12)
    assert float(act.c.grad) == pytest.approx(float((weights * theta * (clip1 - clip2)).sum()))
    dtheta = c * (clip1 - in1 * zd / theta) + (1 - c) * (clip2 - in2 * zd / theta)
    assert float(act.theta.grad) == pytest.approx(float((weights * dtheta).sum()))


def test_learned_c_is_clamped_to_unit_interval():
    act = SlipReLU(4, 2.0, c=0.5, learn_c=True)
    act.c.data.fill_(1.7)  # e.g. after an optimizer step
    z = torch.linspace(-1, 3, 41)
    assert torch.equal(act(z), ClippedReLU(2.0)(z))


def _converted_neuron_output(module: SlipReLU, z: torch.Tensor, T: int) -> torch.Tensor:
    snn = sb.convert(nn.Sequential(module), "slip")
    return sb.simulate(snn, z.view(-1, 1), T, mode="step")


@pytest.mark.parametrize("theta", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("L", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("delta2", [0.0, 0.25, 0.5, 0.75])
def test_snn_with_T_equal_L_reproduces_step_branch_exactly(theta, L, delta2):
    """§5.3 + §2.5: θ = θ, v(0) = δ₂θ, T = L, constant input ⇒ φ(T) = the c=0 staircase.

    θ and L are powers of two and z lies on a fine dyadic grid that contains every quantization
    boundary, so all arithmetic is exact and the equality is bit for bit, ties included.
    """
    z = torch.arange(-8 * L, 20 * L + 1, dtype=torch.float32) * (theta / (8 * L))
    for c in (0.0, 0.6):  # c has no SNN counterpart: same neuron either way
        module = SlipReLU(L, theta, c=c, delta2=delta2)
        out = _converted_neuron_output(module, z, L)
        step_branch = SlipReLU(L, theta, c=0.0, delta2=delta2)(z).detach()
        assert torch.equal(out.mean(0).view(-1), step_branch)
        assert set(out.unique().tolist()) <= {0.0, theta}


@settings(max_examples=60, deadline=None)
@given(st.floats(0.2, 5.0), st.integers(1, 12), st.floats(0.0, 0.99),
       st.lists(st.floats(-1.0, 7.0), min_size=1, max_size=20))
def test_snn_with_T_equal_L_matches_step_branch_on_random_inputs(theta, L, delta2, zs):
    module = SlipReLU(L, theta, c=0.0, delta2=delta2)
    t = float(module.theta.detach())
    z = torch.tensor(zs)
    u = z.double() * L / t + delta2
    assume(bool(((u - u.round()).abs() > 1e-4).all()))
    out = _converted_neuron_output(module, z, L)
    counts = torch.round(out.sum(0).view(-1) / t)
    levels = torch.round(module(z).detach() * L / t)
    assert torch.equal(counts, levels)


def test_convert_maps_threshold_and_initial_potential():
    torch.manual_seed(0)
    model = create_model("fashion_cnn", 10, 1, ActivationSpec.parse("slip:L=8,c=0.3,delta2=0.25"))
    slips = {n: m for n, m in model.named_modules() if isinstance(m, SlipReLU)}
    for m in slips.values():
        m.theta.data.fill_(float(torch.rand(1)) * 2 + 0.5)
    snn = sb.convert(model.eval(), "slip")
    neurons = snn.neurons()
    assert list(neurons) == list(slips)
    for name, neuron in neurons.items():
        assert float(neuron.threshold) == float(slips[name].theta.detach())
        assert neuron.initial_fraction == 0.25
        assert neuron.reset == "subtract" and neuron.amplitude is None and not neuron.signed
    out = sb.simulate(snn, torch.randn(2, 1, 28, 28), 4)
    assert out.shape == (4, 2, 10)


def test_wrong_source_model_names_activation_and_command():
    with pytest.raises(WrongSourceModelError,
                       match=r"'slip' converts ANNs trained with slip .* uses qcfs.*"
                             r"spikebridge train --activation slip:L=4"):
        sb.convert(create_model("fashion_cnn", 10, 1), "slip")
    slip_model = create_model("fashion_cnn", 10, 1, ActivationSpec.parse("slip"))
    with pytest.raises(WrongSourceModelError, match="uses slip"):
        sb.convert(slip_model, "qcfs")
