"""Spiking max-pooling (issue "Your own model", part 2): the gate by accumulated input
(spikebridge.spiking_maxpool) against a pure-Python oracle, its rate guarantee on regular spike
trains, its over-count bound on analog inputs, step = layer = hybrid bit for bit, the reset
between batches, and a converted CNN with max-pooling approaching its ANN as T grows."""

from __future__ import annotations

import copy
import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import spikebridge as sb
from spikebridge.activations import QCFS, ClippedReLU
from spikebridge.neurons import sequence_mode
from spikebridge.nir_export import NirExportError, export_nir
from spikebridge.spiking_maxpool import SpikingMaxPool2d
from spikebridge.tracing import set_module

pytestmark = pytest.mark.usefixtures("single_torch_thread")

# (kernel_size, stride, padding, dilation, ceil_mode)
WINDOWS = [
    (2, None, 0, 1, False),
    (3, 2, 1, 1, True),
    (3, 1, 1, 1, False),
    ((2, 3), (1, 2), (1, 0), 1, True),
    (2, 1, 0, 2, False),
    (3, 2, 1, (1, 2), True),
]


def _run_steps(pool: SpikingMaxPool2d, frames: torch.Tensor) -> torch.Tensor:
    pool.reset_state()
    return torch.stack([pool(frame) for frame in frames])


def _run_layer(pool: SpikingMaxPool2d, frames: torch.Tensor) -> torch.Tensor:
    pool.reset_state()
    steps, batch = frames.shape[:2]
    with sequence_mode(steps, batch):
        out = pool(frames.reshape(steps * batch, *frames.shape[2:]))
    return out.view(steps, batch, *out.shape[1:])


# ------------------------------------------------------------------ the gate, against an oracle

def _size(n: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    span = n + 2 * p - d * (k - 1) - 1
    out = (math.ceil(span / s) if ceil else math.floor(span / s)) + 1
    return out - 1 if ceil and (out - 1) * s >= n + p else out


def _oracle(frames: list, kernel, stride, padding, dilation, ceil_mode) -> list:
    """Brute force, one window at a time: S_i(t) = Σ x_i; the incumbent keeps ties, a new
    winner is the first maximum in row-major window order; padding never wins; y = x_winner."""
    def two(v):
        return (v, v) if isinstance(v, int) else tuple(v)

    (kh, kw), (ph, pw), (dh, dw) = two(kernel), two(padding), two(dilation)
    sh, sw = (kh, kw) if stride is None else two(stride)
    batch, channels, height, width = (len(frames[0]), len(frames[0][0]), len(frames[0][0][0]),
                                      len(frames[0][0][0][0]))
    out_h, out_w = _size(height, kh, sh, ph, dh, ceil_mode), _size(width, kw, sw, pw, dw, ceil_mode)
    total = [[[[0.0] * width for _ in range(height)] for _ in range(channels)]
             for _ in range(batch)]
    winner: dict = {}
    result = []
    for x in frames:
        for b in range(batch):
            for c in range(channels):
                for i in range(height):
                    for j in range(width):
                        total[b][c][i][j] += x[b][c][i][j]
        y = [[[[0.0] * out_w for _ in range(out_h)] for _ in range(channels)]
             for _ in range(batch)]
        for b in range(batch):
            for c in range(channels):
                for oh in range(out_h):
                    for ow in range(out_w):
                        cells = [(oh * sh - ph + ki * dh, ow * sw - pw + kj * dw)
                                 for ki in range(kh) for kj in range(kw)]
                        values = [total[b][c][i][j] if 0 <= i < height and 0 <= j < width
                                  else -math.inf for i, j in cells]
                        best = max(values)
                        held = winner.get((b, c, oh, ow))
                        chosen = held if held is not None and values[held] == best else (
                            values.index(best))
                        winner[(b, c, oh, ow)] = chosen
                        i, j = cells[chosen]
                        y[b][c][oh][ow] = x[b][c][i][j]
        result.append(y)
    return result


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("kind", ["spikes", "integers"])
def test_gate_matches_the_brute_force_oracle(window, kind):
    generator = torch.Generator().manual_seed(2 * WINDOWS.index(window) + (kind == "spikes"))
    shape = (7, 2, 2, 5, 6)  # [T, B, C, H, W]
    if kind == "spikes":  # an IF layer's weighted spikes θ·s: many ties
        frames = (torch.rand(shape, generator=generator) < 0.4).double() * 0.75
    else:  # currents (a conv of spikes), small integers: ties, negative values, exact sums
        frames = torch.randint(-2, 4, shape, generator=generator).double()
    expected = torch.tensor(_oracle(frames.tolist(), *window), dtype=torch.float64)
    got = _run_steps(SpikingMaxPool2d(*window), frames)
    assert torch.equal(got, expected)
    # channels_last, as the simulator lays out CPU tensors: the same ties, the same winners
    wide = torch.cat([frames] * 2, dim=2)  # [T, B, 2C, H, W]: channels_last needs C > 1
    last = [f.contiguous(memory_format=torch.channels_last) for f in wide]
    assert not last[0].is_contiguous()
    pool = SpikingMaxPool2d(*window)
    got_last = torch.stack([pool(f) for f in last])
    assert torch.equal(got_last, torch.cat([expected] * 2, dim=2))


@pytest.mark.parametrize("window", WINDOWS)
def test_first_step_is_plain_max_pooling_and_padding_never_wins(window):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 7, 9) - 5.0  # all negative: a padded zero would win, -inf does not
    assert torch.equal(SpikingMaxPool2d(*window)(x), F.max_pool2d(x, *window))


