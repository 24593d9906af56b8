"""The fused IF kernel gives the eager reference's bits (docs/methods.md §2.1)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spikebridge as sb
from spikebridge import if_kernel, neurons
from spikebridge.if_kernel import fused_if_step_, fused_presimulation, kernel_available
from spikebridge.methods import cos
from spikebridge.methods.cos import OffsetSpikeCalibration, offset_sign
from spikebridge.neurons import IFNeuron, integrate_and_fire, reference_if_step_

needs_kernel = pytest.mark.skipif(not kernel_available(),
                                  reason=f"fused kernel unavailable: {if_kernel.kernel_status()}")


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bit patterns (so that -0.0 and +0.0, or two NaNs, are told apart)."""
    return t.view(torch.int32 if t.dtype == torch.float32 else torch.int64)


def _inputs(seed: int, shape, dtype, theta: float, channels_last: bool):
    """Random potentials and currents, with many sums landing exactly on θ (and next to it)."""
    g = torch.Generator().manual_seed(seed)
    theta_t = torch.tensor(theta, dtype=dtype)  # θ as the kernel and ATen see it
    v = (torch.rand(shape, generator=g, dtype=dtype) * 3 - 1) * theta_t
    c = torch.randn(shape, generator=g, dtype=dtype) * theta_t
    pick = torch.randint(0, 6, shape, generator=g)
    half = theta_t / 2  # exact: v = θ/2, c = θ/2 gives m = θ exactly
    v = torch.where(pick == 0, half, v)
    c = torch.where(pick == 0, half, c)
    v = torch.where(pick == 1, torch.zeros((), dtype=dtype), v)  # m = 0 + θ = θ
    c = torch.where(pick == 1, theta_t, c)
    below = torch.nextafter(theta_t, torch.tensor(-float("inf"), dtype=dtype))
    c = torch.where(pick == 2, below, c)  # m = 0 + (θ - ulp): silent
    v = torch.where(pick == 2, torch.zeros((), dtype=dtype), v)
    v = torch.where(pick == 3, -torch.zeros((), dtype=dtype), v)  # signed zeros
    c = torch.where(pick == 3, -torch.zeros((), dtype=dtype), c)
    if channels_last:
        v, c = (t.contiguous(memory_format=torch.channels_last) for t in (v, c))
    return v, c


@needs_kernel
@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    theta=st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False),
    amplitude=st.sampled_from([None, 1.0, 0.37]),
    extra=st.sampled_from([0.0, 0.013, 1e-8]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    channels_last=st.booleans(),
    steps=st.integers(1, 5),
    batch=st.integers(1, 9),
)
def test_fused_step_is_bit_identical_to_the_eager_reference(
    seed, theta, amplitude, extra, dtype, channels_last, steps, batch
):
    shape = (batch, 3, 5, 7)
    v_ref, c = _inputs(seed, shape, dtype, theta, channels_last)
    v_fused = v_ref.clone()
    value = theta if amplitude is None else amplitude
    for t in range(steps):
        current = c if t == 0 else c.roll(t, dims=0)
        current = current.contiguous(memory_format=torch.channels_last) if channels_last \
            else current.contiguous()
        x_ref, x_fused = torch.empty_like(v_ref), torch.empty_like(v_ref)
        reference_if_step_(v_ref, current, theta, x_ref, amplitude=amplitude, extra=extra)
        assert fused_if_step_(v_fused, current, theta, x_fused, value, extra)
        assert torch.equal(_bits(x_fused), _bits(x_ref))
        assert torch.equal(_bits(v_fused), _bits(v_ref))


@needs_kernel
def test_a_large_tensor_takes_the_parallel_loop_and_keeps_the_bits():
    v_ref, c = _inputs(7, (64, 32, 14, 14), torch.float32, 0.8125, True)  # > 16384 elements
    v_fused, x_ref, x_fused = v_ref.clone(), torch.empty_like(c), torch.empty_like(c)
    reference_if_step_(v_ref, c, 0.8125, x_ref)
    assert fused_if_step_(v_fused, c, 0.8125, x_fused, 0.8125)
    assert torch.equal(_bits(v_fused), _bits(v_ref)) and torch.equal(_bits(x_fused), _bits(x_ref))
    assert 0 < int((x_ref > 0).sum()) < x_ref.numel()


