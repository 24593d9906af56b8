"""Offset-spike statistics (docs/methods.md §4.1, §4.8) on hand-made ψ and hand-computed traces.

Each expected value below is worked out by hand in the comments, so a statistic computed a
different way (a looser "exact" tolerance, MSE as mean |ψ|, spikes counted over every simulated
frame instead of the first T) fails here.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import spikebridge as sb
from spikebridge.activations import QCFS
from spikebridge.analysis import LayerOffsets, analyse_offsets, offset_spikes
from spikebridge.methods.cos import OffsetSpikeCalibration
from spikebridge.neurons import integrate_and_fire

PSI = [0.0, 0.005, -0.009, 0.011, 0.5, 1.0, -1.0, -2.0, 1.009, 7.0]


def test_ratio_counts_only_offsets_below_a_hundredth_of_a_spike():
    stats = LayerOffsets()
    stats.add(torch.tensor(PSI[:4]))  # accumulated over two batches
    stats.add(torch.tensor(PSI[4:]).view(2, 3))
    summary = stats.summary(steps=4)
    # |ψ| < 0.01: 0.0, 0.005, -0.009 (not 0.011; 1.009 is one spike off)
    assert stats.matches == 3
    assert summary["ratio"] == pytest.approx(3 / 10)
    assert summary["neurons"] == 10


def test_mse_is_the_mean_squared_offset_and_the_rate_mse_divides_by_t_squared():
    stats = LayerOffsets()
    stats.add(torch.tensor(PSI, dtype=torch.float64))
    summary = stats.summary(steps=4)
    mean_square = sum(v * v for v in PSI) / len(PSI)  # 5.268..., while mean |ψ| = 1.2533
    assert summary["mse_count"] == pytest.approx(mean_square, rel=1e-12)
    assert summary["mse_count"] != pytest.approx(sum(abs(v) for v in PSI) / len(PSI))
    assert summary["mse_rate"] == pytest.approx(mean_square / 16, rel=1e-12)


def test_distribution_rounds_to_whole_spikes_and_clamps_the_tails():
    stats = LayerOffsets()
    stats.add(torch.tensor(PSI))
    dist = stats.summary(steps=4)["distribution"]
    # rounding half to even: 0.5 → 0; 1.009 → 1; 7 is counted in the +5 end bin
    assert dist["0"] == pytest.approx(5 / 10)
    assert dist["1"] == pytest.approx(2 / 10)
    assert dist["-1"] == pytest.approx(1 / 10) and dist["-2"] == pytest.approx(1 / 10)
    assert dist["5"] == pytest.approx(1 / 10)
    assert sum(dist.values()) == pytest.approx(1.0)


def _three_neuron_model() -> nn.Module:
    """x = 1 → constant currents 0.25, 0.625, 0.875 into a QCFS layer with L = 2, θ = 1."""
    first = nn.Linear(1, 3, bias=False)
    last = nn.Linear(3, 2)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[0.25], [0.625], [0.875]]))
        last.weight.fill_(1.0)
        last.bias.zero_()
    return nn.Sequential(nn.Flatten(), first, QCFS(levels=2, theta=1.0), last).eval()


# Hand-computed, θ = 1, v(0) = 0.5, soft reset, spikes per frame t = 1..6:
#   current 0.25  : . s . . . s        ANN a = 0.5  (⌊0.25·2 + 0.5⌋ = 1 level of 2)
#   current 0.625 : s . s s . s        ANN a = 0.5  (⌊1.25 + 0.5⌋ = 1)
#   current 0.875 : s s s s . s        ANN a = 1.0  (⌊1.75 + 0.5⌋ = 2)
# ψ(T) = a·T − (spikes in frames 1..T):
EXPECTED_PSI = {
    2: [0.0, 0.0, 0.0],    # over all 6 frames it would read 1−2, 1−4, 2−5
    3: [0.5, -0.5, 0.0],   # 1.5−1, 1.5−2, 3−3
    6: [1.0, -1.0, 1.0],   # 3−2, 3−4, 6−5
}


@pytest.mark.parametrize("steps", sorted(EXPECTED_PSI))
def test_offsets_count_the_first_t_frames_when_rho_is_longer(steps):
    """COS with ρ = 6 simulates 6 frames for T = 2 or 3; ψ must use the first T of them. (The
    constant first-layer currents leave v(ρ) in [0, θ): COS shifts nothing, so the frames are
    the plain IF trace above.)"""
    model = _three_neuron_model()
    x = torch.ones(1, 1)
    for snn in (sb.convert(model, "cos", rho=6), sb.convert(model, "qcfs")):
        assert snn.frames_needed(steps) == (6 if snn.method.name == "cos" else steps)
        offsets, outputs = offset_spikes(model, snn, x, steps)
        (psi,) = offsets.values()
        assert psi.flatten().tolist() == pytest.approx(EXPECTED_PSI[steps], abs=1e-6)
        assert outputs.shape == (steps, 1, 2)
        report = analyse_offsets(model, snn, [(x, torch.zeros(1, dtype=torch.long))], steps)
        exact = sum(abs(v) < 0.01 for v in EXPECTED_PSI[steps]) / 3
        assert report.output_layer["ratio"] == pytest.approx(exact)
        mse = sum(v * v for v in EXPECTED_PSI[steps]) / 3
        assert report.output_layer["mse_count"] == pytest.approx(mse, abs=1e-6)


# --------------------------------------------------------------------------------------------
# the up-shift needs a silent pre-simulation step (Theorem 1(ii)); the released code's rule
# "shift up whenever v(ρ) >= θ" gives a neuron that fired at every step a ≈1000θ (here: inf)
# start, and it then fires at every later step whatever its input.


def _calibrated_count(frames: list[float], rho: int, iterations: int) -> tuple[float, int]:
    currents = torch.tensor(frames, dtype=torch.float64).view(-1, 1)
    v0 = torch.tensor([0.5], dtype=torch.float64)
    cal = OffsetSpikeCalibration(rho=rho, iterations=iterations)
    start = cal.initial_potential(currents, 1.0, v0, constant=False, reset="subtract")
    count = integrate_and_fire(currents, 1.0, start, len(frames), track_count=True).count
    return float(start), int(count)


def test_no_up_shift_for_a_neuron_that_fired_at_every_presimulation_step():
    # v: 3.5→2.5, 5.5→4.5, 7.5→6.5, 9.5→8.5 (4 of 4 fire, v(ρ) = 8.5 >= θ); then the input
    # drops: 5.5→4.5 s, 1.5→0.5 s, −2.5, −5.5: 6 spikes from the unshifted start 0.5.
    start, count = _calibrated_count([3, 3, 3, 3, -3, -3, -3, -3], rho=4, iterations=1)
    assert start == 0.5
    assert count == 6


def test_second_iteration_stops_once_the_neuron_fires_at_every_step():
    # first pre-simulation: 0.125 (silent), then 3 spikes, v(ρ) = 6.125 >= 2θ, so iteration 1
    # raises v(0) by max(θ, θ − 0.125 + ε) = θ → 1.5, after which all 4 pre-simulation steps
    # fire: iteration 2 has no silent step to work with and must not shift again.
    start, count = _calibrated_count([-0.375, 3, 3, 3, -3, -3, -3, -3], rho=4, iterations=2)
    assert start == 1.5
    # from 1.5: 1.125 s, 3.125 s, 5.125 s, 7.125 s, 3.125 s, −0.875, −3.875, −6.875
    assert count == 5