def test_incumbent_keeps_a_tie_so_anti_phase_trains_are_not_or_ed():
    """Two neurons at rate ½ in anti-phase. The OR (per-step max) has rate 1; "lowest index wins
    ties" too (the late starter overtakes at every tie and passes its spike); keeping the
    incumbent gives the true maximum, ½."""
    steps = 40
    second = torch.tensor([float(t % 2 == 0) for t in range(steps)])  # fires at t = 1, 3, ...
    first = 1.0 - second  # fires at t = 2, 4, ...: index 0, behind at every odd step
    frames = torch.stack([first, second], dim=-1).view(steps, 1, 1, 1, 2)
    out = _run_steps(SpikingMaxPool2d((1, 2)), frames).flatten()
    assert out.sum() == steps / 2
    assert F.max_pool2d(frames.view(steps, 1, 1, 2), (1, 2)).sum() == steps  # the OR


# ------------------------------------------------------------------ rates and the error bound

@st.composite
def _regular_trains(draw):
    height, width = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    denominator = draw(st.integers(1, 12))
    rates = [Fraction(draw(st.integers(0, denominator)), denominator)
             for _ in range(height * width)]
    phases = [Fraction(draw(st.integers(0, 7)), 8) for _ in rates]
    return height, width, rates, phases


@settings(max_examples=60, deadline=None)
@given(_regular_trains(), st.sampled_from([1.0, 0.37, 2.5]))
def test_output_count_is_the_largest_input_count_and_the_rate_within_one_over_t(trains, theta):
    r"""Regular trains n_i(t) = ⌊r_i t + φ_i⌋ (φ_i ∈ [0, 1)), weighted spikes θ s. Proved in the
    module docstring: for spikes of one amplitude the output count is max_i n_i(t) at every t,
    hence |N(t)/t − max_i r_i| ≤ max_i |n_i(t)/t − r_i| < 1/t."""
    height, width, rates, phases = trains
    steps = 48
    counts = [[math.floor(r * t + p) for r, p in zip(rates, phases, strict=True)]
              for t in range(steps + 1)]
    spikes = torch.tensor([[counts[t][i] - counts[t - 1][i] for i in range(len(rates))]
                           for t in range(1, steps + 1)], dtype=torch.float32)
    frames = (spikes * theta).view(steps, 1, 1, height, width)
    out = _run_steps(SpikingMaxPool2d((height, width)), frames).flatten().double()
    emitted = torch.round(out.cumsum(0) / theta)
    for t in range(1, steps + 1):
        assert emitted[t - 1] == max(counts[t])  # exact: no over-count for binary spikes
        assert abs(Fraction(int(emitted[t - 1]), t) - max(rates)) < Fraction(1, t)


