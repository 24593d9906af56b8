"""A residual block's add moved into its output neuron changes no bit (issue #10)."""

from __future__ import annotations

import pytest
import torch
from test_simulate import _random_qcfs_model
from torch import nn

import spikebridge as sb
from spikebridge import network
from spikebridge.activations import QCFS
from spikebridge.neurons import input_current


def _random_resnet20(seed: int = 0) -> nn.Module:
    return _random_qcfs_model("resnet20", 3, seed)


def _unfused(snn: sb.SpikingNetwork, monkeypatch) -> sb.SpikingNetwork:
    with monkeypatch.context() as patch:
        patch.setattr(network, "fuse_residual_currents", lambda gm: 0)
        snn._split = None
        split = snn.split
    snn._split = split
    return snn


def _two_input_neurons(snn: sb.SpikingNetwork) -> int:
    return sum(1 for n in snn.split.body.graph.nodes if n.op == "call_module"
               and len(n.args) == 2)


@pytest.mark.parametrize("method", ["qcfs", "cos"])
def test_fused_residual_neurons_give_the_unfused_bits(method, monkeypatch):
    model = _random_resnet20()
    x = torch.randn(3, 3, 16, 16)
    kwargs = {"rho": 2} if method == "cos" else {}
    fused = sb.convert(model, method, **kwargs)
    assert not [n for n in fused.split.body.graph.nodes
                if n.op == "call_function" and "add" in str(n.target)]
    assert _two_input_neurons(fused) == 9  # all nine residual adds went into their neurons
    plain = _unfused(sb.convert(model, method, **kwargs), monkeypatch)
    assert _two_input_neurons(plain) == 0
    modes = ("step", "layer") if method == "qcfs" else ("layer", "hybrid")
    for mode in modes:
        got, expected = sb.simulate(fused, x, 5, mode=mode), sb.simulate(plain, x, 5, mode=mode)
        assert torch.equal(got, expected), mode
        assert expected.abs().sum() > 0


def test_hooks_see_the_summed_current_and_operation_counts_agree(monkeypatch):
    model = _random_resnet20(1)
    x = torch.randn(2, 3, 16, 16)
    fused = sb.convert(model, "qcfs")
    plain = _unfused(sb.convert(model, "qcfs"), monkeypatch)
    seen = {}
    for key, snn in (("fused", fused), ("plain", plain)):
        neuron = snn.neurons()["layers.1.0.act2"]
        handle = neuron.register_forward_pre_hook(
            lambda _m, inputs, key=key: seen.setdefault(key, input_current(inputs).clone()))
        sb.simulate(snn, x, 3, mode="layer")
        handle.remove()
    assert torch.equal(seen["fused"], seen["plain"])
    loader = [(x, torch.zeros(2, dtype=torch.long))]
    counts = [sb.evaluate(snn, loader, 4, mode="layer").operations.per_T[4]["snn_sops"]
              for snn in (fused, plain)]
    assert counts[0] == counts[1] > 0


def test_a_sum_used_elsewhere_is_left_alone():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(2, 2, 3, padding=1)
            self.b = nn.Conv2d(2, 2, 3, padding=1)
            self.act = QCFS(4, 1.0)
            self.head = nn.Linear(2 * 4 * 4, 3)

        def forward(self, x):
            s = self.a(x) + self.b(x)
            return self.head(torch.flatten(self.act(s) + s, 1))

    snn = sb.convert(Block().eval())
    assert network.fuse_residual_currents(snn.split.body) == 0
    assert _two_input_neurons(snn) == 0
    x = torch.randn(2, 2, 4, 4)
    assert torch.equal(sb.simulate(snn, x, 3, mode="step"), sb.simulate(snn, x, 3, mode="layer"))
