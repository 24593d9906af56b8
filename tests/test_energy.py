"""Operation and energy accounting (spikebridge.energy, docs/energy.md) against brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikebridge as sb
from spikebridge.activations import QCFS
from spikebridge.energy import (
    EnergyModel,
    OperationCounter,
    ann_operations,
    count_synaptic_operations,
    network_fanout,
    record_operations,
    synaptic_fanout,
)
from spikebridge.energy.connectivity import input_event_fanout
from spikebridge.models import create_model

# ---------------------------------------------------------------------------------------------
# brute force: loop over output positions, add 1 for every (spike, output) pair it reaches
# ---------------------------------------------------------------------------------------------


def _brute_conv_fanout(conv: nn.Conv2d, shape: tuple[int, int, int]) -> torch.Tensor:
    """Fan-out of each input element: loop over every output position and kernel tap."""
    c_in, h, w = shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (conv.kernel_size, conv.stride, conv.padding,
                                              conv.dilation)
    h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    per_group_in = c_in // conv.groups
    per_group_out = conv.out_channels // conv.groups
    fanout = torch.zeros(shape, dtype=torch.float64)
    for co, oh, ow in itertools.product(range(conv.out_channels), range(h_out), range(w_out)):
        group = co // per_group_out
        for ci, i, j in itertools.product(range(per_group_in), range(kh), range(kw)):
            ih, iw = oh * sh - ph + i * dh, ow * sw - pw + j * dw
            if 0 <= ih < h and 0 <= iw < w:
                fanout[group * per_group_in + ci, ih, iw] += 1
    return fanout


def _brute_pool_fanout(kernel: int, stride: int, padding: int,
                       shape: tuple[int, int, int]) -> torch.Tensor:
    """Fan-out of each input element of an average pool: the windows it lies in."""
    c, h, w = shape
    h_out = (h + 2 * padding - kernel) // stride + 1
    w_out = (w + 2 * padding - kernel) // stride + 1
    fanout = torch.zeros(shape, dtype=torch.float64)
    for oh, ow in itertools.product(range(h_out), range(w_out)):
        for i, j in itertools.product(range(kernel), range(kernel)):
            ih, iw = oh * stride - padding + i, ow * stride - padding + j
            if 0 <= ih < h and 0 <= iw < w:
                fanout[:, ih, iw] += 1
    return fanout


def _brute_count(spikes: torch.Tensor, fanout: torch.Tensor) -> int:
    """For every spike event (nonzero), add its fan-out — one event at a time."""
    total = 0
    flat_fanout = fanout.reshape(-1)
    for frame in spikes.reshape(-1, fanout.numel()):
        for index in frame.nonzero().flatten().tolist():
            total += int(flat_fanout[index])
    return total


def _random_spikes(shape, rate=0.3, value=1.7, signed=False, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = (torch.rand(shape, generator=g) < rate).float() * value
    if signed:
        s = s * torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)
    return s


@pytest.mark.parametrize(("stride", "padding", "groups", "dilation"),
                         [(1, 1, 1, 1), (2, 1, 1, 1), (2, 0, 2, 1), (1, 2, 2, 2), (3, 1, 4, 2)])
def test_conv_fanout_equals_brute_force(stride, padding, groups, dilation):
    shape = (4, 9, 8)
    conv = nn.Conv2d(4, 8, 3, stride=stride, padding=padding, groups=groups, dilation=dilation)
    fanout = synaptic_fanout(conv, shape)
    assert torch.equal(fanout.double(), _brute_conv_fanout(conv, shape))
    spikes = _random_spikes((3, 2, *shape), signed=True)  # [T, B, C, H, W], ±θ spikes
    assert count_synaptic_operations(spikes, fanout) == _brute_count(spikes, fanout)
    assert count_synaptic_operations(spikes, fanout) == _brute_count(
        spikes, _brute_conv_fanout(conv, shape))


def test_linear_fanout_is_d_out():
    linear = nn.Linear(12, 7)
    fanout = synaptic_fanout(linear, (12,))
    assert torch.equal(fanout, torch.full((12,), 7.0, dtype=fanout.dtype))
    spikes = _random_spikes((5, 3, 12))
    assert count_synaptic_operations(spikes, fanout) == int((spikes != 0).sum()) * 7


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_average_pool_fanout_equals_brute_force(kernel, stride, padding):
    shape = (2, 7, 6)
    pool = nn.AvgPool2d(kernel, stride, padding)
    fanout = synaptic_fanout(pool, shape)
    assert torch.equal(fanout.double(), _brute_pool_fanout(kernel, stride, padding, shape))


def test_pool_then_conv_folds_the_pool_into_the_conv_support():
    """A spike under a 2×2 pool reaches every output the pooled value reaches (§8.2)."""
    shape = (4, 8, 8)
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)
    fanout = synaptic_fanout(nn.Sequential(nn.AvgPool2d(2), conv), shape)
    pooled = _brute_conv_fanout(conv, (4, 4, 4))
    expected = pooled.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    assert torch.equal(fanout.double(), expected)
    spikes = _random_spikes((2, 3, *shape), seed=3)
    assert count_synaptic_operations(spikes, fanout) == _brute_count(spikes, expected)


def test_doubling_T_with_the_same_spike_pattern_doubles_the_count():
    fanout = synaptic_fanout(nn.Conv2d(3, 5, 3, stride=2, padding=1), (3, 6, 6))
    spikes = _random_spikes((4, 2, 3, 6, 6), seed=1)
    once = count_synaptic_operations(spikes, fanout)
    assert once > 0
    assert count_synaptic_operations(torch.cat([spikes, spikes]), fanout) == 2 * once
    assert count_synaptic_operations(torch.zeros_like(spikes), fanout) == 0


# ---------------------------------------------------------------------------------------------
# a small SNN: every count checked against spikes captured independently
# ---------------------------------------------------------------------------------------------


class _Net(nn.Module):
    """conv(stride 2) → IF → avgpool → conv(groups 2, dilation 2) → IF → flatten → linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.act1 = QCFS(levels=4, theta=1.0)
        self.pool = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2)
        self.act2 = QCFS(levels=4, theta=1.0)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(self.pool(x)))
        return self.fc(torch.flatten(x, 1))


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = _Net()
    for act in (net.act1, net.act2):
        act.theta.data.fill_(0.6)
    return net.eval()


