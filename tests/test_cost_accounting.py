"""One definition of COS's cost (docs/energy.md): latency.presented, latency.frames_per_layer,
per-layer SOPs summing exactly to the totals, pre-simulation as its own part; the first-layer
and bias charges at T < ρ."""

from __future__ import annotations

import math

import pytest
import torch

import spikebridge as sb
from spikebridge.activations import ActivationSpec
from spikebridge.checkpoint import load_checkpoint
from spikebridge.data import BatchLoader, load_dataset
from spikebridge.energy import EnergyModel
from spikebridge.models import create_model
from spikebridge.reporting import evaluation_record
from spikebridge.shipped import SHIPPED_MODEL_DIR

_SOURCES = {
    "qcfs": "qcfs:L=4,theta=2", "cos": "qcfs:L=4,theta=2", "cos-frozen": "qcfs:L=4,theta=2",
    "slip": "slip:L=4,c=0.5,theta=2", "strelu": "strelu:theta=2",
    "leaky-threshold": "leaky_threshold:theta=2,alpha=0.1,neg_theta=0.5",
    "threshold-relu": "clipped_relu:theta=2", "ecc": "relu", "maxnorm": "relu",
    "robustnorm": "relu", "threshold-balancing": "relu", "rmp": "relu", "opi": "relu",
}
STEPS = [1, 2, 4, 6]


def _record(snn, batches, steps=STEPS, energy=None):
    result = sb.evaluate(snn, batches, steps, energy=energy)
    return evaluation_record(result, snn, steps, dataset="d", model="m")


def _layer_sum(record, t: str) -> float:
    return sum(v[t].get("sops_in", 0.0) + v[t].get("sops_in_presimulation", 0.0)
               for v in record["operations"]["layers"].values() if t in v)


def test_every_method_is_covered():
    assert set(_SOURCES) == set(sb.list_methods())


@pytest.mark.parametrize("method", sorted(_SOURCES))
def test_per_layer_sops_sum_to_the_total_at_every_T(method):
    torch.manual_seed(0)
    ann = create_model("fashion_cnn", 10, 1, input_size=(8, 8),
                       activation=ActivationSpec.parse(_SOURCES[method])).eval()
    x = torch.rand(12, 1, 8, 8)
    batches = [(x, torch.zeros(12, dtype=torch.long))]
    snn = sb.convert(ann, method, calibration_data=batches, calibration_samples=12, rho=4) \
        if method == "cos" else sb.convert(ann, method, calibration_data=batches,
                                          calibration_samples=12)
    record = _record(snn, batches)
    for t in map(str, STEPS):
        total = record["ops"][t]["snn_sops"]
        assert math.isclose(_layer_sum(record, t), total, rel_tol=1e-12, abs_tol=1e-9), t
        latency = record["latency"][t]
        expected = (4 + max(int(t), 4)) if method == "cos" else int(t)
        assert latency["frames_per_layer"] == expected
        assert latency["presented"] == latency["total"] == (4 if method == "cos" else 0) + int(t)


@pytest.fixture(scope="module")
def shipped():
    ann, _ = load_checkpoint(SHIPPED_MODEL_DIR)
    test = load_dataset("fashion-mnist", "test").subset(40, seed=0)
    return ann, BatchLoader(test, 40)


def test_cos_at_T1_computes_8_frames_per_layer_and_its_layers_add_up(shipped):
    ann, batches = shipped
    record = _record(sb.convert(ann, "cos", rho=4), batches, [1, 4, 8])
    assert record["latency"]["1"]["frames_per_layer"] == 8
    assert record["latency"]["1"]["presented"] == 5
    ops = record["ops"]["1"]
    assert math.isclose(_layer_sum(record, "1"), ops["snn_sops"], rel_tol=1e-12)
    # T = 1 costs what T = 4 costs (the same 8 frames), far more than QCFS at T = 1
    assert math.isclose(ops["snn_sops"], record["ops"]["4"]["snn_sops"], rel_tol=1e-3)
    qcfs = _record(sb.convert(ann, "qcfs"), batches, [1])
    assert ops["snn_sops"] > 5 * qcfs["ops"]["1"]["snn_sops"]


def test_cos_first_layer_charged_every_frame_it_computes(shipped):
    """first_layer="every_step": the first layer's MACs × frames per layer (ρ·iterations +
    max(T, ρ)), i.e. 8× the once-per-image charge at T = 1, 12× at T = 8 (ρ = 4)."""
    ann, batches = shipped
    snn = sb.convert(ann, "cos", rho=4)
    once = _record(snn, batches, [1, 8])
    every = _record(snn, batches, [1, 8], energy=EnergyModel(first_layer="every_step"))
    for t, frames in (("1", 8), ("8", 12)):
        assert math.isclose(every["ops"][t]["snn_first_layer_macs"],
                            frames * once["ops"][t]["snn_first_layer_macs"], rel_tol=1e-12)


def test_cos_bias_accumulations_count_the_real_frames(shipped):
    """Biases are added once per real frame a layer computes: max(T, ρ) frames for COS (the
    pre-simulation replays stored currents, biases included), T for QCFS."""
    ann, batches = shipped
    cos = _record(sb.convert(ann, "cos", rho=4), batches, [1, 4, 8])
    qcfs = _record(sb.convert(ann, "qcfs"), batches, [1, 4, 8])
    per_frame = qcfs["ops"]["1"]["bias_acs"]
    assert per_frame > 0
    for t, frames in (("1", 4), ("4", 4), ("8", 8)):
        assert math.isclose(cos["ops"][t]["bias_acs"], frames * per_frame, rel_tol=1e-12)
