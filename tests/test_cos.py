"""COS (docs/methods.md §4): Theorems 1–3 as property tests, calibration behaviour, bad input."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from torch import nn

import spikebridge as sb
from spikebridge.activations import QCFS
from spikebridge.analysis import analyse_offsets, offset_spikes
from spikebridge.methods.cos import OffsetSpikeCalibration, down_shift, offset_sign, up_shift
from spikebridge.models import create_model
from spikebridge.neurons import integrate_and_fire

current_lists = st.lists(st.floats(-2.5, 2.5, allow_nan=False, allow_subnormal=False),
                         min_size=1, max_size=8)


def dyadic(low: float, high: float, bits: int = 8):
    """Floats on a 2^-bits grid: every sum, difference and product the theorem tests form (a
    few steps, moderate magnitudes) is then exact in float64, so they test the theorems, not
    rounding. (With arbitrary floats, v(0) + shift − θ can round to just below an exact
    threshold landing — e.g. currents [1.5, −1.5, θ], v(0) = θ — and a spike goes missing.)"""
    scale = 2 ** bits
    return st.integers(math.ceil(low * scale), math.floor(high * scale)).map(lambda k: k / scale)


dyadic_current_lists = st.lists(dyadic(-2.5, 2.5), min_size=1, max_size=8)


def trace_of(currents: list[float], theta: float, v0: float):
    c = torch.tensor(currents, dtype=torch.float64).view(-1, 1)
    return integrate_and_fire(c, theta, torch.tensor([v0], dtype=torch.float64), len(currents),
                              track_extrema=True)


@settings(max_examples=500, deadline=None)
@given(dyadic_current_lists, dyadic(0.1, 3.0), dyadic(-1.5, 2.0), dyadic(1e-2, 0.996))
def test_theorem2_down_shift_removes_exactly_one_spike(currents, theta, v0_frac, eps_frac):
    # ε ∈ (0, θ]; at ε = θ exactly a later firing step lands *on* the threshold, which only
    # exact arithmetic resolves, so floating-point tests stay just below it.
    v0 = v0_frac * theta
    before = trace_of(currents, theta, v0)
    n = int(before.count)
    assume(n >= 1)
    shift = float(down_shift(before.fired_min, theta, eps_frac * theta))
    assert shift >= theta
    after = trace_of(currents, theta, v0 - shift)
    assert int(after.count) == n - 1


@settings(max_examples=500, deadline=None)
@given(dyadic_current_lists, dyadic(0.1, 3.0), dyadic(-1.5, 2.0), dyadic(1e-2, 0.996))
@example([1.5, -1.5, 1.71875], 1.71875, 0.0, 0.5)  # after the shift, m(3) lands exactly on θ
def test_theorem2_up_shift_adds_exactly_one_spike(currents, theta, v0_frac, eps_frac):
    v0 = v0_frac * theta
    before = trace_of(currents, theta, v0)
    n = int(before.count)
    assume(n < len(currents))  # a silent step exists
    shift = float(up_shift(before.silent_max, theta, eps_frac * theta))
    assert shift >= theta
    after = trace_of(currents, theta, v0 + shift)
    assert int(after.count) == n + 1


def test_shift_below_theta_only_moves_a_spike():
    """The max{θ, ·} in Theorem 2 is needed (docs/methods.md §4.4 example)."""
    before = trace_of([0.3] * 4, 1.0, 0.5)
    assert int(before.count) == 1
    assert int(trace_of([0.3] * 4, 1.0, 0.5 + 0.201).count) == 1
    full_shift = float(up_shift(before.silent_max, 1.0, 1e-3))
    assert int(trace_of([0.3] * 4, 1.0, 0.5 + full_shift).count) == 2


def _qcfs_desired(currents: list[float], theta: float) -> tuple[float, float]:
    """Desired count (a/θ·T) of a QCFS ANN with L = T fed the mean current, and u = Tz̄/θ + ½."""
    T = len(currents)
    u = T * (sum(currents) / T) / theta + 0.5
    return min(max(math.floor(u), 0), T), u


@settings(max_examples=500, deadline=None)
@given(current_lists, st.floats(0.2, 3.0))
def test_theorem1_sign_of_offset_from_residual_potential(currents, theta):
    T = len(currents)
    desired, u = _qcfs_desired(currents, theta)
    assume(abs(u - round(u)) > 1e-7)
    trace = trace_of(currents, theta, theta / 2)
    n, v = int(trace.count), float(trace.v[0])
    psi = desired - n
    sign = int(offset_sign(trace.v, trace.count, T, theta)[0])
    if n >= 1 and v < 0:  # (i) too many spikes
        assert psi < 0 and sign == -1
    if n < T and v >= theta:  # (ii) too few spikes
        assert psi > 0 and sign == 1
    if sign == 0:
        assert not (n >= 1 and v < 0) and not (n < T and v >= theta)
    if 0 <= math.floor(u) <= T:  # Theorem 3: the value of the offset (unclipped output)
        assert psi == math.floor(v / theta + 1e-12)


def test_calibration_fixes_a_known_offset():
    # mean current 0 ⇒ QCFS wants 0 spikes; the IF neuron fires once on the early burst.
    currents = torch.tensor([2.0, -2.0, 0.0, 0.0], dtype=torch.float64).view(4, 1)
    v0 = torch.tensor([0.5], dtype=torch.float64)
    assert int(integrate_and_fire(currents, 1.0, v0, 4, track_extrema=True).count) == 1
    cal = OffsetSpikeCalibration(rho=4)
    start = cal.initial_potential(currents, 1.0, v0, constant=False, reset="subtract")
    assert float(start) == pytest.approx(0.5 - 1.501)
    assert int(integrate_and_fire(currents, 1.0, start, 4, track_extrema=True).count) == 0
    light = OffsetSpikeCalibration(rho=4, variant="lightweight")
    assert float(light.initial_potential(currents, 1.0, v0, constant=False,
                                         reset="subtract")) == pytest.approx(-0.5)


def _trained_like_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model("fashion_cnn", 10, 1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(0.0, 0.4)
        if isinstance(m, QCFS):
            m.theta.data.uniform_(0.8, 1.6)
    return model.eval()


def test_zero_iterations_is_plain_qcfs():
    model = _trained_like_model()
    x = torch.randn(4, 1, 28, 28)
    qcfs = sb.simulate(sb.convert(model), x, 4, mode="layer")
    cos0 = sb.simulate(sb.convert(model, "cos", rho=4, iterations=0), x, 4)
    assert torch.equal(qcfs, cos0)


def test_rho_larger_than_T_and_one_run_for_every_T():
    model = _trained_like_model()
    snn = sb.convert(model, "cos", rho=6)
    x = torch.randn(3, 1, 28, 28)
    long = sb.simulate(snn, x, 8)
    assert torch.equal(sb.simulate(snn, x, 1), long[:1])
    assert torch.equal(sb.simulate(snn, x, 4), long[:4])


@pytest.mark.parametrize("steps", [2, 9])
def test_hybrid_execution_equals_layerwise(steps):
    """First ρ frames layer-wise, then step by step: the same bits as all layer-wise."""
    model = _trained_like_model(2)
    snn = sb.convert(model, "cos", rho=4, iterations=2)
    x = torch.randn(5, 1, 28, 28)
    assert torch.equal(sb.simulate(snn, x, steps, mode="hybrid"),
                       sb.simulate(snn, x, steps, mode="layer"))


def test_cos_reduces_offset_spikes_and_iterations_help():
    model = _trained_like_model(1)
    x = torch.randn(16, 1, 28, 28)
    y = torch.zeros(16, dtype=torch.long)
    ratios = {}
    for k in (0, 1, 3):
        snn = sb.convert(model, "qcfs") if k == 0 else sb.convert(model, "cos", rho=4,
                                                                    iterations=k)
        report = analyse_offsets(model, snn, [(x, y)], 4)
        ratios[k] = report.output_layer["ratio"]
        first = report.layers[list(report.layers)[0]]
        assert first["ratio"] == pytest.approx(1.0, abs=1e-3)  # constant input: exact (§3.5)
    assert ratios[1] > ratios[0] and ratios[3] >= ratios[1]  # more iterations never worse


def test_offset_analysis_of_a_batch_larger_than_a_simulation_chunk(monkeypatch):
    model = _trained_like_model(3)
    snn = sb.convert(model, "cos", rho=4)
    x = torch.randn(7, 1, 28, 28)
    whole, out_whole = offset_spikes(model, snn, x, 4)
    simulate_module = importlib.import_module("spikebridge.simulate")
    monkeypatch.setattr(simulate_module, "LAYER_MODE_FOLDED_BATCH", 8)  # chunks of 2 samples
    chunked, out_chunked = offset_spikes(model, snn, x, 4)
    assert torch.equal(out_whole, out_chunked)
    assert all(torch.equal(whole[name], chunked[name]) for name in whole)
    assert next(iter(whole.values())).shape[0] == 7


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rho": 0}, "rho"), ({"iterations": -1}, "iterations"), ({"variant": "x"}, "variant"),
    ({"epsilon": 0.0}, "epsilon"), ({"rho": 2.5}, "rho"),
])
def test_bad_cos_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sb.convert(_trained_like_model(), "cos", **kwargs)


def test_cos_needs_layer_mode_and_if_layers():
    snn = sb.convert(_trained_like_model(), "cos", rho=4)
    with pytest.raises(ValueError, match="layer-wise"):
        sb.simulate(snn, torch.randn(2, 1, 28, 28), 4, mode="step")
    neuron = next(iter(snn.neurons().values()))
    with pytest.raises(RuntimeError, match="start it in sequence"):
        neuron(torch.randn(2, 32, 14, 14))
    with pytest.raises(sb.UnsupportedLayerError, match="no activation layers"):
        sb.convert(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), "cos", rho=4)
    assert snn.method.total_steps(4) == 8
    assert sb.convert(_trained_like_model(), "cos", rho=4, iterations=3).method.total_steps(2) == 14


def test_offset_sign_contract_in_both_directions():
    """Theorem 1's preconditions are part of the rule: "too many" needs N >= 1 (a neuron that
    never fired cannot have fired too often, whatever v(ρ) < 0 says), "too few" needs N < ρ (a
    neuron that fired at every step cannot fire more, whatever v(ρ) >= θ says)."""
    rho, theta = 4, 1.0
    v = torch.tensor([-0.5, -0.5, 1.5, 1.5, 0.3, 1.0, -1e-9])
    n = torch.tensor([0.0, 1.0, 4.0, 3.0, 2.0, 0.0, 2.0])
    assert offset_sign(v, n, rho, theta).tolist() == [0, -1, 0, 1, 0, 1, -1]
