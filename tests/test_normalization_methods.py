"""Data-based conversion of ReLU networks (docs/methods.md §7.3–7.5, §7.9): ECC, Rueckauer's
max/robust normalization, threshold balancing, RMP-SNN and OPI.

Each normalized network must compute the ANN's function at the rate level, with weights really
rescaled by κλ_{n-1}/λ_n; each method must build the neurons it documents; statistics must be
taken over exactly the calibration samples; bad input must fail with an error naming the fix.
"""

from __future__ import annotations

import copy
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

import spikebridge as sb
from spikebridge.activations import ActivationSpec
from spikebridge.batchnorm_folding import fold_batchnorm
from spikebridge.evaluation import evaluate
from spikebridge.methods import (
    METHODS,
    WrongSourceModelError,
    get_method,
    parse_method_spec,
)
from spikebridge.models import create_model
from spikebridge.neurons import IFNeuron, integrate_and_fire
from spikebridge.normalization import rate_network
from spikebridge.simulate import correct_over_time, simulate

DATA_METHODS = ["maxnorm", "robustnorm", "threshold-balancing", "rmp", "opi", "ecc"]


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _images(n: int, seed: int = 0) -> torch.Tensor:
    """Digit-like 8×8 grey images, normalized like the data sets (mean 0-ish, some negatives)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g) * 3 - 0.8


def _with_real_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm: running stats from a few train-mode passes, random γ/β."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for k in range(3):
            model(_images(32, seed=100 + k) * (1 + 0.3 * k) + 0.1)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def relu_cnn() -> nn.Module:
    torch.manual_seed(1)
    model = create_model("fashion_cnn", 10, 1, ActivationSpec("relu"), input_size=(8, 8))
    return _with_real_bn(model)


@pytest.fixture(scope="module")
def relu_resnet() -> nn.Module:
    torch.manual_seed(2)
    return _with_real_bn(create_model("resnet20", 10, 1, ActivationSpec("relu")), seed=1)


@pytest.fixture(scope="module")
def qcfs_cnn() -> nn.Module:
    torch.manual_seed(3)
    model = create_model("fashion_cnn", 10, 1, ActivationSpec("qcfs"), input_size=(8, 8))
    return _with_real_bn(model)


@pytest.fixture(scope="module")
def calibration():
    x = _images(24)
    return x, [(x[:10], None), (x[10:], None)]


def _folded(model: nn.Module, conv: str, bn: str, eps=None) -> nn.Module:
    return fold_batchnorm(model.get_submodule(conv), model.get_submodule(bn), eps)


def _weight(snn, name: str) -> torch.Tensor:
    return snn.network.get_submodule(name).weight.detach()


# --------------------------------------------------------------- the ANN function is preserved

# (model fixture, first conv, its BN, first neuron, a later conv, its BN, the neurons around it)
ARCHITECTURES = {
    "fashion_cnn": ("relu_cnn", "features.0", "features.1", "features.2",
                    "features.7", "features.8", "features.6", "features.9"),
    "resnet20": ("relu_resnet", "conv1", "bn1", "act1",
                 "layers.0.0.conv1", "layers.0.0.bn1", "act1", "layers.0.0.act1"),
}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize(("method", "params", "kappa"), [
    ("ecc", {}, 100.0),
    ("maxnorm", {"fold_epsilon": True}, 1.0),
])
def test_normalized_network_computes_the_ann_function(arch, method, params, kappa, request,
                                                      calibration):
    fixture, conv0, bn0, neuron0, conv, bn, before, after = ARCHITECTURES[arch]
    ann = request.getfixturevalue(fixture)
    x, batches = calibration
    snn = sb.convert(ann, method, calibration_data=batches, **params)
    with torch.no_grad():
        expected = ann(x)
        got = rate_network(snn.network, clip=False)(x)
        # λ is the maximum on these very images, so no neuron saturates on them either
        clipped = rate_network(snn.network, clip=True)(x)
    scale = float(expected.abs().max())
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)
    assert torch.allclose(clipped, expected, rtol=1e-4, atol=1e-5 * scale)
    # ... while the weights really are rescaled: W' = κ λ_{n-1} W / λ_n (input unit λ_0 = 1)
    lam = snn.method.layer_scales
    assert set(lam) == set(snn.neurons()) and all(v > 0 for v in lam.values())
    first = _folded(ann, conv0, bn0).weight.detach()
    assert torch.allclose(_weight(snn, conv0), kappa * first / lam[neuron0], rtol=1e-5, atol=0)
    assert not torch.allclose(_weight(snn, conv0), first, rtol=1e-2)
    later = _folded(ann, conv, bn).weight.detach()
    factor = kappa * lam[before] / lam[after]
    assert torch.allclose(_weight(snn, conv), factor * later, rtol=1e-5, atol=0)
    for neuron in snn.neurons().values():
        assert neuron.amplitude == 1.0 and float(neuron.threshold) == kappa


def test_rate_network_differs_from_the_ann_beyond_the_calibration_range(relu_cnn, calibration):
    """The check above can fail: on brighter images the maximum is exceeded and clipping bites."""
    x, batches = calibration
    snn = sb.convert(relu_cnn, "maxnorm", calibration_data=batches, fold_epsilon=True)
    with torch.no_grad():
        bright = x * 4
        assert not torch.allclose(rate_network(snn.network, clip=True)(bright), relu_cnn(bright),
                                  rtol=1e-3, atol=1e-4)


# ------------------------------------------------------------------------- neurons per method

@pytest.mark.parametrize(("spec", "threshold", "v0", "reset", "residual"), [
    ("maxnorm", 1.0, 0.0, "subtract", 0.0),
    ("robustnorm", 1.0, 0.0, "subtract", 0.0),
    ("threshold-balancing:balance_steps=4", 1.0, 0.0, "zero", 0.0),
    ("rmp", 0.8, 0.0, "subtract", 0.0),
    ("rmp:scale=0.9", 0.9, 0.0, "subtract", 0.0),
    ("opi", 1.0, 0.5, "subtract", 0.0),
    ("ecc", 100.0, 0.0, "subtract", 0.5),
    ("ecc:kappa=50:eta=0.25", 50.0, 0.0, "subtract", 0.25),
    ("ecc:tre=0", 100.0, 0.0, "subtract", 0.0),
])
def test_each_method_builds_its_documented_neurons(spec, threshold, v0, reset, residual,
                                                   relu_cnn, calibration):
    parsed = parse_method_spec(spec)
    snn = sb.convert(relu_cnn, parsed.name, calibration_data=calibration[1], **parsed.params)
    neurons = snn.neurons()
    assert len(neurons) == 5
    for name, neuron in neurons.items():
        assert float(neuron.threshold) == pytest.approx(threshold, rel=1e-7), name
        assert neuron.amplitude == 1.0, name  # unit spikes
        assert neuron.initial_fraction == v0 and neuron.reset == reset, name
        assert neuron.residual == residual and not neuron.signed, name
    assert snn.horizon_dependent() == (residual > 0)


def test_method_defaults_percentiles_and_bn_epsilon():
    expected = {  # name: (percentile, BN ε used for folding: None = the BN's own, 0 = none)
        "maxnorm": (100.0, 0.0), "robustnorm": (99.9, 0.0), "threshold-balancing": (100.0, None),
        "rmp": (100.0, None), "opi": (99.9, None), "ecc": (100.0, None),
    }
    for name, (percentile, eps) in expected.items():
        method = get_method(name)
        assert method.percentile == percentile and method.bn_epsilon() == eps, name
        assert method.needs_calibration_data() and method.source_kinds == ("relu",
                                                                           "clipped_relu")
    assert get_method("maxnorm", fold_epsilon=True).bn_epsilon() is None
    assert get_method("ecc", cmb=False).bn_epsilon() == 0.0
    assert get_method("ecc").params() == {"kappa": 100.0, "eta": 0.5, "percentile": 100.0,
                                          "cn": True, "tre": True, "cmb": True}


def test_rmp_scales_thresholds_not_weights(relu_cnn, calibration):
    batches = calibration[1]
    rmp = sb.convert(relu_cnn, "rmp", scale=0.9, calibration_data=batches)
    base = sb.convert(relu_cnn, "maxnorm", fold_epsilon=True, calibration_data=batches)
    assert rmp.method.layer_scales == base.method.layer_scales
    for (name, a), (_, b) in zip(rmp.network.named_parameters(), base.network.named_parameters(),
                                 strict=True):
        assert torch.equal(a, b), name
    x = calibration[0]
    assert not torch.equal(simulate(rmp, x, 8), simulate(base, x, 8))  # fires earlier


# -------------------------------------------------------------------------- ECC's ablations

def test_ecc_without_cn_needs_no_data_and_keeps_the_ann_units(relu_cnn, calibration):
    x = calibration[0]
    snn = sb.convert(relu_cnn, "ecc", cn=False)  # no calibration data needed
    assert not get_method("ecc", cn=False).needs_calibration_data()
    with torch.no_grad():
        assert torch.allclose(rate_network(snn.network, clip=False)(x), relu_cnn(x),
                              rtol=1e-4, atol=1e-6)
    # threshold 1 in the ANN's units: W'/θ = W_folded / 1 for the first layer
    neuron = snn.neurons()["features.2"]
    first = _folded(relu_cnn, "features.0", "features.1").weight.detach()
    assert torch.allclose(_weight(snn, "features.0") / float(neuron.threshold), first,
                          rtol=1e-5, atol=0)
    assert snn.horizon_dependent()  # TRE stays on


def test_ecc_without_cn_is_unit_spike_form_with_scales_one(relu_cnn):
    snn = sb.convert(relu_cnn, "ecc", cn=False, kappa=100.0)
    assert snn.method.layer_scales == dict.fromkeys(snn.neurons(), 1.0)
    for neuron in snn.neurons().values():
        assert neuron.amplitude == 1.0 and float(neuron.threshold) == 100.0
    first = _folded(relu_cnn, "features.0", "features.1").weight.detach()
    assert torch.allclose(_weight(snn, "features.0"), 100.0 * first, rtol=1e-5, atol=0)


def test_ecc_cmb_switch_folds_batchnorm_with_or_without_epsilon(relu_cnn, calibration):
    model = copy.deepcopy(relu_cnn)
    bn = model.get_submodule("features.1")
    bn.running_var[:8] = 2e-5  # ε = 1e-5 matters a lot for these channels
    batches = calibration[1]
    conv = model.get_submodule("features.0").weight.detach().double()
    gamma, var = bn.weight.detach().double(), bn.running_var.double()
    shape = (-1, 1, 1, 1)
    for cmb, denominator in ((True, torch.sqrt(var + bn.eps)), (False, torch.sqrt(var))):
        snn = sb.convert(model, "ecc", cmb=cmb, calibration_data=batches)
        lam = snn.method.layer_scales["features.2"]
        folded = _weight(snn, "features.0").double() * lam / 100.0  # undo W' = κ W / λ_1
        expected = conv * (gamma / denominator).view(shape)
        assert torch.allclose(folded, expected, rtol=1e-5, atol=0), cmb
        other = conv * (gamma / (torch.sqrt(var) if cmb else torch.sqrt(var + bn.eps))).view(shape)
        assert not torch.allclose(folded[:8], other[:8], rtol=1e-2, atol=0), cmb


# ------------------------------------------------------------------------------------- TRE

def test_tre_current_adds_eta_theta_over_T_each_step():
    g = torch.Generator().manual_seed(0)
    theta, eta, steps = 0.75, 0.5, 6
    current = torch.rand(200, generator=g, dtype=torch.float64) * 1.2 - 0.1
    extra = eta * theta / steps
    # manual IF loop: m = v + c + ηθ/T; fire at m >= θ; subtract θ
    v, spikes = torch.zeros_like(current), []
    for _ in range(steps):
        v = v + current
        v = v + extra
        s = (v >= theta).to(v.dtype)
        v = v - theta * s
        spikes.append(s)
    manual = torch.stack(spikes)
    trace = integrate_and_fire(current, theta, torch.zeros_like(current), steps, constant=True,
                               extra=extra, amplitude=1.0)
    assert torch.equal(trace.output, manual) and torch.equal(trace.v, v)
    # the neuron module takes η from `residual` and T from its horizon
    neuron = IFNeuron(theta, initial_fraction=0.0, residual=eta, amplitude=1.0).double()
    with pytest.raises(RuntimeError, match="run length T"):
        neuron(current)
    neuron.reset_state()
    neuron.horizon = steps
    assert neuron.step_current() == pytest.approx(extra)
    assert torch.equal(torch.stack([neuron(current) for _ in range(steps)]), manual)
    # over the window TRE injects ηθ: for constant input the count is ⌊(Tc + ηθ)/θ⌋ clipped
    count = manual.sum(0)
    closed = torch.clamp(torch.floor((steps * current + eta * theta) / theta), 0, steps)
    near_edge = ((steps * current + eta * theta) / theta - closed).abs() < 1e-9
    assert torch.equal(count[~near_edge], closed[~near_edge])
    # without TRE some of these neurons fire once less
    plain = integrate_and_fire(current, theta, torch.zeros_like(current), steps, constant=True,
                               amplitude=1.0)
    assert (plain.output.sum(0) < count).any()


def test_evaluate_runs_each_horizon_of_ecc_separately(relu_cnn, calibration):
    x, batches = calibration
    snn = sb.convert(relu_cnn, "ecc", calibration_data=batches)
    assert snn.horizon_dependent()
    own1, own4 = simulate(snn, x, 1), simulate(snn, x, 4)
    assert torch.equal(own4, simulate(snn, x, 4, mode="layer"))  # TRE identical in both modes
    run4, run8 = own4, simulate(snn, x, 8)
    # the first steps of a longer run differ from a shorter run (the current is ηθ/T)
    assert not torch.equal(run8[:4], own4) and not torch.equal(run4[:1], own1)
    labels = own1.sum(0).argmax(-1)  # what the 1-step run predicts
    assert int(correct_over_time(run4, labels)[0]) < len(x)  # t=1 of the 4-step run: wrong
    both = evaluate(snn, [(x[:13], labels[:13]), (x[13:], labels[13:])], [4, 1])
    assert set(both.snn_accuracy) == {1, 4} and both.n_samples == len(x)
    assert both.snn_accuracy[1] == 1.0
    own_acc4 = float((own4.sum(0).argmax(-1) == labels).float().mean())
    assert both.snn_accuracy[4] == pytest.approx(own_acc4)
    # evaluate([4, 8]) reports exactly 4 and 8, each equal to a run of its own
    pair = evaluate(snn, [(x, labels)], [4, 8])
    assert set(pair.snn_accuracy) == {4, 8}
    assert pair.snn_accuracy[4] == evaluate(snn, [(x, labels)], [4]).snn_accuracy[4]
    assert pair.snn_accuracy[8] == evaluate(snn, [(x, labels)], [8]).snn_accuracy[8]
    own_acc8 = float((run8.sum(0).argmax(-1) == labels).float().mean())
    assert pair.snn_accuracy[8] == pytest.approx(own_acc8)
    # without TRE one run gives every t <= T
    plain = sb.convert(relu_cnn, "ecc", tre=False, calibration_data=batches)
    assert set(evaluate(plain, [(x, labels)], [4, 8]).snn_accuracy) == set(range(1, 9))


# --------------------------------------------------------------------- percentile semantics

def _relu_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every ReLU module's output on ``x``, by qualified name, via forward hooks."""
    outputs: dict[str, list[torch.Tensor]] = {}
    handles = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: outputs.setdefault(name, []).append(out.detach()))
        for name, module in model.named_modules() if isinstance(module, nn.ReLU)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(values) for name, values in outputs.items()}