def test_inapplicable_layouts_and_dtypes_are_left_to_the_eager_path():
    v = torch.zeros(2, 3, 4, 4)
    c = torch.ones(2, 3, 4, 4)
    x = torch.empty_like(v)
    assert not fused_if_step_(v, c.contiguous(memory_format=torch.channels_last), 1.0, x, 1.0)
    assert not fused_if_step_(v, c.transpose(2, 3), 1.0, x, 1.0)
    assert not fused_if_step_(v.half(), c.half(), 1.0, x.half(), 1.0)
    assert not fused_if_step_(v[:, :, ::2], c[:, :, ::2], 1.0, x[:, :, ::2], 1.0)
    assert torch.equal(v, torch.zeros(2, 3, 4, 4))  # nothing was touched
    # if_step_ still computes the right thing through the reference
    neurons.if_step_(v, c.transpose(2, 3), 1.0, x)
    assert torch.equal(x, torch.ones_like(x)) and torch.equal(v, torch.zeros_like(v))


@needs_kernel
def test_step_mode_neurons_run_the_fused_kernel(monkeypatch):
    calls = []

    def counting(*args, **kwargs):
        applied = fused_if_step_(*args, **kwargs)
        calls.append(applied)
        return applied

    monkeypatch.setattr(neurons, "fused_if_step_", counting)
    neuron = IFNeuron(1.0)
    neuron(torch.rand(4, 8, 6, 6).contiguous(memory_format=torch.channels_last))
    assert calls == [True]