SHAPE = (2, 16, 16)


def _independent_fanouts(net: _Net) -> dict[str, torch.Tensor]:
    """Per IF layer, fan-out from brute-force loops (no spikebridge.energy code)."""
    conv2 = _brute_conv_fanout(net.conv2, (4, 4, 4))
    act1 = conv2.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)  # 2×2 pool, 8×8 map
    act2 = torch.full((6, 4, 4), float(net.fc.out_features), dtype=torch.float64)
    return {"act1": act1, "act2": act2}


def _captured_spikes(snn, x, steps, mode, input="constant"):
    store: dict[str, list] = {}
    handles = [n.register_forward_hook(lambda _m, _a, out, name=name: store.setdefault(
        name, []).append(out.clone())) for name, n in snn.neurons().items()]
    try:
        sb.simulate(snn, x, steps, mode=mode, input=input)
    finally:
        for h in handles:
            h.remove()
    batch = x.shape[1] if input == "sequence" else x.shape[0]
    return {k: torch.cat(v).view(-1, batch, *v[0].shape[1:]) for k, v in store.items()}


@pytest.mark.parametrize("mode", ["step", "layer"])
def test_network_sops_equal_brute_force_from_captured_spikes(mode):
    net = _net()
    snn = sb.convert(net)
    x = torch.rand(3, *SHAPE) * 2
    steps = 6
    fanouts = _independent_fanouts(net)
    found = network_fanout(snn, SHAPE)
    for name, expected in fanouts.items():
        assert torch.equal(found[name].double(), expected)
    spikes = _captured_spikes(snn, x, steps, mode)
    result = sb.evaluate(snn, [(x, torch.zeros(3, dtype=torch.long))], [2, steps], mode=mode)
    ops = result.operations
    for t in (2, steps):
        brute = sum(_brute_count(spikes[name][:t], fanouts[name]) for name in fanouts)
        assert ops.per_T[t]["snn_sops"] == pytest.approx(brute / 3, abs=1e-9)
        events = sum(int((spikes[name][:t] != 0).sum()) for name in fanouts)
        assert ops.per_T[t]["spikes"] == pytest.approx(events / 3)
        for name in fanouts:
            layer = ops.layers[name][str(t)]
            assert layer["sops_out"] == pytest.approx(
                _brute_count(spikes[name][:t], fanouts[name]) / 3)
            n = fanouts[name].numel()
            assert layer["firing_rate"] == pytest.approx(
                int((spikes[name][:t] != 0).sum()) / (3 * n * t))
    assert sum(ops.per_step[:steps]) == pytest.approx(ops.per_T[steps]["snn_sops"])
    assert ops.layers["output"][str(steps)]["sops_in"] == pytest.approx(
        _brute_count(spikes["act2"], fanouts["act2"]) / 3)


