"""A user's own network (issue #18, first part): every obstacle named at once
(check_convertible), ReLU-family activations rewritten as QCFS (to_qcfs), max-pooling swapped
for average pooling, x.mean / clamp(0, a) understood, options that do not apply refused."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikebridge as sb
from spikebridge.activations import QCFS
from spikebridge.calibration import CalibrationData
from spikebridge.methods import WrongSourceModelError


class _Custom(nn.Module):
    def forward(self, x):
        return torch.sigmoid(x) + 1.0


class _Unconvertible(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.gelu, self.leaky = nn.Conv3d(1, 4, 3), nn.GELU(), nn.LeakyReLU()
        self.pool, self.custom, self.fc = nn.MaxPool3d(2), _Custom(), nn.Linear(4, 3)

    def forward(self, x):
        x = self.pool(self.leaky(self.gelu(self.conv(x))))
        return self.fc(self.custom(x).mean((2, 3, 4)))


def test_check_convertible_lists_every_problem_in_one_call():
    problems = sb.check_convertible(_Unconvertible())
    ops = {p.op for p in problems}
    assert {"GELU", "LeakyReLU", "MaxPool3d", "sigmoid"} <= ops
    assert any("inside module 'custom'" in p.why for p in problems)
    assert all(len(p.why) < 400 for p in problems)  # a sentence or two, not a paragraph
    with pytest.raises(sb.UnsupportedLayerError) as caught:
        sb.convert(_Unconvertible().eval())
    assert len(caught.value.problems) == len(problems)
    assert f"{len(problems)} problem(s)" in str(caught.value)


class _ReLUNet(nn.Module):
    """What users write: BatchNorm, a residual block, F.relu, ReLU6, clamp, max-pooling, mean."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.act, self.pool = nn.ReLU(), nn.MaxPool2d(2)
        self.c2, self.c3 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.act6, self.fc = nn.ReLU6(), nn.Linear(8, 10)

    def forward(self, x):
        x = self.pool(self.act(self.bn(self.c1(x))))
        y = F.relu(self.c2(x))
        x = torch.clamp(self.c3(y) + x, 0, 3)
        return self.fc(self.act6(x).mean((2, 3)))


def _nearest_rank(values: torch.Tensor, p: float) -> float:
    ordered = values.flatten().sort().values
    rank = max(1, math.ceil(Fraction(str(p)) * ordered.numel() / 100))
    return float(ordered[rank - 1])


def test_to_qcfs_replaces_every_relu_family_activation_with_thresholds_from_data():
    torch.manual_seed(0)
    net = _ReLUNet().eval()
    x = torch.randn(48, 1, 12, 12)
    assert sb.check_convertible(net) == []  # MaxPool2d converts: a spiking max-pool
    qcfs = sb.to_qcfs(net, 4, data=[(x[:24], None), (x[24:], None)], maxpool="avg")
    activations = [m for m in qcfs.modules() if isinstance(m, QCFS)]
    assert len(activations) == 4 and all(m.levels == 4 for m in activations)
    assert not any(isinstance(m, nn.MaxPool2d | nn.ReLU | nn.ReLU6) for m in qcfs.modules())
    assert sb.check_convertible(qcfs) == []
    with torch.no_grad():  # θ of the first one: the 99.9th percentile of its non-zero outputs
        out = net.act(net.bn(net.c1(x)))
    assert float(qcfs.act.theta) == pytest.approx(_nearest_rank(out[out != 0], 99.9))
    # the original is untouched, and the result converts and simulates with COS
    assert isinstance(net.act, nn.ReLU) and isinstance(net.pool, nn.MaxPool2d)
    snn = sb.convert(qcfs.eval(), "cos", input_shape=(1, 12, 12))
    assert sb.simulate(snn, x[:3], 4).shape == (4, 3, 10)
    result = sb.evaluate(snn, [(x[:8], torch.zeros(8, dtype=torch.long))], [1, 4])
    assert result.operations.per_T[4]["snn_sops"] > 0  # x.mean is counted as pooling


def test_to_qcfs_without_data_uses_clip_values_and_refuses_plain_relus():
    class Clipped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.a6, self.fc = nn.Conv2d(1, 4, 3), nn.ReLU6(), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.clamp(self.a6(self.c(x)), 0, 2.5).mean((2, 3)))

    q = sb.to_qcfs(Clipped(), 8)
    thetas = sorted(float(m.theta) for m in q.modules() if isinstance(m, QCFS))
    assert thetas == [2.5, 6.0]
    with pytest.raises(ValueError, match="plain ReLUs"):
        sb.to_qcfs(_ReLUNet())
    with pytest.raises(ValueError, match="maxpool"):
        sb.to_qcfs(_ReLUNet(), maxpool="max")


def test_thresholds_for_a_model_that_has_them_all_are_refused():
    model = nn.Sequential(nn.Linear(3, 3), QCFS(4, 1.0), nn.Linear(3, 2)).eval()
    with pytest.raises(ValueError, match="every activation of this model has one"):
        sb.convert(model, "qcfs", thresholds=2.0)
    sb.convert(model, "qcfs", thresholds={"1": 2.0})  # an explicit override stays possible


def test_clamp_below_zero_is_named():
    class Signed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return torch.clamp(self.fc(x), -1, 1)

    problems = sb.check_convertible(Signed())
    assert len(problems) == 1 and "clamps to [-1, 1]" in problems[0].why


def test_a_relu_model_given_to_a_qcfs_method_is_pointed_to_to_qcfs():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    with pytest.raises(WrongSourceModelError, match=r"spikebridge\.to_qcfs\(model.*maxnorm"):
        sb.convert(net.eval(), "cos")


def test_weight_normalization_passes_through_max_pooling():
    """Max-pooling commutes with a positive layer scale: a ReLU CNN with max-pools converts with
    the data-based methods, and the SNN's rates reproduce the ANN's predictions."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(8 * 4 * 4, 5)).eval()
    x = torch.rand(64, 1, 16, 16)
    with torch.no_grad():
        expected = net(x).argmax(-1)
    for method in ("maxnorm", "robustnorm"):
        snn = sb.convert(net, method, calibration_data=CalibrationData([(x, None)], 64))
        agreement = (sb.simulate(snn, x, 64).mean(0).argmax(-1) == expected).float().mean()
        assert agreement > 0.95, (method, agreement)
