"""End to end on real Fashion-MNIST with small budgets: the shipped model, and a fresh run."""

from __future__ import annotations

import pytest

import spikebridge as sb
from spikebridge.checkpoint import load_checkpoint
from spikebridge.data import BatchLoader, load_dataset
from spikebridge.shipped import SHIPPED_MODEL_DIR
from spikebridge.train import TrainConfig, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def test_images():
    return BatchLoader(load_dataset("fashion-mnist", "test").subset(1000, seed=1), 250)


def test_shipped_model_converts_with_its_accuracy(test_images):
    ann, config = load_checkpoint(SHIPPED_MODEL_DIR)
    assert config["activation"] == {"kind": "qcfs", "levels": 4, "theta": 2.0}
    qcfs = sb.evaluate(sb.convert(ann), test_images, [1, 32], ann=ann)
    cos = sb.evaluate(sb.convert(ann, "cos", rho=4), test_images, [1, 4])
    ann_acc = qcfs.ann_accuracy
    assert ann_acc >= 0.90
    assert qcfs.snn_accuracy[32] >= ann_acc - 0.015
    assert cos.snn_accuracy[4] >= ann_acc - 0.01
    assert cos.snn_accuracy[1] >= qcfs.snn_accuracy[1] + 0.05  # COS fixes T = 1


def test_train_convert_simulate_from_scratch(tmp_path):
    cfg = TrainConfig(epochs=2, train_subset=4000, batch_size=64, seed=0)
    config = train(cfg, tmp_path / "m", progress=False, log=lambda _m: None)
    ann, _ = load_checkpoint(tmp_path / "m")
    assert config["test_accuracy"] >= 0.70
    images = BatchLoader(load_dataset("fashion-mnist", "test").subset(500, seed=2), 250)
    qcfs = sb.evaluate(sb.convert(ann), images, [32], ann=ann)
    cos = sb.evaluate(sb.convert(ann, "cos", rho=4), images, [4])
    assert qcfs.snn_accuracy[32] >= qcfs.ann_accuracy - 0.03
    assert cos.snn_accuracy[4] >= qcfs.ann_accuracy - 0.03
