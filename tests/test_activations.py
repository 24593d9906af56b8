"""QCFS forward (§3.1) and straight-through gradients (§3.2)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikebridge.activations import QCFS, ActivationSpec, ClippedReLU


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
