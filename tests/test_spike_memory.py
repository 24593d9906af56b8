"""Signed neurons with memory (docs/methods.md §2.7; ``convert(..., neuron="memory")``).

Oracles: the count equation ``N(t) = max(0, ⌊(v(0) + Σ_{τ≤t} c(τ))/θ⌋)`` at every step while
``|c| ≤ θ`` (hypothesis, exact dyadic currents), hence independence of the input's order; a
hand-worked ON-then-OFF example where the plain IF neuron keeps its spikes; step == layer ==
hybrid to the last bit; save/load bit-identical; operation counting against captured spikes;
refusals that name the neuron and the reason.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sequence_input import _Tiny
from torch import nn

import spikebridge as sb
from spikebridge.activations import QCFS, SlipReLU
from spikebridge.calibration import CalibrationData
from spikebridge.neurons import IFNeuron, integrate_and_fire, memory_refusal, sequence_mode

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _count_equation(currents: torch.Tensor, v0: torch.Tensor, theta: float) -> torch.Tensor:
    """``max(0, ⌊(v(0) + S_t)/θ⌋)`` for every t: what a memory neuron's net count must be."""
    return torch.clamp(torch.floor((v0 + currents.cumsum(0)) / theta), min=0)


@settings(max_examples=60, deadline=None)
@given(steps=st.integers(1, 24), phi=st.sampled_from([0.0, 0.25, 0.5, 0.75]),
       theta=st.sampled_from([0.5, 1.0, 2.0]), seed=st.integers(0, 2**16),
       amplitude=st.sampled_from([None, 1.0]))
def test_property_net_count_follows_the_running_sum(steps, phi, theta, seed, amplitude):
    """While |c(t)| <= θ the net count is the floor of the running sum, never below 0, and
    v(t) stays in [0, θ) whenever the count is positive (§2.7)."""
    g = torch.Generator().manual_seed(seed)
    # multiples of θ/16 in [-θ, θ]: every sum is exact in float32, so floor() is exact too
    currents = torch.randint(-16, 17, (steps, 3, 50), generator=g).float() * (theta / 16)
    v0 = torch.full((3, 50), phi * theta)
    expect = _count_equation(currents, v0, theta)
    neuron = IFNeuron(theta, initial_fraction=phi, memory=True, amplitude=amplitude)
    counts, value = [], neuron.spike_value()
    for t in range(steps):
        x = neuron(currents[t])
        assert set(torch.unique(x).tolist()) <= {-value, 0.0, value}
        counts.append(neuron.net_count.clone())
        positive = neuron.net_count > 0
        assert bool((neuron.v[positive] >= 0).all()) and bool((neuron.v[positive] < theta).all())
    assert torch.equal(torch.stack(counts), expect)
    assert bool((torch.stack(counts) >= 0).all())


@settings(max_examples=30, deadline=None)
@given(steps=st.integers(2, 24), seed=st.integers(0, 2**16))
def test_property_the_final_count_does_not_depend_on_the_order(steps, seed):
    g = torch.Generator().manual_seed(seed)
    currents = torch.randint(-8, 9, (steps, 200), generator=g).float() / 8
    order = torch.randperm(steps, generator=g)
    runs = []
    for c in (currents, currents[order]):
        memory = torch.zeros(200)
        integrate_and_fire(c, 1.0, torch.full((200,), 0.5), steps, memory=memory,
                           record_output=False)
        runs.append(memory)
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(runs[0], _count_equation(currents, torch.full((200,), 0.5), 1.0)[-1])


def test_on_then_off_input_is_taken_back_where_a_plain_neuron_keeps_its_spikes():
    """+θ for 4 steps, then -θ for 4: the sum is 0, so the ANN (ReLU of the mean) says 0."""
    currents = torch.tensor([1.0] * 4 + [-1.0] * 4).view(8, 1)
    plain = integrate_and_fire(currents, 1.0, torch.zeros(1), 8, track_count=True)
    memory = torch.zeros(1)
    signed = integrate_and_fire(currents, 1.0, torch.zeros(1), 8, memory=memory,
                                track_count=True)
    assert plain.count.item() == 4  # the unevenness error of §3.4
    assert signed.count.item() == 0 and memory.item() == 0
    assert signed.output.flatten().tolist() == [1.0] * 4 + [-1.0] * 4
    # it never goes below zero: negative current with nothing to take back stays silent, and
    # the potential it leaves is made up first (OFF then ON also sums to 0)
    again = integrate_and_fire(-currents, 1.0, torch.zeros(1), 8, memory=torch.zeros(1))
    assert again.output.flatten().tolist() == [0.0] * 8