def test_first_layer_macs_energy_and_conventions():
    net = _net()
    snn = sb.convert(net)
    x = torch.rand(2, *SHAPE)
    batches = [(x, torch.zeros(2, dtype=torch.long))]
    first = 4 * 8 * 8 * 2 * 9  # conv1: C_out·H_out·W_out · C_in·k² (runs in the prefix)
    ann = first + 4 * 8 * 8 + 6 * 4 * 4 * 2 * 9 + 96 * 5  # + pool (k² per output) + conv2 + fc
    once = sb.evaluate(snn, batches, [4]).operations.per_T[4]
    assert once["snn_first_layer_macs"] == first
    assert once["ann_macs"] == ann
    assert once["energy_pj"]["ann"] == pytest.approx(4.6 * ann)
    assert once["energy_pj"]["snn"] == pytest.approx(4.6 * first + 0.9 * once["snn_sops"])
    assert once["ratio"] == pytest.approx(once["energy_pj"]["snn"] / once["energy_pj"]["ann"])
    assert once["sops_per_mac"] == pytest.approx(once["snn_sops"] / ann)
    model = EnergyModel(mac_pj=3.2, ac_pj=0.1, first_layer="every_step")
    every = sb.evaluate(snn, batches, [4], energy=model).operations.per_T[4]
    assert every["snn_first_layer_macs"] == 4 * first
    assert every["energy_pj"]["snn"] == pytest.approx(3.2 * 4 * first + 0.1 * every["snn_sops"])
    assert sb.evaluate(snn, batches, [4], count_operations=False).operations is None
    with pytest.raises(ValueError, match="first_layer"):
        EnergyModel(first_layer="sometimes")


def test_zero_spikes_give_zero_synaptic_operations():
    net = _net()
    for conv in (net.conv1, net.conv2):
        nn.init.zeros_(conv.bias)
    snn = sb.convert(net)  # zero input, no bias: zero current, v(0) = θ/2 never reaches θ
    result = sb.evaluate(snn, [(torch.zeros(2, *SHAPE), torch.zeros(2, dtype=torch.long))],
                         [1, 8])
    for t in (1, 8):
        ops = result.operations.per_T[t]
        assert ops["snn_sops"] == 0 and ops["spikes"] == 0 and ops["firing_rate"] == 0
        assert ops["snn_first_layer_macs"] > 0


def test_doubling_T_doubles_the_count_of_a_periodic_network():
    """Constant current θ from v(0) = θ/2: a spike at every step, so SOPs(2T) = 2·SOPs(T)."""
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, bias=False), QCFS(levels=4, theta=1.0),
                        nn.Flatten(), nn.Linear(3 * 5 * 5, 4)).eval()
    nn.init.zeros_(net[0].weight)
    with torch.no_grad():
        net[0].weight[:, 0, 1, 1] = 1.0  # current = the input pixel
    snn = sb.convert(net)
    x = torch.ones(2, 1, 5, 5)
    ops = sb.evaluate(snn, [(x, torch.zeros(2, dtype=torch.long))], [4, 8]).operations.per_T
    assert ops[4]["snn_sops"] == 3 * 25 * 4 * 4  # every neuron fires every step, fan-out 4
    assert ops[8]["snn_sops"] == 2 * ops[4]["snn_sops"]