def test_over_count_only_at_switches_and_bounded_by_the_jump():
    r"""Analog inputs: N(t) ≥ M(t) = max_i S_i(t) always, and N(t) − M(t) ≤ Σ over the steps
    where the winner switched of (x_new − x_old) (module docstring)."""
    generator = torch.Generator().manual_seed(3)
    steps = 30
    frames = torch.randint(-2, 4, (steps, 4, 3, 2, 2), generator=generator).double()
    pool = SpikingMaxPool2d(2)
    emitted = torch.zeros(4, 3, dtype=torch.float64)
    bound = torch.zeros(4, 3, dtype=torch.float64)
    previous = None
    overcounted = False
    for t in range(steps):
        x = frames[t].flatten(2)  # one window per (b, c): its 4 inputs
        emitted += pool(frames[t]).view(4, 3)
        winner = pool.winner.view(4, 3)
        if previous is not None:
            switched = winner != previous
            jump = x.gather(-1, winner.unsqueeze(-1)) - x.gather(-1, previous.unsqueeze(-1))
            bound += torch.where(switched, jump.squeeze(-1), 0.0)
        previous = winner.clone()
        best = frames[: t + 1].sum(0).flatten(2).amax(-1)
        excess = emitted - best
        assert (excess >= 0).all() and (excess <= bound).all()
        overcounted |= bool((excess > 0).any())
    assert overcounted  # analog inputs do get over-counted: the bound is not vacuous


# ------------------------------------------------------------------ execution modes and reset

@pytest.mark.parametrize("window", WINDOWS)
def test_step_layer_and_hybrid_are_bit_identical(window):
    generator = torch.Generator().manual_seed(1)
    frames = (torch.rand(9, 3, 4, 8, 7, generator=generator) < 0.3).float() * 0.61
    pool = SpikingMaxPool2d(*window)
    stepped = _run_steps(pool, frames)
    assert torch.equal(_run_layer(pool, frames), stepped)
    pool.reset_state()  # hybrid: 4 frames layer-wise, then step by step from that state
    with sequence_mode(4, 3):
        head = pool(frames[:4].reshape(12, *frames.shape[2:])).view(4, 3, *stepped.shape[2:])
    tail = torch.stack([pool(frame) for frame in frames[4:]])
    assert torch.equal(torch.cat([head, tail]), stepped)
    channels_last = frames.flatten(0, 1).contiguous(memory_format=torch.channels_last)
    assert torch.equal(_run_layer(pool, channels_last.view(frames.shape)), stepped)


class _PoolNet(nn.Module):
    """Every kind of max-pool placement the converter handles."""

    def __init__(self) -> None:
        super().__init__()
        self.c0, self.p0 = nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2, ceil_mode=True)
        self.a0, self.c1, self.a1 = QCFS(4, 1.0), nn.Conv2d(4, 6, 3, padding=1), QCFS(4, 1.0)
        self.pool = nn.MaxPool2d(2)  # shared: called twice
        self.c2, self.a2 = nn.Conv2d(6, 6, 3, padding=1), QCFS(4, 1.0)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = self.a0(self.p0(self.c0(x)))  # max-pool of the constant input: stays exact
        x = self.pool(self.a1(self.c1(x)))  # max-pool of spikes
        x = F.max_pool2d(self.a2(self.c2(x)), 3, stride=1, padding=1)
        x = torch.max_pool2d(x, (1, 2), (1, 1), 0, (1, 1), True)
        return self.fc(self.pool(x).mean((2, 3)))


def _pool_net() -> nn.Module:
    torch.manual_seed(0)
    net = _PoolNet().eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.mul_(2.0)
                module.bias.add_(0.2)
    return net


def test_converter_places_spiking_pools_only_where_the_input_spikes():
    snn = sb.convert(_pool_net(), "qcfs", input_shape=(1, 13, 13))
    pools = {name: type(m).__name__ for name, m in snn.network.named_modules()
             if isinstance(m, nn.MaxPool2d | SpikingMaxPool2d)}
    assert pools["p0"] == "MaxPool2d"
    assert sorted(n for n, kind in pools.items() if kind == "SpikingMaxPool2d") == [
        "max_pool2d", "max_pool2d_1", "pool_call", "pool_call2"]
    assert any(isinstance(m, nn.MaxPool2d) for m in snn.split.prefix.modules())
    assert not any(isinstance(m, SpikingMaxPool2d) for m in snn.split.prefix.modules())
    tail = snn.network.get_submodule("max_pool2d_1")
    assert (tail.kernel_size, tail.stride, tail.ceil_mode) == ((1, 2), (1, 1), True)
    assert sb.check_convertible(_pool_net()) == []


