"""IF neuron: rate identity (§2.4), constant-input closed form (§2.5), step == sequence."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from spikebridge.neurons import IFNeuron, integrate_and_fire, sequence_mode

currents_st = st.lists(st.floats(-3.0, 3.0, allow_nan=False), min_size=1, max_size=40)
theta_st = st.floats(0.05, 4.0)


def run(currents: list[float], theta: float, v0: float, reset: str = "subtract"):
    c = torch.tensor(currents, dtype=torch.float64).view(-1, 1)
    return integrate_and_fire(c, theta, torch.tensor([v0], dtype=torch.float64), len(currents),
                              reset=reset)


@settings(max_examples=300, deadline=None)
@given(currents_st, theta_st, st.floats(-2.0, 2.0))
def test_rate_identity(currents, theta, v0_frac):
    """φ(T) = mean current − (v(T) − v(0))/T exactly, for any input order (docs/methods.md §2.4)."""
    v0 = v0_frac * theta
    trace = run(currents, theta, v0)
    T = len(currents)
    phi = float(trace.output.sum()) / T
    expected = sum(currents) / T - (float(trace.v[0]) - v0) / T
    assert phi == pytest.approx(expected, abs=1e-9)
    assert set(trace.output.flatten().tolist()) <= {0.0, theta}


@settings(max_examples=300, deadline=None)
@given(st.floats(-2.0, 6.0), theta_st, st.floats(0.0, 0.999), st.integers(1, 64))
def test_constant_input_closed_form(c, theta, v0_frac, T):
    """N(T) = clip(⌊(Tc + v(0))/θ⌋, 0, T) for constant input and 0 ≤ v(0) < θ (§2.5)."""
    v0 = v0_frac * theta
    exact = (T * c + v0) / theta
    assume(abs(exact - round(exact)) > 1e-6)  # float rounding decides exact ties
    trace = run([c] * T, theta, v0)
    count = round(float(trace.output.sum()) / theta)
    assert count == min(max(math.floor(exact), 0), T)


def test_fires_at_equality_and_hard_reset_discards_overshoot():
    trace = run([1.0, 1.5, 0.2], 1.0, 0.0, reset="zero")
    assert trace.output.flatten().tolist() == [1.0, 1.0, 0.0]
    assert float(trace.v[0]) == pytest.approx(0.2)  # overshoot 0.5 at t=2 discarded
    soft = run([1.0, 1.5, 0.2], 1.0, 0.0)
    assert float(soft.v[0]) == pytest.approx(0.7)


def test_step_mode_equals_sequence_mode_bitwise():
    torch.manual_seed(0)
    T, B = 7, 5
    currents = torch.randn(T, B, 3, 4, 4)
    neuron = IFNeuron(0.8, initial_fraction=0.5)
    stepped = []
    for t in range(T):
        stepped.append(neuron(currents[t]))
    neuron.reset_state()
    with sequence_mode(T, B):
        folded = neuron(currents.reshape(T * B, 3, 4, 4)).view(T, B, 3, 4, 4)
    assert torch.equal(torch.stack(stepped), folded)


def test_constant_current_in_sequence_mode_equals_repeated_frames():
    torch.manual_seed(1)
    c = torch.randn(4, 6)
    neuron = IFNeuron(0.5)
    with sequence_mode(5, 4):
        constant = neuron(c)
        repeated = neuron(c.repeat(5, 1))
    assert torch.equal(constant, repeated)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_threshold_must_be_positive_and_finite(bad):
    with pytest.raises(ValueError, match="threshold"):
        IFNeuron(bad)


def test_steps_must_be_positive():
    with pytest.raises(ValueError, match="time-steps"):
        integrate_and_fire(torch.zeros(1, 1), 1.0, torch.zeros(1), 0)


def test_sequence_mode_rejects_wrong_batch():
    neuron = IFNeuron(1.0)
    with sequence_mode(3, 4), pytest.raises(RuntimeError, match="expected 4"):
        neuron(torch.zeros(5, 2))