def test_cos_presimulation_is_counted_per_pass():
    """Each of the ``iterations`` passes re-delivers the first ρ frames into every IF layer."""
    net = _net(1)
    x = torch.rand(3, *SHAPE) * 2
    fanouts = _independent_fanouts(net)
    for iterations in (1, 2):
        snn = sb.convert(net, "cos", rho=3, iterations=iterations)
        spikes = _captured_spikes(snn, x, 5, "layer")
        ops = sb.evaluate(snn, [(x, torch.zeros(3, dtype=torch.long))], [1, 5],
                          mode="layer").operations
        # spikes of act1 over frames 1..ρ reach act2 (calibrating); act2's reach only the output
        into_act2 = _brute_count(spikes["act1"][:3], fanouts["act1"]) / 3
        assert ops.per_T[5]["snn_sops_presimulation"] == pytest.approx(iterations * into_act2)
        assert ops.per_T[1]["snn_sops_presimulation"] == pytest.approx(iterations * into_act2)
        # T = 1 < ρ: act2 still needs frames 1..ρ of act1; the output only frame 1
        inference_1 = into_act2 + _brute_count(spikes["act2"][:1], fanouts["act2"]) / 3
        assert ops.per_T[1]["snn_sops_inference"] == pytest.approx(inference_1)
        total_5 = sum(_brute_count(spikes[n][:5], fanouts[n]) for n in fanouts) / 3
        assert ops.per_T[5]["snn_sops_inference"] == pytest.approx(total_5)


def test_signed_spikes_count_one_operation_each():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Hardtanh(-1.0, 1.0), nn.Flatten(),
                        nn.Linear(2 * 6 * 6, 3)).eval()
    snn = sb.convert(net, "strelu")
    x = torch.randn(4, 1, 6, 6) * 3
    spikes = _captured_spikes(snn, x, 5, "step")
    (name, s), = spikes.items()
    assert bool((s < 0).any()) and bool((s > 0).any())
    ops = sb.evaluate(snn, [(x, torch.zeros(4, dtype=torch.long))], [5]).operations
    assert ops.per_T[5]["snn_sops"] == pytest.approx(int((s != 0).sum()) * 3 / 4)
    assert ops.layers[name]["5"]["negative_spikes"] == pytest.approx(int((s < 0).sum()) / 4)


def test_graded_outputs_are_refused_not_counted_as_binary():
    snn = sb.convert(_net())
    neuron = next(iter(snn.neurons().values()))
    handle = neuron.register_forward_hook(lambda _m, _a, out: out * 2)  # a "2-spike" value
    counter = OperationCounter(snn)
    x = torch.rand(2, *SHAPE) * 2
    try:
        with pytest.raises(ValueError, match="not single spikes"):
            with record_operations(counter, x, 3):
                sb.simulate(snn, x, 3, mode="step")
    finally:
        handle.remove()
    assert not neuron._forward_hooks  # the counter's hook was removed despite the error


class _Residual(nn.Module):
    """IF → conv → (+ identity shortcut) → IF: a spike also reaches the neuron behind the add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.act1 = QCFS(levels=4, theta=1.0)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=1, padding=1)
        self.act2 = QCFS(levels=4, theta=1.0)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(x) + x)
        return self.fc(torch.flatten(x, 1))


def test_residual_shortcut_adds_one_accumulate_per_spike():
    torch.manual_seed(0)
    net = _Residual().eval()
    snn = sb.convert(net)
    fanout = network_fanout(snn, (2, 6, 6))
    assert torch.equal(fanout["act1"].double(), _brute_conv_fanout(net.conv2, (4, 6, 6)) + 1)
    assert torch.equal(fanout["act2"], torch.full_like(fanout["act2"], 3.0))


def test_horizon_dependent_methods_count_each_T_from_its_own_run():
    """ECC (TRE current ηθ/T): one run per T, each counted on its own."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(3 * 5 * 5, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    x = torch.rand(4, 1, 5, 5)
    snn = sb.convert(net, "ecc", calibration_data=[(x, None)])
    assert snn.horizon_dependent()
    ops = sb.evaluate(snn, [(x, torch.zeros(4, dtype=torch.long))], [3, 7]).operations
    for t in (3, 7):
        spikes = _captured_spikes(snn, x, t, "step")
        fan = network_fanout(snn, (1, 5, 5))
        brute = sum(_brute_count(spikes[name], fan[name]) for name in spikes) / 4
        assert ops.per_T[t]["snn_sops"] == pytest.approx(brute)