def _nearest_rank(values: torch.Tensor, p: float) -> float:
    ordered = np.sort(values.double().numpy().reshape(-1))
    rank = max(1, math.ceil(Fraction(str(p)) * ordered.size / 100))
    return float(ordered[rank - 1])


@pytest.mark.parametrize(("method", "p"), [("maxnorm", 100.0), ("robustnorm", 99.9)])
def test_scales_are_percentiles_over_exactly_the_calibration_samples(method, p, relu_cnn):
    x = _images(40, seed=5)
    x[30:] *= 4  # images past the cut are much brighter
    batches = [(x[i:i + 7], None) for i in range(0, 40, 7)]  # uneven batches: 7,7,7,7,7,5
    snn = sb.convert(relu_cnn, method, calibration_data=batches, calibration_samples=23,
                     fold_epsilon=True)
    used = _relu_outputs(relu_cnn, x[:23])
    everything = _relu_outputs(relu_cnn, x)
    lam = snn.method.layer_scales
    assert set(lam) == set(used) and len(lam) == 5
    for name, values in used.items():
        values, more = values[values != 0], everything[name][everything[name] != 0]
        assert lam[name] == pytest.approx(_nearest_rank(values, p), rel=1e-5), name
        assert lam[name] < _nearest_rank(more, p) * (1 - 1e-3), name


