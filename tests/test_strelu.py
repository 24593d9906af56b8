"""Symmetric-threshold ReLU and its baselines (docs/methods.md §6) — a RECONSTRUCTION.

The stReLU paper's formulas were not recovered (only its abstract); these tests check our
reading of §6.2: stReLU = clip(z, −θ, θ) → signed IF neuron with thresholds ±θ and weighted
spikes; the asymmetric-threshold LeakyReLU → signed neuron with negative threshold θ₋/α and
negative spikes worth θ₋; threshold ReLU → unsigned IF with v(0) = 0. They test the neuron
dynamics and the conversion we implemented, not agreement with the paper.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

import spikebridge as sb
from spikebridge.activations import (
    ActivationSpec,
    AsymmetricLeakyReLU,
    ClippedReLU,
    SymmetricThresholdReLU,
)
from spikebridge.methods import ActivationSite, WrongSourceModelError, get_method
from spikebridge.models import create_model
from spikebridge.neurons import IFNeuron

currents_st = st.lists(st.floats(-3.0, 3.0, allow_nan=False), min_size=1, max_size=40)
theta_st = st.floats(0.05, 4.0)


def strelu_neuron(theta: float, v0: float = 0.0) -> IFNeuron:
    theta = float(torch.tensor(theta))  # as read from a (float32) trained threshold
    site = ActivationSite("a", "strelu", theta, module=SymmetricThresholdReLU(theta))
    return get_method("strelu", v0=v0).neuron(site)


def leaky_neuron(theta: float, alpha: float, neg_theta: float) -> IFNeuron:
    module = AsymmetricLeakyReLU(theta, alpha=alpha, neg_theta=neg_theta)
    return get_method("leaky-threshold").neuron(ActivationSite("a", "leaky_threshold", theta,
                                                              module=module))


def run_steps(neuron: IFNeuron, currents: list[float]) -> torch.Tensor:
    """Step-mode run of one neuron on a float64 current sequence; returns x(t), shape [T]."""
    neuron.double().reset_state()
    return torch.stack([neuron(torch.tensor([c], dtype=torch.float64)) for c in currents]).view(-1)


@settings(max_examples=300, deadline=None)
@given(currents_st, theta_st, st.floats(-0.999, 0.999))
def test_signed_rate_identity(currents, theta, v0_frac):
    """φ(T) = mean current − (v(T) − v(0))/T exactly, for any input order (§2.4, s ∈ {−1,0,1})."""
    neuron = strelu_neuron(theta, v0_frac)
    theta = float(neuron.threshold)
    assert neuron.negative == (theta, theta) and neuron.initial_fraction == v0_frac
    out = run_steps(neuron, currents)
    T = len(currents)
    v0 = v0_frac * theta
    expected = sum(currents) / T - (float(neuron.v[0]) - v0) / T
    assert float(out.sum()) / T == pytest.approx(expected, abs=1e-9)
    assert set(out.tolist()) <= {-theta, 0.0, theta}


@settings(max_examples=300, deadline=None)
@given(st.floats(-3.0, 3.0), theta_st, st.floats(-0.999, 0.999), st.integers(1, 64))
def test_signed_constant_input_closed_form(c_frac, theta, v0_frac, T):
    """Constant c, v(0) ∈ (−θ, θ): N = clip(⌊(Tc + v(0))/θ⌋, 0, T) for c ≥ 0 and
    −clip(⌊(T|c| − v(0))/θ⌋, 0, T) for c < 0 — valid when |c| ≤ θ or v(0) has c's sign (or is 0).
    With v(0) = 0: φ = θ sign(c) ⌊T|c|/θ⌋ / T, quantization towards 0 on both sides."""
    if abs(c_frac) > 1 and v0_frac * c_frac < 0:
        v0_frac = -v0_frac
    neuron = strelu_neuron(theta, v0_frac)
    theta = float(neuron.threshold)
    c, v0 = c_frac * theta, v0_frac * theta
    exact = (T * abs(c) + (v0 if c >= 0 else -v0)) / theta
    assume(abs(exact - round(exact)) > 1e-6)
    out = run_steps(neuron, [c] * T)
    net = round(float(out.sum()) / theta)
    assert net == math.copysign(min(max(math.floor(exact), 0), T), c)
    assert not ((out > 0).any() and (out < 0).any())  # constant input never fires both ways


@settings(max_examples=300, deadline=None)
@given(st.floats(-20.0, -1e-3), st.floats(0.05, 1.0), st.floats(0.1, 2.0), st.integers(1, 64))
def test_asymmetric_negative_branch_rate(z, alpha, neg_theta, T):
    """Negative threshold θ₋/α, spikes −θ₋, v(0) = 0, constant z < 0:
    N₋ = clip(⌊Tα|z|/θ₋⌋, 0, T), so φ(T) = −θ₋N₋/T is within θ₋/T of max(αz, −θ₋)."""
    neuron = leaky_neuron(2.0, alpha, neg_theta)
    # θ₋ is stored rounded to float32, like θ (so ±θ stay exactly symmetric)
    neg_threshold = float(torch.tensor(neg_theta / alpha, dtype=torch.float32))
    assert neuron.negative == (neg_threshold, neg_theta)
    assert neuron.spike_value() == float(neuron.threshold) == 2.0
    out = run_steps(neuron, [z] * T)
    phi = float(out.sum()) / T
    assert phi == pytest.approx(max(alpha * z, -neg_theta), abs=neg_theta / T + 1e-9)
    exact = T * abs(z) / neg_threshold
    if abs(exact - round(exact)) > 1e-6:
        assert round(-phi * T / neg_theta) == min(math.floor(exact), T)
    assert (out <= 0).all()


def test_asymmetric_positive_branch_is_the_unsigned_neuron():
    neuron = leaky_neuron(1.5, alpha=0.2, neg_theta=0.4)
    out = run_steps(neuron, [0.75] * 10)  # ⌊7.5/1.5⌋ = 5 spikes of 1.5 in 10 steps
    assert out.tolist().count(1.5) == 5 and set(out.tolist()) == {0.0, 1.5}


def test_threshold_relu_neuron_starts_at_zero():
    neuron = get_method("threshold-relu").neuron(
        ActivationSite("a", "clipped_relu", 2.0, module=ClippedReLU(2.0)))
    assert neuron.initial_fraction == 0.0 and not neuron.signed and neuron.reset == "subtract"
    out = run_steps(neuron, [0.5] * 8)  # v(0) = 0: floor(8·0.5/2) = 2 spikes (QCFS's θ/2: 2 too)
    assert out.tolist().count(2.0) == 2
    out = run_steps(neuron, [0.3] * 5)  # floor(1.5/2) = 0 (θ/2 start would give 1)
    assert float(out.sum()) == 0.0


def _randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        if hasattr(m, "theta") and isinstance(m.theta, nn.Parameter):
            m.theta.data.fill_(float(torch.rand(1, generator=g)) * 2 + 0.5)
    return model.eval()


SPECS = {
    "strelu": "strelu:theta=2",
    "leaky-threshold": "leaky_threshold:theta=2,alpha=0.2,neg_theta=0.6",
    "threshold-relu": "clipped_relu:theta=2",
}


@pytest.mark.parametrize("method", list(SPECS))
def test_convert_fashion_cnn_gives_the_right_neurons(method):
    model = _randomized(create_model("fashion_cnn", 10, 1, ActivationSpec.parse(SPECS[method])))
    acts = {n: m for n, m in model.named_modules() if hasattr(m, "theta")}
    params = {"v0": 0.25} if method == "strelu" else {}
    neurons = sb.convert(model, method, **params).neurons()
    assert list(neurons) == list(acts) and len(neurons) == 5
    for name, neuron in neurons.items():
        theta = float(acts[name].theta.detach())
        assert float(neuron.threshold) == theta and neuron.reset == "subtract"
        assert neuron.spike_value() == theta  # weighted spikes
        if method == "strelu":
            assert neuron.negative == (theta, theta) and neuron.initial_fraction == 0.25
        elif method == "leaky-threshold":
            assert neuron.negative == pytest.approx((0.6 / 0.2, 0.6))
            assert neuron.initial_fraction == 0.0
        else:
            assert not neuron.signed and neuron.initial_fraction == 0.0


def test_symmetric_hardtanh_converts_as_strelu():
    snn = sb.convert(nn.Sequential(nn.Linear(3, 4), nn.Hardtanh(-1.5, 1.5), nn.Linear(4, 2)),
                     "strelu")
    (neuron,) = snn.neurons().values()
    assert float(neuron.threshold) == 1.5 and neuron.negative == (1.5, 1.5)


@pytest.mark.parametrize(("method", "model_spec", "needed"), [
    ("strelu", "qcfs:L=4", "strelu:theta=2"),
    ("strelu", "clipped_relu", "strelu:theta=2"),
    ("leaky-threshold", "strelu", "leaky_threshold:theta=2,alpha=0.1,neg_theta=0.5"),
    ("threshold-relu", "strelu", "clipped_relu:theta=2"),
    ("threshold-relu", "qcfs:L=4", "clipped_relu:theta=2"),
])
def test_wrong_source_model_names_activation_and_command(method, model_spec, needed):
    model = create_model("fashion_cnn", 10, 1, ActivationSpec.parse(model_spec))
    kind = needed.split(":")[0]
    with pytest.raises(WrongSourceModelError) as info:
        sb.convert(model, method)
    message = str(info.value)
    assert f"converts ANNs trained with {kind} activations" in message
    assert f"spikebridge train --activation {needed} --out DIR" in message


@pytest.mark.parametrize("other", ["qcfs", "cos", "threshold-relu"])
def test_signed_models_are_refused_by_unsigned_methods(other):
    model = create_model("fashion_cnn", 10, 1, ActivationSpec.parse("strelu"))
    with pytest.raises(WrongSourceModelError, match="uses strelu"):
        sb.convert(model, other)


@pytest.mark.parametrize("method", ["strelu", "leaky-threshold"])
def test_step_and_layer_simulation_are_bit_identical(method):
    torch.manual_seed(0)
    spec = ActivationSpec.parse(SPECS[method])
    model = _randomized(create_model("fashion_cnn", 10, 1, spec, input_size=(8, 8)))
    snn = sb.convert(model, method)
    x = torch.randn(3, 1, 8, 8)
    step = sb.simulate(snn, x, 6, mode="step")
    layer = sb.simulate(snn, x, 6, mode="layer")
    assert torch.equal(step, layer)
    neurons = snn.neurons().values()
    assert any((n.v < 0).any() for n in neurons)  # negative potentials were exercised


def test_strelu_snn_approaches_ann_first_layer():
    """Direct (constant) input: |φ(T) − clip(z, −θ, θ)| < θ/T with v(0) = 0 (closed form)."""
    act = SymmetricThresholdReLU(1.0)
    z = torch.linspace(-3, 3, 601)
    snn = sb.convert(nn.Sequential(act), "strelu")
    for T in (4, 32):
        phi = sb.simulate(snn, z.view(-1, 1), T).mean(0).view(-1)
        assert (phi - act(z).detach()).abs().max() < 1.0 / T


def test_method_parameters_and_summaries():
    assert get_method("strelu").params() == {"v0": 0.0}
    with pytest.raises(ValueError, match=r"v0 is v\(0\)/θ and must lie in \(-1, 1\)"):
        get_method("strelu", v0=1.0)
    for name in ("strelu", "leaky-threshold"):
        assert "RECONSTRUCTED" in sb.methods.METHODS[name].summary