# ---------------------------------------------------------------------------------------------
# event input (input="sequence"): the first layer charged per input event
# ---------------------------------------------------------------------------------------------


def _event_frames(frames: int, batch: int, seed: int = 0, shape=SHAPE) -> torch.Tensor:
    """Event-count frames [T, B, C, H, W]: sparse counts 0-3 (what ToFrames gives)."""
    g = torch.Generator().manual_seed(seed)
    full = (frames, batch, *shape)
    return ((torch.rand(full, generator=g) < 0.3) * torch.randint(1, 4, full, generator=g)
            ).float()


def _brute_event_count(frames: torch.Tensor, fanout: torch.Tensor) -> int:
    """One input element at a time: a count k at element j is k events of fan-out(j) each."""
    total = 0
    flat = fanout.reshape(-1)
    for frame in frames.reshape(-1, fanout.numel()):
        for index in frame.nonzero().flatten().tolist():
            total += int(frame[index]) * int(flat[index])
    return total


def _first_layer_net(first: nn.Module, features: int) -> nn.Module:
    return nn.Sequential(first, QCFS(levels=4, theta=1.0), nn.Flatten(),
                         nn.Linear(features, 3)).eval()


@pytest.mark.parametrize(("stride", "padding", "groups", "dilation"),
                         [(1, 1, 1, 1), (2, 1, 1, 1), (2, 0, 2, 1), (1, 2, 2, 2), (3, 1, 4, 2)])
def test_input_event_fanout_equals_the_conv_geometry(stride, padding, groups, dilation):
    shape = (4, 9, 8)
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, stride=stride, padding=padding, groups=groups, dilation=dilation)
    out = conv(torch.zeros(1, *shape))
    snn = sb.convert(_first_layer_net(conv, out[0].numel()))
    fanout = input_event_fanout(snn, shape)
    assert fanout.targets == ["1"] and fanout.first_layers and fanout.analog_macs == 0
    assert torch.equal(fanout.matrix[:, 0].view(shape), _brute_conv_fanout(conv, shape))
    assert fanout.bias_elements == out[0].numel()


def test_input_event_fanout_folds_a_pool_and_leaves_later_analog_layers_to_macs():
    shape = (4, 8, 8)
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)
    pooled = input_event_fanout(sb.convert(_first_layer_net(
        nn.Sequential(nn.AvgPool2d(2), conv), 6 * 4 * 4)), shape)
    expected = _brute_conv_fanout(conv, (4, 4, 4)).repeat_interleave(2, 1).repeat_interleave(2, 2)
    assert torch.equal(pooled.matrix[:, 0].view(shape), expected) and pooled.analog_macs == 0
    # conv → conv → IF: events reach the first conv only; the second computes on analog values
    second = nn.Conv2d(6, 2, 3, padding=1, bias=False)
    chained = input_event_fanout(sb.convert(_first_layer_net(
        nn.Sequential(conv, second), 2 * 8 * 8)), shape)
    assert torch.equal(chained.matrix[:, 0].view(shape), _brute_conv_fanout(conv, shape))
    assert chained.analog_macs == 2 * 8 * 8 * 6 * 9  # C_out·H·W · C_in·k²
    snn = sb.convert(_first_layer_net(nn.Sequential(conv, second), 2 * 8 * 8))
    frames = _event_frames(3, 2, shape=shape)
    ops = sb.evaluate(snn, [(frames, torch.zeros(2, dtype=torch.long))], [3],
                      input="sequence").operations.per_T[3]
    assert ops["snn_first_layer_macs"] == 3 * chained.analog_macs  # at every frame
    assert ops["snn_sops_input"] == pytest.approx(
        _brute_event_count(frames, _brute_conv_fanout(conv, shape)) / 2)