def test_robust_scale_is_below_the_maximum(relu_cnn, calibration):
    batches = calibration[1]
    robust = sb.convert(relu_cnn, "robustnorm", calibration_data=batches).method.layer_scales
    maximum = sb.convert(relu_cnn, "maxnorm", calibration_data=batches).method.layer_scales
    assert all(robust[n] < maximum[n] for n in robust)


# ---------------------------------------------------------------------- threshold balancing

def test_threshold_balancing_balances_each_layer_on_the_calibration_data(relu_cnn):
    x = _images(20, seed=7)
    steps = 6
    snn = sb.convert(relu_cnn, "threshold-balancing", balance_steps=steps,
                     calibration_data=[(x[:12], None), (x[12:], None)])
    peaks: dict[str, float] = {}
    handles = [
        neuron.register_forward_pre_hook(
            lambda _m, inputs, name=name: peaks.__setitem__(
                name, max(peaks.get(name, -math.inf), float(inputs[0].max()))))
        for name, neuron in snn.neurons().items()
    ]
    try:
        simulate(snn, x, steps, mode="step")
    finally:
        for handle in handles:
            handle.remove()
    assert set(peaks) == set(snn.neurons())
    for name, peak in peaks.items():
        # largest single-step input current = the threshold κ = 1 (reached by some neuron)
        assert 1.0 - 1e-5 <= peak <= 1.0 + 1e-5, (name, peak)
    # the first layer sees the constant analog input: its threshold is the max activation
    maxnorm = sb.convert(relu_cnn, "maxnorm", fold_epsilon=True, calibration_data=[(x, None)])
    scales = snn.method.layer_scales
    assert scales["features.2"] == pytest.approx(maxnorm.method.layer_scales["features.2"],
                                                 rel=1e-6)
    # ... deeper layers are balanced on spikes, not on ANN activations
    assert any(abs(scales[n] / maxnorm.method.layer_scales[n] - 1) > 1e-3 for n in scales)