def test_step_and_sequence_mode_bit_identical_and_reset_forgets_the_count():
    g = torch.Generator().manual_seed(3)
    currents = torch.randn(10, 4, 30, generator=g)
    a, b = IFNeuron(0.7, memory=True), IFNeuron(0.7, memory=True)
    with sequence_mode(10, 4):
        folded = a(currents.view(40, 30)).view(10, 4, 30)
    stepped = torch.stack([b(currents[t]) for t in range(10)])
    assert torch.equal(folded, stepped) and torch.equal(a.v, b.v)
    assert torch.equal(a.net_count, b.net_count) and bool((a.net_count >= 0).all())
    b.reset_state()
    assert b.v is None and b.net_count is None
    assert torch.equal(torch.stack([b(currents[t]) for t in range(10)]), stepped)


_Net = _Tiny  # conv → act → avgpool → conv → act → linear, 2×8×8 input


def _frames(frames: int = 6, batch: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (frames, batch, 2, 8, 8)
    return ((torch.rand(shape, generator=g) < 0.3) * torch.randint(1, 4, shape, generator=g)
            ).float()


def _snn(method: str, neuron: str = "memory", frames: torch.Tensor | None = None):
    torch.manual_seed(0)
    kind = nn.ReLU if method in ("ecc", "maxnorm", "robustnorm", "threshold-balancing") else (
        (lambda: SlipReLU(levels=4, theta=1.0)) if method == "slip"
        else (lambda: QCFS(levels=4, theta=1.0)))
    model = _Net(kind).eval()
    with torch.no_grad():
        model.conv1.weight.mul_(2.0)
    calibration = None
    if method in ("ecc", "maxnorm", "robustnorm", "threshold-balancing", "cos-frozen"):
        calibration = CalibrationData([(_frames(seed=9) if frames is None else frames, None)],
                                      samples=None, input="sequence")
    params = {"rho": 2} if method == "cos-frozen" else {}
    return sb.convert(model, method, calibration_data=calibration, neuron=neuron, **params)


@pytest.mark.parametrize("method", ["qcfs", "ecc", "maxnorm", "slip", "cos-frozen"])
def test_every_mode_gives_the_same_bits_with_memory_neurons(method):
    snn = _snn(method)
    assert all(n.memory and n.signed for n in snn.neurons().values())
    x = _frames()
    outputs = [sb.simulate(snn, x, input="sequence", mode=mode)
               for mode in ("step", "layer", "hybrid")]
    assert outputs[0].abs().sum() > 0
    for other in outputs[1:]:
        assert torch.equal(other, outputs[0])


def test_memory_neurons_remove_the_order_effect_on_a_network():
    """Each recording's frames, reversed in time, give the same final output with memory
    neurons (every per-step current within ±θ here, checked); the plain network's changes."""
    x = _frames(frames=8, batch=4) * 0.15
    outputs, peak = {}, []

    def record_peak(module, inputs):
        peak.append(float(inputs[0].abs().max() / module.threshold))

    for neuron in ("if", "memory"):
        snn = _snn("qcfs", neuron)
        hooks = [n.register_forward_pre_hook(record_peak) for n in snn.neurons().values()]
        forward = sb.simulate(snn, x, input="sequence", mode="step").sum(0)
        backward = sb.simulate(snn, x.flip(0).contiguous(), input="sequence",
                               mode="step").sum(0)
        for h in hooks:
            h.remove()
        assert max(peak) <= 1.0  # the count equation's condition (§2.7)
        outputs[neuron] = (forward, backward)
    assert torch.allclose(*outputs["memory"], atol=1e-4)
    assert not torch.allclose(*outputs["if"], atol=1e-4)


def test_save_and_load_keep_the_memory_neurons(tmp_path):
    snn = _snn("qcfs")
    x = _frames()
    sb.save_snn(snn, tmp_path / "snn")
    loaded = sb.load_snn(tmp_path / "snn")
    assert all(n.memory for n in loaded.neurons().values())
    assert torch.equal(sb.simulate(loaded, x, input="sequence", mode="step"),
                       sb.simulate(snn, x, input="sequence", mode="step"))


def test_nir_export_refuses_memory_neurons_with_the_fix(tmp_path):
    pytest.importorskip("nir")
    from spikebridge.nir_export import NirExportError

    with pytest.raises(NirExportError, match="signed neuron with memory.*--neuron if"):
        sb.write_nir(_snn("qcfs"), tmp_path / "net.nir")
    assert not (tmp_path / "net.nir").exists()


def test_negative_spikes_are_counted_as_operations():
    snn = _snn("ecc")
    x = _frames(frames=8, batch=4)
    captured: dict[str, list[torch.Tensor]] = {}
    hooks = [n.register_forward_hook(lambda _m, _a, out, name=name:
                                     captured.setdefault(name, []).append(out.clone()))
             for name, n in snn.neurons().items()]
    try:
        sb.simulate(snn, x, input="sequence", mode="step")
    finally:
        for h in hooks:
            h.remove()
    spikes = {name: torch.stack(v) for name, v in captured.items()}
    assert any(bool((s < 0).any()) for s in spikes.values())  # memory neurons took spikes back
    ops = sb.evaluate(snn, [(x, torch.zeros(4, dtype=torch.long))], [8], input="sequence",
                      mode="step").operations
    for name, s in spikes.items():
        assert ops.layers[name]["8"]["negative_spikes"] == pytest.approx(
            int((s < 0).sum()) / 4)
    fc_in = snn.network.fc.in_features
    act2 = spikes["act2"]
    # act2 feeds only the classifier: each event, positive or negative, reaches 5 outputs
    assert act2.shape[-3:].numel() == fc_in
    assert ops.layers["act2"]["8"]["sops_out"] == pytest.approx(int((act2 != 0).sum()) * 5 / 4)


@pytest.mark.parametrize(("method", "reason"), [
    ("cos", "calibrates its initial potential"),
    ("threshold-balancing", "resets to zero"),
    ("strelu", "already emits negative spikes"),
])
def test_methods_whose_neurons_cannot_have_memory_are_refused_by_name(method, reason):
    from spikebridge.activations import SymmetricThresholdReLU

    torch.manual_seed(0)
    if method == "strelu":
        model = _Net(lambda: SymmetricThresholdReLU(theta=1.0)).eval()
    elif method == "threshold-balancing":
        model = _Net(nn.ReLU).eval()
    else:
        model = _Net(lambda: QCFS(levels=4, theta=1.0)).eval()
    calibration = (CalibrationData([(_frames(), None)], samples=None, input="sequence")
                   if method == "threshold-balancing" else None)
    params = {"balance_steps": 4} if method == "threshold-balancing" else {}
    with pytest.raises(ValueError, match=rf"{method}.*act1 {reason}"):
        sb.convert(model, method, calibration_data=calibration, neuron="memory", **params)


def test_bad_neuron_names_and_direct_refusals():
    model = _Net(lambda: QCFS(levels=4, theta=1.0)).eval()
    with pytest.raises(ValueError, match=r"neuron must be one of \('if', 'memory'\)"):
        sb.convert(model, "qcfs", neuron="signed")
    with pytest.raises(ValueError, match="resets to zero"):
        IFNeuron(1.0, reset="zero", memory=True)
    assert memory_refusal(IFNeuron(1.0)) is None
    with pytest.raises(ValueError, match="resets by subtraction"):
        integrate_and_fire(torch.zeros(2, 3), 1.0, torch.zeros(3), 2, reset="zero",
                           memory=torch.zeros(3))
    with pytest.raises(ValueError, match="COS"):
        integrate_and_fire(torch.zeros(2, 3), 1.0, torch.zeros(3), 2, track_extrema=True,
                           memory=torch.zeros(3))
    assert "memory" in repr(IFNeuron(1.0, memory=True))
    assert math.isclose(IFNeuron(2.0, memory=True).negative_spike_value(), 2.0)
    assert IFNeuron(2.0).negative_spike_value() is None