@pytest.mark.parametrize("mode", ["step", "layer"])
def test_event_input_sops_equal_brute_force(mode):
    """SOPs = input events × their fan-out (first layer, padding included) + IF spikes × theirs;
    no first-layer MACs; the first conv's bias is one accumulate per output per frame."""
    net = _net()
    snn = sb.convert(net)
    frames = _event_frames(6, 3, seed=2)
    first = _brute_conv_fanout(net.conv1, SHAPE)  # conv1: stride 2, padding 1
    fanouts = _independent_fanouts(net)
    spikes = _captured_spikes(snn, frames, None, mode, input="sequence")
    ops = sb.evaluate(snn, [(frames, torch.zeros(3, dtype=torch.long))], [2, 6], mode=mode,
                      input="sequence").operations
    for t in (2, 6):
        into_first = _brute_event_count(frames[:t], first)
        from_neurons = sum(_brute_count(spikes[name][:t], fanouts[name]) for name in fanouts)
        totals = ops.per_T[t]
        assert totals["snn_sops_input"] == pytest.approx(into_first / 3, abs=1e-9)
        assert totals["snn_sops"] == pytest.approx((into_first + from_neurons) / 3, abs=1e-9)
        assert totals["input_events"] == pytest.approx(float(frames[:t].sum()) / 3)
        assert totals["snn_first_layer_macs"] == 0
        assert totals["energy_pj"]["snn"] == pytest.approx(0.9 * totals["snn_sops"])
        assert totals["bias_acs"] == t * (4 * 8 * 8 + 6 * 4 * 4 + 5)  # conv1, conv2, fc
        assert ops.layers["act1"][str(t)]["sops_in"] == pytest.approx(into_first / 3)
    assert sum(ops.per_step) == pytest.approx(ops.per_T[6]["snn_sops"])
    assert ops.conventions["first_layer"] == "per_event" and "input event" in ops.conventions[
        "input"]


def test_cos_presimulation_re_delivers_the_input_events_of_the_first_rho_frames():
    net = _net(1)
    frames = _event_frames(5, 3, seed=3)
    first = _brute_conv_fanout(net.conv1, SHAPE)
    fanouts = _independent_fanouts(net)
    for iterations in (1, 2):
        snn = sb.convert(net, "cos", rho=3, iterations=iterations)
        spikes = _captured_spikes(snn, frames, None, "layer", input="sequence")
        ops = sb.evaluate(snn, [(frames, torch.zeros(3, dtype=torch.long))], [1, 5],
                          mode="layer", input="sequence").operations
        into_act1 = _brute_event_count(frames[:3], first) / 3  # act1 calibrates on frames 1..ρ
        into_act2 = _brute_count(spikes["act1"][:3], fanouts["act1"]) / 3
        for t in (1, 5):
            assert ops.per_T[t]["snn_sops_presimulation"] == pytest.approx(
                iterations * (into_act1 + into_act2))
        # T = 1 < ρ: act1 still reads the input events of frames 1..ρ
        assert ops.per_T[1]["snn_sops_input"] == pytest.approx((1 + iterations) * into_act1)


def test_normalized_event_frames_are_counted_with_their_event_value():
    """ToFrames(normalization=n) frames: a value k/n is k events (event_value = 1/n)."""
    net = _net()
    snn = sb.convert(net)
    counts = _event_frames(4, 3, seed=5)
    n = 255.0 / 4  # the registry's frames: counts / (count_scale / T)
    frames = counts / n
    labels = torch.zeros(3, dtype=torch.long)
    ops = sb.evaluate(snn, [(frames, labels)], [4], input="sequence",
                      event_value=1 / n).operations.per_T[4]
    assert ops["input_events"] == pytest.approx(float(counts.sum()) / 3)
    assert ops["snn_sops_input"] == pytest.approx(
        _brute_event_count(counts, _brute_conv_fanout(net.conv1, SHAPE)) / 3)
    with pytest.raises(ValueError, match="not whole numbers of events of value event_value = 1"):
        sb.evaluate(snn, [(frames, labels)], [4], input="sequence")
    with pytest.raises(ValueError, match="event_value .* must be a finite number > 0"):
        OperationCounter(snn, event_value=0.0)