@pytest.mark.parametrize("method", ["qcfs", "cos"])
def test_converted_network_step_layer_hybrid_bit_identical(method):
    snn = sb.convert(_pool_net(), method, input_shape=(1, 13, 13))
    x = torch.rand(5, 1, 13, 13)
    layered = sb.simulate(snn, x, 7, mode="layer")
    assert torch.equal(sb.simulate(snn, x, 7, mode="hybrid"), layered)
    if method == "qcfs":
        assert torch.equal(sb.simulate(snn, x, 7, mode="step"), layered)
    assert layered.abs().sum() > 0


def test_pool_state_is_reset_between_batches(monkeypatch):
    net = _pool_net()
    first, second = torch.rand(4, 1, 13, 13) * 3, torch.rand(4, 1, 13, 13)
    snn = sb.convert(net, "qcfs")
    fresh = copy.deepcopy(snn)
    sb.simulate(snn, first, 6, mode="step")
    assert torch.equal(sb.simulate(snn, second, 6, mode="step"), sb.simulate(fresh, second, 6))
    snn.reset_state()
    assert all(m.accumulated is None and m.winner is None for m in snn.network.modules()
               if isinstance(m, SpikingMaxPool2d))
    # the check can fail: pools that the network does not reset carry the first batch's counts
    monkeypatch.setattr(SpikingMaxPool2d, "reset_state", lambda self: None)
    leaky = sb.convert(net, "qcfs")
    sb.simulate(leaky, first, 6, mode="step")
    assert not torch.equal(sb.simulate(leaky, second, 6, mode="step"),
                           sb.simulate(fresh, second, 6))


def test_return_indices_and_other_max_pools_are_refused_clearly():
    class Indices(nn.Module):
        def __init__(self, functional: bool) -> None:
            super().__init__()
            self.conv, self.act, self.functional = nn.Conv2d(1, 2, 3), QCFS(), functional
            self.pool = nn.MaxPool2d(2, return_indices=True)

        def forward(self, x):
            x = self.act(self.conv(x))
            pooled = F.max_pool2d(x, 2, return_indices=True) if self.functional else self.pool(x)
            return pooled[0].flatten(1)

    for functional in (False, True):
        with pytest.raises(sb.UnsupportedLayerError, match="return_indices=True"):
            sb.convert(Indices(functional))
        (problem,) = sb.check_convertible(Indices(functional))
        assert "return_indices" in problem.why
    model = nn.Sequential(nn.Conv2d(1, 2, 3), QCFS(), nn.AdaptiveMaxPool2d(2), nn.Flatten())
    with pytest.raises(sb.UnsupportedLayerError, match="AdaptiveMaxPool2d.*maxpool='avg'"):
        sb.convert(model)


# ------------------------------------------------------------------ to_qcfs(maxpool=...)

class _UserNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool = nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.pool(F.relu(self.conv(x)))
        return self.fc(F.max_pool2d(F.relu(x), 2, padding=1).mean((2, 3)))