# ------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("method", ["maxnorm", "robustnorm", "rmp", "opi", "ecc"])
@pytest.mark.parametrize("percentile", [0, -1, 100.5, float("nan")])
def test_bad_percentile(method, percentile):
    with pytest.raises(ValueError, match="percentile"):
        get_method(method, percentile=percentile)


@pytest.mark.parametrize("kappa", [0, -1.0, float("inf"), float("nan")])
def test_bad_kappa(kappa):
    with pytest.raises(ValueError, match="κ"):
        get_method("ecc", kappa=kappa)


@pytest.mark.parametrize("eta", [1, 1.5, -0.1, float("nan")])
def test_bad_eta(eta):
    with pytest.raises(ValueError, match="η.*\\[0, 1\\)"):
        get_method("ecc", eta=eta)


@pytest.mark.parametrize(("method", "params", "message"), [
    ("rmp", {"scale": 0}, "α"),
    ("rmp", {"scale": 1.5}, "α"),
    ("opi", {"v0": 1.0}, "v\\(0\\)"),
    ("opi", {"v0": -0.5}, "v\\(0\\)"),
    ("threshold-balancing", {"balance_steps": 0}, "T must be an integer"),
    ("threshold-balancing", {"reset": "hard"}, "reset"),
])
def test_bad_method_parameters(method, params, message):
    with pytest.raises(ValueError, match=message):
        get_method(method, **params)