def test_event_input_counting_refuses_frames_that_are_not_event_counts():
    snn = sb.convert(_net())
    labels = torch.zeros(2, dtype=torch.long)
    for bad in (_event_frames(3, 2) + 0.5, _event_frames(3, 2) - 1.0):
        with pytest.raises(ValueError, match="not whole numbers of events"):
            sb.evaluate(snn, [(bad, labels)], [3], input="sequence")
        assert sb.evaluate(snn, [(bad, labels)], [3], input="sequence",
                           count_operations=False).operations is None
    counter = OperationCounter(snn)
    counter.begin(torch.rand(2, *SHAPE), 3)
    with pytest.raises(ValueError, match="counted constant input"):
        counter.begin(_event_frames(3, 2), 3, input="sequence")


# ---------------------------------------------------------------------------------------------
# ANN MACs
# ---------------------------------------------------------------------------------------------


def test_ann_macs_of_a_small_net_by_hand():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4), nn.ReLU(), nn.AvgPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )
    cost = ann_operations(net, (3, 16, 16))
    conv1 = 8 * 8 * 8 * 3 * 25
    conv2 = 8 * 8 * 8 * 2 * 9
    assert cost.by_kind() == {"conv": conv1 + conv2, "batchnorm": 8 * 8 * 8,
                              "avgpool": 8 * 4 * 4 * 4 + 8 * 16, "linear": 80}
    assert cost.total == sum(cost.by_kind().values())


def test_published_cifar_mac_counts(monkeypatch):
    """VGG-16 (CIFAR): 313 M MACs in its convolutions; ResNet-18 (CIFAR): 0.56 G MACs."""
    from spikebridge.models import resnet, vgg

    for module in (vgg, resnet):  # weights do not matter: skip the initialisation (speed)
        monkeypatch.setattr(module, "init_conv_bn", lambda model: None)
    vgg = ann_operations(create_model("vgg16", 10, 3), (3, 32, 32)).by_kind()
    plan = [(3, 64, 32), (64, 64, 32), (64, 128, 16), (128, 128, 16), (128, 256, 8),
            (256, 256, 8), (256, 256, 8), (256, 512, 4), (512, 512, 4), (512, 512, 4),
            (512, 512, 2), (512, 512, 2), (512, 512, 2)]
    assert vgg["conv"] == sum(ci * co * 9 * s * s for ci, co, s in plan) == 313_196_544
    assert vgg["linear"] == 512 * 4096 + 4096 * 4096 + 4096 * 10  # our 4096-4096 classifier
    resnet = ann_operations(create_model("resnet18", 10, 3), (3, 32, 32)).by_kind()
    convs = 3 * 64 * 9 * 32 * 32 + 4 * 64 * 64 * 9 * 32 * 32  # stem, stage 1
    for c_in, c, s in ((64, 128, 16), (128, 256, 8), (256, 512, 4)):
        convs += c_in * c * 9 * s * s + 3 * c * c * 9 * s * s + c_in * c * s * s  # + 1×1 shortcut
    assert resnet["conv"] == convs == 555_417_600
    assert resnet["conv"] + resnet["linear"] == pytest.approx(0.56e9, rel=0.01)  # "0.56 G"


def test_snn_graph_macs_equal_the_bn_folded_ann():
    net = _net()
    snn = sb.convert(net)
    assert ann_operations(snn, SHAPE).total == ann_operations(net, SHAPE).total
    assert math.isclose(ann_operations(net, SHAPE).by_kind()["conv"],
                        4 * 8 * 8 * 2 * 9 + 6 * 4 * 4 * 2 * 9)


# ---------------------------------------------------------------------------------------------
# spiking max-pooling: a gate that relays spikes (issue #18)
# ---------------------------------------------------------------------------------------------