def test_disabled_kernel_falls_back_with_the_same_result(monkeypatch):
    """SPIKEBRIDGE_IF_KERNEL=0 (or no compiler): the eager reference, same simulation."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), sb.activations.QCFS(4, 1.0),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3)).eval()
    snn = sb.convert(model)
    x = torch.randn(5, 1, 8, 8)
    fused = sb.simulate(snn, x, 6)
    monkeypatch.setattr(neurons, "fused_if_step_", lambda *a, **k: False)
    assert torch.equal(sb.simulate(snn, x, 6), fused)
    monkeypatch.setenv("SPIKEBRIDGE_IF_KERNEL", "0")
    monkeypatch.setattr(if_kernel, "_status", "not built yet")
    monkeypatch.setattr(if_kernel, "_library", None)
    assert not if_kernel.kernel_available()
    assert "disabled" in if_kernel.kernel_status()


def _eager_presimulation(currents, theta, v0, rho, constant, value=None):
    """COS's first pre-simulation on the eager path: v(ρ), N and Theorem 1's sign (§4.5)."""
    trace = integrate_and_fire(currents, theta, v0, rho, constant=constant, record_output=False,
                               track_count=True, amplitude=value)
    return trace.v, trace.count, offset_sign(trace.v, trace.count, rho, theta)


def _frames(seed, rho, shape, dtype, theta, channels_last):
    """ρ current frames [ρ, B, ...] (in a folded channels_last buffer if asked) and v0."""
    v0, _ = _inputs(seed, shape, dtype, theta, channels_last)
    frames = torch.stack([_inputs(seed + 1 + t, shape, dtype, theta, False)[1]
                          for t in range(rho)])
    if channels_last:  # how the simulator folds time into the batch: [ρ·B, C, H, W] CL
        folded = frames.flatten(0, 1)
        frames = torch.empty_like(folded, memory_format=torch.channels_last).copy_(
            folded).view(frames.shape)
    return v0, frames


def _assert_same_bits(fused, eager):
    v, count, sign = fused
    v_ref, count_ref, sign_ref = eager
    assert v.stride() == v_ref.stride() and count.stride() == count_ref.stride()
    assert torch.equal(_bits(v), _bits(v_ref))
    assert torch.equal(_bits(count), _bits(count_ref))
    assert sign.dtype == torch.int8 and torch.equal(sign, sign_ref)


@needs_kernel
@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    theta=st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    channels_last=st.booleans(),
    constant=st.booleans(),
    rho=st.integers(1, 8),
    batch=st.integers(1, 9),
)
def test_fused_presimulation_is_bit_identical_to_the_eager_path(
    seed, theta, dtype, channels_last, constant, rho, batch
):
    """v(ρ), N and the offset sign, raw bits, against integrate_and_fire + offset_sign."""
    v0, frames = _frames(seed, rho, (batch, 3, 5, 7), dtype, theta, channels_last)
    currents = frames[0] if constant else frames
    fused = fused_presimulation(currents, theta, v0, rho, constant=constant)
    assert fused is not None
    eager = _eager_presimulation(currents, theta, v0, rho, constant)
    _assert_same_bits(fused, eager)
    if not constant:  # more frames than ρ: only the first ρ are read
        longer = torch.empty((rho + 2, *frames.shape[1:]), dtype=dtype)
        if channels_last:
            longer = torch.empty_like(longer.flatten(0, 1), memory_format=torch.channels_last
                                      ).view(longer.shape)
        longer[:rho] = frames
        longer[rho:] = frames[:1]
        _assert_same_bits(fused_presimulation(longer, theta, v0, rho, constant=False), eager)


@needs_kernel
def test_fused_presimulation_in_the_parallel_loop_at_extreme_values():
    """Large layer (OpenMP loop); amplitudes ≠ θ; counts that overflow to inf at huge θ."""
    v0, frames = _frames(11, 4, (64, 16, 14, 14), torch.float32, 0.8125, True)
    for value in (None, 1.0, 0.37):
        _assert_same_bits(fused_presimulation(frames, 0.8125, v0, 4, constant=False, value=value),
                          _eager_presimulation(frames, 0.8125, v0, 4, False, value))
    assert 0 < int((_eager_presimulation(frames, 0.8125, v0, 4, False)[2] != 0).sum())
    huge = 3e38  # 4·θ overflows float32: N = round(inf / θ) = inf on both paths
    v0 = torch.full((2, 3, 4, 4), huge)
    c = torch.full((2, 3, 4, 4), huge)
    c[0, 0] = -huge
    _assert_same_bits(fused_presimulation(c, huge, v0, 4, constant=True),
                      _eager_presimulation(c, huge, v0, 4, True))


def test_presimulation_leaves_inapplicable_inputs_to_the_eager_path():
    v0 = torch.zeros(2, 3, 4, 4)
    frames = torch.ones(4, 2, 3, 4, 4)
    assert fused_presimulation(frames, 1.0, v0.half(), 4, constant=False) is None
    assert fused_presimulation(frames.transpose(3, 4), 1.0, v0, 4, constant=False) is None
    assert fused_presimulation(frames[:3], 1.0, v0, 4, constant=False) is None  # too few frames
    assert fused_presimulation(frames[0].contiguous(memory_format=torch.channels_last), 1.0,
                               v0, 4, constant=True) is None  # layouts differ


@pytest.mark.parametrize("variant,iterations", [("shift", 1), ("shift", 3), ("lightweight", 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cos_calibration_with_and_without_the_fused_presimulation(
    monkeypatch, variant, iterations, channels_last
):
    rule = OffsetSpikeCalibration(rho=4, iterations=iterations, variant=variant)
    v0, frames = _frames(5, 4, (3, 5, 6, 7), torch.float32, 0.9, channels_last)
    calls = []

    def counting(*args, **kwargs):
        result = fused_presimulation(*args, **kwargs)
        calls.append(result is not None)
        return result

    monkeypatch.setattr(cos, "fused_presimulation", counting)
    got = [rule.initial_potential(c, 0.9, v0, constant=k, reset="subtract")
           for c, k in ((frames, False), (frames[0], True))]
    assert calls == [kernel_available()] * 2
    monkeypatch.setattr(cos, "fused_presimulation", lambda *a, **k: None)
    for g, (c, k) in zip(got, ((frames, False), (frames[0], True)), strict=True):
        assert torch.equal(_bits(g), _bits(rule.initial_potential(c, 0.9, v0, constant=k,
                                                                  reset="subtract")))
    assert not torch.equal(got[0], v0)


@needs_kernel
@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    theta=st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False),
    amplitude=st.sampled_from([None, 1.0, 0.37]),
    extra=st.sampled_from([0.0, 0.013]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    channels_last=st.booleans(),
    steps=st.integers(1, 6),
    constant=st.booleans(),
    residual=st.booleans(),
)
def test_fused_scan_is_bit_identical_to_stepping_the_eager_reference(
    seed, theta, amplitude, extra, dtype, channels_last, steps, constant, residual
):
    """The layer-wise scan = T eager steps, bit for bit; with a residual addend, = eager steps
    on (a + b), the branches summed first."""
    shape = (2, 3, 5, 4)
    v0, _ = _inputs(seed, shape, dtype, theta, channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def frames(offset):
        if constant:
            return _inputs(seed + offset, shape, dtype, theta, channels_last)[1]
        per_step = [_inputs(seed + offset + t, shape, dtype, theta, channels_last)[1]
                    for t in range(steps + 1)]  # one frame more than the scan reads
        folded = torch.cat(per_step).contiguous(memory_format=fmt)
        return folded.view(steps + 1, *shape)

    a = frames(100)
    b = frames(200) if residual else None
    value = theta if amplitude is None else amplitude
    v_ref = v0.clone()
    expected = []
    for t in range(steps):
        c = a if constant else a[t]
        c = c if b is None else c + (b if constant else b[t])
        x = torch.empty_like(v_ref)
        reference_if_step_(v_ref, c, theta, x, amplitude=amplitude, extra=extra)
        expected.append(x)
    v = v0.clone()
    out = torch.empty((steps * shape[0], *shape[1:]), dtype=dtype,
                      memory_format=fmt).view(steps, *shape)
    assert if_kernel.fused_if_scan_(v, a, theta, out, steps, value, extra, constant=constant,
                                    addends=b)
    assert torch.equal(_bits(v), _bits(v_ref))
    assert torch.equal(_bits(out), _bits(torch.stack(expected)))


@needs_kernel
def test_scan_in_the_parallel_loop_and_integrate_and_fire_use_it(monkeypatch):
    g = torch.Generator().manual_seed(5)
    currents = torch.randn(6, 16, 32, 14, 14, generator=g)  # > 16384 neurons per frame
    shortcut = torch.randn(6, 16, 32, 14, 14, generator=g)
    v0 = torch.full((16, 32, 14, 14), 0.4)
    eager = integrate_and_fire(currents + shortcut, 0.8, v0, 6, track_count=True)  # per step
    calls = []
    scan = if_kernel.fused_if_scan_
    monkeypatch.setattr(neurons, "fused_if_scan_",
                        lambda *a, **k: calls.append(scan(*a, **k)) or calls[-1])
    fused = integrate_and_fire(currents, 0.8, v0, 6, addends=shortcut)
    assert calls == [True]
    assert torch.equal(fused.v, eager.v) and torch.equal(fused.output, eager.output)
    integrate_and_fire(currents, 0.8, v0, 6)  # without an addend: the per-step update
    assert calls == [True]


def test_scan_leaves_inapplicable_inputs_to_the_eager_path():
    v = torch.zeros(2, 3, 4, 4)
    frames = torch.ones(3, 2, 3, 4, 4)
    out = torch.empty(3, 2, 3, 4, 4)
    cl = torch.empty(6, 3, 4, 4, memory_format=torch.channels_last).view(3, 2, 3, 4, 4)
    assert not if_kernel.fused_if_scan_(v, frames, 1.0, cl, 3, 1.0, constant=False)
    assert not if_kernel.fused_if_scan_(v, frames, 1.0, out, 4, 1.0, constant=False)  # T' < T
    assert not if_kernel.fused_if_scan_(v.half(), frames.half(), 1.0, out.half(), 3, 1.0,
                                        constant=False)
    assert not if_kernel.fused_if_scan_(v, frames, 1.0, out, 3, 1.0, constant=False,
                                        addends=cl)
    assert torch.equal(v, torch.zeros_like(v))


def test_the_kernel_builds_wherever_a_c_compiler_exists():
    """A source or flag error must fail here, not quietly turn the fused tests into skips."""
    if if_kernel._compiler() is None or not if_kernel.kernel_available() and "disabled" in \
            if_kernel.kernel_status():
        pytest.skip(if_kernel.kernel_status())
    assert if_kernel.kernel_available(), if_kernel.kernel_status()


@needs_kernel
def test_a_compiler_refusing_the_native_flags_builds_for_the_baseline(monkeypatch, tmp_path):
    monkeypatch.setenv("SPIKEBRIDGE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(if_kernel, "_NATIVE", ["-mno-such-target-flag-spikebridge"])
    saved = (dict(if_kernel._FUNCTIONS), dict(if_kernel._PRESIMULATE), dict(if_kernel._SCAN))
    monkeypatch.setattr(if_kernel, "_status", "not built yet")
    monkeypatch.setattr(if_kernel, "_library", None)
    try:
        assert if_kernel.kernel_available(), if_kernel.kernel_status()
        assert "baseline ISA" in if_kernel.kernel_status()
        v, c, x = torch.zeros(4), torch.tensor([0.2, 0.5, 0.7, -1.0]), torch.empty(4)
        assert fused_if_step_(v, c, 0.5, x, 0.5)
        assert torch.equal(x, torch.tensor([0.0, 0.5, 0.5, 0.0]))
    finally:
        for table, old in zip((if_kernel._FUNCTIONS, if_kernel._PRESIMULATE, if_kernel._SCAN),
                              saved, strict=True):
            table.clear()
            table.update(old)
