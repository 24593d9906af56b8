"""The worked example of docs/your-model.md on a small budget (issue #18): a user-written ReLU
CNN (BatchNorm, two max-pools, a residual block, ``F.relu``, ``x.mean`` pooling) trained as ReLU
on real Fashion-MNIST images, rewritten by ``to_qcfs`` both ways (max-pooling kept as spiking
max-pools, and swapped for average pooling), fine-tuned, converted with QCFS and COS.

The network and its training loop are the benchmark's (``bench/your_model.py``, the full-budget
run whose table docs/your-model.md shows); this test runs them on fewer images and epochs, so its
margins are wider than the documented targets (COS at T = 4 within 0.5 pt of the fine-tuned
ANN, the fine-tuned ANN within 1 pt of the ReLU ANN), and the average-pooling route is only
asked to recover from its swap, which takes more epochs than this budget."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import spikebridge as sb
from spikebridge.data import BatchLoader, load_dataset
from spikebridge.spiking_maxpool import SpikingMaxPool2d

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from your_model import UserNet, accuracy, fit  # noqa: E402 - the documented example itself

pytestmark = pytest.mark.slow

STEPS = (1, 2, 4, 8)


@pytest.fixture(scope="module")
def example():
    torch.manual_seed(0)
    full = load_dataset("fashion-mnist", "train")
    train = BatchLoader(full.subset(12000, seed=0), 128, shuffle=True, seed=0)
    test = list(BatchLoader(load_dataset("fashion-mnist", "test").subset(1000, seed=0), 250))
    calibration = [(x, None) for x, _ in BatchLoader(full.subset(256, seed=1), 128)]
    relu = UserNet()
    fit(relu, train, 3, 0.05)
    rows = {"relu": accuracy(relu, test)}
    for route in ("keep", "avg"):
        qcfs = sb.to_qcfs(relu, 4, data=calibration, maxpool=route)
        before = accuracy(qcfs.eval(), test)
        fit(qcfs, train, 2, 0.005)
        row = {"before": before, "ann": accuracy(qcfs, test)}
        for method in ("qcfs", "cos"):
            snn = sb.convert(qcfs, method, input_shape=(1, 28, 28))
            row[method] = sb.evaluate(snn, test, list(STEPS), count_operations=False).snn_accuracy
            row[f"{method}_pools"] = sum(isinstance(m, SpikingMaxPool2d)
                                         for m in snn.network.modules())
        rows[route] = row
    return rows


def test_the_relu_network_learns(example):
    assert example["relu"] > 0.78, example


def test_keeping_max_pooling_the_fine_tuned_qcfs_network_stays_near_the_relu_one(example):
    assert example["keep"]["ann"] > example["relu"] - 0.02, example


def test_fine_tuning_recovers_from_the_swap_to_average_pooling(example):
    """The swap changes the function far more than quantization does (docs/your-model.md: it
    needs more epochs than this budget gives to come within 1 pt of the ReLU network)."""
    avg = example["avg"]
    assert avg["before"] < example["keep"]["before"], example
    assert avg["ann"] > avg["before"] + 0.05, example


@pytest.mark.parametrize("route", ["keep", "avg"])
def test_cos_at_four_steps_matches_its_ann_and_beats_plain_conversion(example, route):
    row = example[route]
    assert row["cos"][4] > row["ann"] - 0.015, example
    assert row["cos"][4] > row["qcfs"][4] + 0.05, example  # the offset spikes COS removes
    assert row["cos"][8] >= row["cos"][1], example


def test_the_routes_differ_where_they_should(example):
    assert example["keep"]["cos_pools"] == 2 and example["avg"]["cos_pools"] == 0
