"""QCFS forward (§3.1) and straight-through gradients (§3.2); ActivationSpec for every kind.

SlipReLU's own tests are in test_slip.py; the stReLU family's conversion in test_strelu.py.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from spikebridge.activations import (
    QCFS,
    ActivationSpec,
    AsymmetricLeakyReLU,
    ClippedReLU,
    SlipReLU,
    SymmetricThresholdReLU,
)


@settings(max_examples=200, deadline=None)
@given(st.floats(-5, 10), st.floats(0.2, 5.0), st.integers(1, 16))
def test_qcfs_forward_matches_definition(z, theta, L):
    act = QCFS(levels=L, theta=theta).double()
    theta = float(act.theta.detach())  # the float32-rounded parameter value
    out = float(act(torch.tensor([z], dtype=torch.float64)).detach())
    u = z * L / theta + 0.5
    expected = theta * min(max(math.floor(u) / L, 0.0), 1.0)
    if abs(u - round(u)) > 1e-9:
        assert out == pytest.approx(expected, abs=1e-12)
    levels = {theta * k / L for k in range(L + 1)}
    assert min(abs(out - lv) for lv in levels) < 1e-9


def test_qcfs_gradients_follow_autograd_ste_reading():
    """∂a/∂z = 1 on [−θ/2L, θ + θ/2L), else 0; ∂a/∂θ = (a − z)/θ inside, 1 above, 0 below."""
    theta, L = 2.0, 4
    act = QCFS(levels=L, theta=theta).double()
    half = theta / (2 * L)
    zs = torch.tensor([-1.0, -half - 0.01, -half + 0.01, 0.3, 1.1, 1.9,
                       theta + half - 0.01, theta + half + 0.01, 5.0], dtype=torch.float64,
                      requires_grad=True)
    for i in range(len(zs)):
        act.zero_grad()
        if zs.grad is not None:
            zs.grad = None
        out = act(zs)
        out[i].backward()
        z = float(zs[i].detach())
        inside = -half <= z < theta + half
        assert float(zs.grad[i]) == (1.0 if inside else 0.0)
        a = float(out[i].detach())
        expected_dtheta = (a - z) / theta if inside else (1.0 if z >= theta else 0.0)
        assert float(act.theta.grad) == pytest.approx(expected_dtheta, abs=1e-12)


def test_clipped_relu_and_spec():
    act = ClippedReLU(theta=1.5)
    assert torch.equal(act(torch.tensor([-1.0, 0.5, 3.0])), torch.tensor([0.0, 0.5, 1.5]))
    spec = ActivationSpec.parse("qcfs:L=8,theta=3")
    assert (spec.kind, spec.levels, spec.theta) == ("qcfs", 8, 3.0)
    assert isinstance(spec.build(), QCFS) and spec.build() is not spec.build()
    assert ActivationSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown activation"):
        ActivationSpec.parse("gelu")
    with pytest.raises(ValueError, match="theta"):
        QCFS(theta=0.0)
    with pytest.raises(ValueError, match="levels"):
        QCFS(levels=0)


def test_new_kinds_parse_build_and_round_trip():
    slip = ActivationSpec.parse("slip:L=4,c=0.25,theta=2,delta1=0.1,delta2=0.25,learn_c=1")
    assert (slip.kind, slip.levels, slip.theta, slip.c, slip.delta1, slip.delta2, slip.learn_c) \
        == ("slip", 4, 2.0, 0.25, 0.1, 0.25, True)
    module = slip.build()
    assert isinstance(module, SlipReLU) and isinstance(module.c, nn.Parameter)
    assert not isinstance(ActivationSpec.parse("slip").build().c, nn.Parameter)  # c fixed
    strelu = ActivationSpec.parse("strelu:theta=3")
    assert isinstance(strelu.build(), SymmetricThresholdReLU)
    leaky = ActivationSpec.parse("leaky_threshold:theta=2,alpha=0.2,neg_theta=0.7")
    built = leaky.build()
    assert isinstance(built, AsymmetricLeakyReLU) and (built.alpha, built.neg_theta) == (0.2, 0.7)
    for spec in (slip, strelu, leaky, ActivationSpec.parse("slip")):
        data = json.loads(json.dumps(spec.to_dict()))  # as stored in config.json
        assert ActivationSpec.from_dict(data) == spec


def test_old_configs_unchanged_and_still_load():
    """Configs written before the new kinds keep loading; old kinds write the same keys."""
    assert ActivationSpec.parse("qcfs:L=8").to_dict() == {"kind": "qcfs", "levels": 8, "theta": 2.0}
    assert ActivationSpec.from_dict({"kind": "qcfs", "levels": 4, "theta": 2.0}) == ActivationSpec()
    assert ActivationSpec.from_dict({"kind": "relu"}).kind == "relu"
    assert set(ActivationSpec.parse("strelu").to_dict()) == {"kind", "levels", "theta"}
    with pytest.raises(ValueError, match="unknown activation fields"):
        ActivationSpec.from_dict({"kind": "slip", "slope": 0.5})


@pytest.mark.parametrize(("text", "message"), [
    ("strelu:L=4", r"unknown option 'L' for activation 'strelu' \(its options: theta\)"),
    ("slip:gamma=1", r"unknown option 'gamma' for activation 'slip' \(its options: L, theta, c"),
    ("relu:theta=2", r"activation 'relu' \(its options: none\)"),
    ("qcfs:c=0.5", r"unknown option 'c' for activation 'qcfs'"),
    ("slip:c", "must look like key=value"),
    ("slip:c=x", "c='x' must be a finite number"),
    ("slip:L=2.5", "must be an integer"),
    ("slip:learn_c=maybe", "0/1"),
    ("slip:c=1.5", r"c must lie in \[0, 1\]"),
    ("slip:delta2=1.5", r"delta2.*must lie in \[0, 1\]"),
    ("leaky_threshold:alpha=0", "alpha.*> 0"),
    ("leaky_threshold:neg_theta=-1", "neg_theta.*> 0"),
    ("strelu:theta=0", "theta must be a finite number > 0"),
    ("clipped_relu:theta=inf", "theta=.inf. must be a finite number"),
    ("qcfs:theta=nan", "theta=.nan. must be a finite number"),
    ("sigmoid", "unknown activation 'sigmoid'; choose one of"),
])
def test_bad_activation_options_are_clear_errors(text, message):
    with pytest.raises(ValueError, match=message):
        ActivationSpec.parse(text)


def test_fields_of_other_kinds_are_rejected():
    with pytest.raises(ValueError, match="activation 'qcfs' has no option 'alpha'"):
        ActivationSpec(kind="qcfs", alpha=0.3)
    with pytest.raises(ValueError, match="activation 'strelu' has no option 'c'"):
        ActivationSpec.from_dict({"kind": "strelu", "theta": 2.0, "c": 0.1})


def test_strelu_and_leaky_threshold_forward_and_theta_gradient():
    """stReLU = clip(z, −θ, θ) (§6.2, reconstructed); leaky: min(z, θ) / max(αz, −θ₋)."""
    z = torch.tensor([-5.0, -2.0, -0.3, -0.0, 0.0, 0.7, 2.0, 4.0], requires_grad=True)
    st_relu = SymmetricThresholdReLU(theta=2.0)
    out = st_relu(z)
    assert torch.equal(out, torch.tensor([-2.0, -2.0, -0.3, 0.0, 0.0, 0.7, 2.0, 2.0]))
    out.sum().backward()
    assert float(st_relu.theta.grad) == 1.0 - 1.0  # +1 above θ, −1 below −θ
    assert z.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    leaky = AsymmetricLeakyReLU(theta=2.0, alpha=0.1, neg_theta=0.5)
    expected = torch.tensor([-0.5, -0.2, -0.03, 0.0, 0.0, 0.7, 2.0, 2.0])
    assert torch.allclose(leaky(z.detach()), expected, atol=1e-7, rtol=0)
    assert [p for p, _ in leaky.named_parameters()] == ["theta"]  # α, θ₋ fixed