def test_to_qcfs_keeps_max_pooling_by_default_and_swaps_it_for_average_on_request():
    data = [torch.rand(16, 1, 10, 10)]
    kept = sb.to_qcfs(_UserNet(), 4, data=data)
    assert isinstance(kept.pool, nn.MaxPool2d)
    assert any(n.target is F.max_pool2d for n in kept.graph.nodes)
    assert sum(isinstance(m, SpikingMaxPool2d)
               for m in sb.convert(kept.eval()).network.modules()) == 2
    assert isinstance(sb.to_qcfs(_UserNet(), 4, data=data, maxpool=None).pool, nn.MaxPool2d)
    swapped = sb.to_qcfs(_UserNet(), 4, data=data, maxpool="avg")
    averages = [m for m in swapped.modules() if isinstance(m, nn.AvgPool2d)]
    assert len(averages) == 2 and not any(n.op == "call_function" and "max_pool" in str(n.target)
                                          for n in swapped.graph.nodes)
    assert not any(isinstance(m, nn.MaxPool2d) for m in swapped.modules())
    first = swapped.pool
    assert (first.kernel_size, first.stride, first.padding, first.ceil_mode,
            first.count_include_pad) == (3, 2, 1, True, False)
    x = torch.rand(2, 4, 5, 5)  # padding is left out of the average, as out of the max
    assert torch.allclose(first(x)[..., 0, 0], x[..., :2, :2].mean((-2, -1)))
    with pytest.raises(ValueError, match=r"maxpool must be one of \('keep', 'avg'\)"):
        sb.to_qcfs(_UserNet(), 4, data=data, maxpool="max")


# ------------------------------------------------------------------ a converted CNN over T

def test_converted_cnn_with_max_pooling_approaches_its_ann_as_t_grows():
    """Clipped-ReLU CNN with two max-pools after IF layers: the SNN's mean output approaches the
    ANN's (relative error falls ~1/T) and its predictions agree. The same SNN with an ungated
    max-pool of each step's spikes (their OR) stays far off."""
    torch.manual_seed(0)
    ann = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), ClippedReLU(1.0), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), ClippedReLU(1.0), nn.MaxPool2d(2, stride=1, padding=1),
        nn.Flatten(), nn.Linear(8 * 7 * 7, 10)).eval()
    with torch.no_grad():
        for module in ann:
            if isinstance(module, nn.Conv2d):
                module.weight.mul_(2.0)
                module.bias.add_(0.2)
    x = torch.rand(16, 1, 12, 12)
    with torch.no_grad():
        target = ann(x)
    snn = sb.convert(ann, "qcfs")
    ungated = copy.deepcopy(snn)
    for name, module in list(ungated.network.named_modules()):
        if isinstance(module, SpikingMaxPool2d):
            set_module(ungated.network, name,
                       nn.MaxPool2d(module.kernel_size, module.stride, module.padding))
    ungated.replace_network(ungated.network)
    steps = 128

    def errors(network):
        mean = sb.simulate(network, x, steps, mode="step").cumsum(0) / torch.arange(
            1, steps + 1).view(-1, 1, 1)
        error = {t: float((mean[t - 1] - target).abs().mean() / target.abs().mean())
                 for t in (8, 32, 128)}
        return error, float((mean[-1].argmax(-1) == target.argmax(-1)).float().mean())

    error, agreement = errors(snn)
    assert error[8] > error[32] > error[128]
    assert error[128] < error[8] / 4 and error[128] < 0.02
    assert agreement >= 0.9
    ungated_error, _ = errors(ungated)
    assert ungated_error[128] > 5 * error[128]


@pytest.mark.parametrize("method", ["qcfs", "cos"])
def test_a_saved_snn_with_max_pools_loads_back_bit_for_bit(method, tmp_path):
    """Spiking pools (module, reused module, F.max_pool2d) and a plain one on the constant input
    survive save_snn/load_snn; the loaded network resets their state between batches too."""
    net = _pool_net()
    first, second = torch.rand(4, 1, 13, 13) * 3, torch.rand(4, 1, 13, 13)
    snn = sb.convert(net, method, input_shape=(1, 13, 13))
    sb.save_snn(snn, tmp_path / "snn")
    loaded = sb.load_snn(tmp_path / "snn")
    kinds = sorted(type(m).__name__ for m in loaded.network.modules()
                   if isinstance(m, nn.MaxPool2d | SpikingMaxPool2d))
    assert kinds == ["MaxPool2d"] + ["SpikingMaxPool2d"] * 4
    for batch in (first, second):  # the second batch must not see the first one's counts
        assert torch.equal(sb.simulate(loaded, batch, 6), sb.simulate(snn, batch, 6))


def test_nir_export_refuses_max_pooling_and_says_what_to_do():
    snn = sb.convert(_pool_net(), "qcfs", input_shape=(1, 13, 13))
    with pytest.raises(NirExportError, match=r"no max-pooling node.*maxpool='avg'"):
        export_nir(snn)
