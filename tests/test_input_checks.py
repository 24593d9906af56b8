"""Inputs are checked once at the edge of simulate/evaluate (spikebridge.input_checks).

Wrong shapes and dtypes give an error naming the expected shape instead of a raw matrix error
from deep inside the graph; NaN/inf samples are an error by default, and with
``nonfinite="propagate"`` they get NaN outputs and count as wrong — never a confident answer.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import spikebridge as sb
from spikebridge.checkpoint import load_checkpoint
from spikebridge.input_checks import InputError, NonFiniteInputError
from spikebridge.models import create_model
from spikebridge.shipped import SHIPPED_MODEL_DIR


@pytest.fixture(scope="module")
def shipped():
    ann, _config = load_checkpoint(SHIPPED_MODEL_DIR)
    return ann, sb.convert(ann, "cos")


@pytest.mark.parametrize(("x", "message"), [
    (torch.zeros(2, 1, 32, 32), r"shape \[2, 1, 32, 32\]; the network expects \[B, 1, 28, 28\]"),
    (torch.zeros(2, 3, 28, 28), r"shape \[2, 3, 28, 28\]; the network expects \[B, 1, 28, 28\]"),
    (torch.zeros(1, 28, 28), r"expects \[B, 1, 28, 28\]"),
    (torch.zeros(784), r"a batch dimension first"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), r"torch.uint8; .*scale them to \[0, 1\]"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.float64), r"float64; the network computes in "
                                                     r"torch.float32"),
    ([[0.0]], r"must be a torch.Tensor"),
])
def test_inputs_that_do_not_fit_name_the_expected_shape(shipped, x, message):
    _ann, snn = shipped
    with pytest.raises(InputError, match=message):
        sb.simulate(snn, x, 2)


def test_checkpoints_record_their_input_shape(shipped):
    ann, snn = shipped
    assert ann.input_shape == (1, 28, 28) and snn.input_shape == (1, 28, 28)


def test_without_a_known_shape_the_channels_are_checked():
    torch.manual_seed(0)
    snn = sb.convert(create_model("fashion_cnn", 10, 1))  # a bare model: no input_shape
    assert snn.input_shape is None
    with pytest.raises(InputError, match="first layer expects 1 channel"):
        sb.simulate(snn, torch.zeros(2, 3, 28, 28), 1)
    explicit = sb.convert(create_model("fashion_cnn", 10, 1), input_shape=(1, 28, 28))
    with pytest.raises(InputError, match=r"expects \[B, 1, 28, 28\]"):
        sb.simulate(explicit, torch.zeros(2, 1, 20, 20), 1)
    with pytest.raises(ValueError, match="input_shape must hold positive sizes"):
        sb.convert(create_model("fashion_cnn", 10, 1), input_shape=(1, 0, 28))


def test_a_nan_image_is_an_error_by_default(shipped):
    """Before the check: NaN never reaches θ, the SNN answered class 0 with finite logits."""
    _ann, snn = shipped
    x = torch.randn(4, 1, 28, 28)
    x[2, 0, 5, 5] = math.nan
    x[3, 0, 0, 0] = math.inf
    with pytest.raises(NonFiniteInputError, match=r"2 of 4 input sample\(s\).*index 2, 3"):
        sb.simulate(snn, x, 2)


def test_propagated_nan_gives_nan_outputs_and_counts_as_wrong(shipped):
    ann, snn = shipped
    x = torch.randn(4, 1, 28, 28)
    clean = sb.simulate(snn, x, 3)
    x[1] = math.nan
    out = sb.simulate(snn, x, 3, nonfinite="propagate")
    assert out[:, 1].isnan().all()
    keep = [0, 2, 3]
    assert torch.equal(out[:, keep], clean[:, keep])  # the other samples are untouched
    with torch.no_grad():
        labels = ann(x.nan_to_num(0.0)).argmax(-1)  # labels the network gets right elsewhere
    labels[1] = int(out[0, 0].argmax())  # whatever argmax(NaN) would pick must not count
    result = sb.evaluate(snn, [(x, labels)], [1, 3], ann=ann, nonfinite="propagate")
    assert result.ann_accuracy <= 3 / 4  # the ANN's NaN row is wrong too
    assert all(acc <= 3 / 4 for acc in result.snn_accuracy.values())
    with pytest.raises(NonFiniteInputError):
        sb.evaluate(snn, [(x, labels)], [1], ann=ann)
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        sb.simulate(snn, x, 1, nonfinite="ignore")


def test_correct_over_time_never_counts_a_nan_row():
    from spikebridge.simulate import correct_over_time

    outputs = torch.tensor([[[math.nan, 0.0], [0.0, 1.0]]])  # [T=1, B=2, K=2]
    assert correct_over_time(outputs, torch.tensor([0, 1])).tolist() == [1]


def test_layer_without_conv_has_no_channel_check():
    snn = sb.convert(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)),
                     "maxnorm", calibration_data=[(torch.rand(8, 4), None)])
    assert sb.simulate(snn, torch.rand(2, 4), 2).shape == (2, 2, 2)