class _MaxPoolNet(nn.Module):
    """conv → IF → max-pool 2×2 → conv → IF → max-pool (3, stride 2, padding 1) → linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.act1 = QCFS(levels=4, theta=0.6)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.act2 = QCFS(levels=4, theta=0.6)
        self.pool2 = nn.MaxPool2d(3, stride=2, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x)))
        return self.fc(x.flatten(1))


def _captured_outputs(snn, x, steps, mode, layers):
    store: dict[str, list] = {}
    handles = [snn.network.get_submodule(name).register_forward_hook(
        lambda _m, _a, out, name=name: store.setdefault(name, []).append(out.clone()))
        for name in layers]
    try:
        sb.simulate(snn, x, steps, mode=mode)
    finally:
        for h in handles:
            h.remove()
    return {k: torch.cat(v).view(-1, x.shape[0], *v[0].shape[1:]) for k, v in store.items()}


@pytest.mark.parametrize("mode", ["step", "layer"])
def test_spiking_max_pools_relay_events_that_cost_the_next_layers_fanout(mode):
    """SOPs = the pools' output events × the next layer's brute-force fan-out (the spikes into
    a pool are gated, not accumulated); spikes and firing rates count the IF neurons only."""
    torch.manual_seed(0)
    net = _MaxPoolNet().eval()
    snn = sb.convert(net, "qcfs")
    x = torch.rand(3, *SHAPE) * 2
    steps = 5
    fanouts = {"pool1": _brute_conv_fanout(net.conv2, (4, 8, 8)),
               "pool2": torch.full((6, 4, 4), 5.0, dtype=torch.float64)}
    found = network_fanout(snn, SHAPE)
    for name, expected in fanouts.items():
        assert torch.equal(found[name].double(), expected)
    assert not found["act1"].any() and not found["act2"].any()  # their spikes reach only gates
    out = _captured_outputs(snn, x, steps, mode, ["act1", "act2", "pool1", "pool2"])
    result = sb.evaluate(snn, [(x, torch.zeros(3, dtype=torch.long))], [2, steps], mode=mode)
    ops = result.operations
    for t in (2, steps):
        brute = sum(_brute_count(out[name][:t], fanouts[name]) for name in fanouts)
        assert brute > 0
        assert ops.per_T[t]["snn_sops"] == pytest.approx(brute / 3, abs=1e-9)
        neuron_spikes = sum(int((out[name][:t] != 0).sum()) for name in ("act1", "act2"))
        assert ops.per_T[t]["spikes"] == pytest.approx(neuron_spikes / 3)
        assert ops.layers["pool1"][str(t)]["relayed_spikes"] == pytest.approx(
            int((out["pool1"][:t] != 0).sum()) / 3)
        assert ops.layers["act1"][str(t)]["firing_rate"] == pytest.approx(
            int((out["act1"][:t] != 0).sum()) / (3 * 4 * 16 * 16 * t))


def test_a_max_pool_of_graded_values_is_not_counted_as_events():
    class _PoolOfCurrents(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.act1 = nn.Conv2d(1, 2, 3, padding=1), QCFS(levels=4, theta=1.0)
            self.conv2, self.act2 = nn.Conv2d(2, 2, 3, padding=1), QCFS(levels=4, theta=1.0)
            self.fc = nn.Linear(2 * 4 * 4, 3)

        def forward(self, x):
            x = F.max_pool2d(self.conv2(self.act1(self.conv1(x))), 2)  # pools currents
            return self.fc(self.act2(x).flatten(1))

    snn = sb.convert(_PoolOfCurrents().eval(), "qcfs")
    with pytest.raises(NotImplementedError, match="does not pool an IF layer's spikes"):
        network_fanout(snn, (1, 8, 8))


def test_a_max_pool_of_event_frames_is_refused_with_what_to_do():
    """Event input through a max-pool before the first synaptic layer: the pool's outputs are
    per-frame maxima of counts, not events; counting refuses (a ValueError: the CLI's exit 2)
    instead of miscounting, and says how to evaluate without counting."""
    from spikebridge.calibration import CalibrationData
    from spikebridge.energy.connectivity import UncountableError

    torch.manual_seed(0)
    net = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 3)).eval()
    frames = (torch.rand(4, 8, 2, 8, 8) < 0.2).float()
    snn = sb.convert(net, "maxnorm", calibration_data=CalibrationData([(frames.mean(0), None)], 8))
    labels = torch.zeros(8, dtype=torch.long)
    with pytest.raises(UncountableError, match="max-pool.*--no-energy") as caught:
        sb.evaluate(snn, [(frames, labels)], 4, input="sequence")
    assert isinstance(caught.value, ValueError)
    result = sb.evaluate(snn, [(frames, labels)], 4, input="sequence", count_operations=False)
    assert result.operations is None