@pytest.mark.parametrize("method", DATA_METHODS)
def test_qcfs_model_given_to_a_relu_method(method, qcfs_cnn, calibration):
    with pytest.raises(WrongSourceModelError) as info:
        sb.convert(qcfs_cnn, method, calibration_data=calibration[1])
    text = str(info.value)
    assert "relu" in text and "qcfs" in text
    assert "spikebridge train --activation relu" in text


def test_wrong_model_is_reported_before_missing_calibration_data(qcfs_cnn):
    with pytest.raises(WrongSourceModelError, match="--activation relu"):
        sb.convert(qcfs_cnn, "maxnorm")


@pytest.mark.parametrize("method", ["qcfs", "cos"])
def test_relu_model_given_to_a_threshold_method(method, relu_cnn):
    with pytest.raises(WrongSourceModelError, match="--activation qcfs"):
        sb.convert(relu_cnn, method)
    sb.convert(relu_cnn, method, thresholds=1.0)  # with thresholds it is a clipped ReLU: fine


@pytest.mark.parametrize("method", DATA_METHODS)
def test_data_based_method_without_calibration_data(method, relu_cnn):
    with pytest.raises(ValueError, match="calibration_data"):
        sb.convert(relu_cnn, method)


def test_unknown_method_parameters():
    with pytest.raises(ValueError, match="method 'rmp' has no parameter 'foo'; it accepts: "
                                         "scale, percentile"):
        parse_method_spec("rmp:foo=1")
    with pytest.raises(ValueError, match="no parameter\\(s\\) foo; it accepts: kappa, eta"):
        get_method("ecc", foo=1)
    with pytest.raises(ValueError, match="not a valid bool"):
        parse_method_spec("ecc:tre=maybe")
    with pytest.raises(ValueError, match="key=value"):
        parse_method_spec("ecc:tre")
    spec = parse_method_spec("ECC:tre=0:cmb=off:kappa=50")
    assert spec.name == "ecc" and spec.params == {"tre": False, "cmb": False, "kappa": 50.0}
    assert spec.label == "ecc(tre=False, cmb=False, kappa=50.0)"
    assert set(DATA_METHODS) <= set(METHODS)
