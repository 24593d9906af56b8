"""Checkpoints: round trip, atomic writes, clear errors for missing/corrupt files, resume."""

from __future__ import annotations

import json
import os

import pytest
import torch

from spikebridge.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    CheckpointError,
    atomic_write_bytes,
    load_checkpoint,
    save_checkpoint,
)
from spikebridge.models import create_model
from spikebridge.train import TrainConfig, train


def _config() -> dict:
    return {"architecture": "fashion_cnn", "num_classes": 10, "in_channels": 1,
            "model_kwargs": {"input_size": [8, 8]},
            "activation": {"kind": "qcfs", "levels": 4, "theta": 2.0}}


def _saved(tmp_path):
    torch.manual_seed(0)
    model = create_model("fashion_cnn", 10, 1, input_size=(8, 8))
    save_checkpoint(tmp_path, model, _config())
    return model


def test_round_trip(tmp_path):
    model = _saved(tmp_path)
    loaded, config = load_checkpoint(tmp_path)
    assert config["architecture"] == "fashion_cnn" and len(config["weights_sha256"]) == 64
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_checkpoint(tmp_path)
    _saved(tmp_path)
    (tmp_path / MODEL_FILE).unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_checkpoint(tmp_path)


def test_corrupt_files_are_detected(tmp_path):
    _saved(tmp_path)
    weights = tmp_path / MODEL_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    del config["weights_sha256"]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path)


def test_weights_of_another_architecture(tmp_path):
    _saved(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["architecture"] = "resnet20"
    del config["model_kwargs"]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not fit architecture 'resnet20'"):
        load_checkpoint(tmp_path)


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    atomic_write_bytes(target, b"old")

    def fail(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_resume_continues_exactly(tmp_path):
    """2 epochs in one go == 1 epoch, then --resume for the second (bitwise)."""
    cfg = TrainConfig(dataset="digits", epochs=2, batch_size=64, lr=0.05, seed=3)
    quiet = {"progress": False, "log": lambda _msg: None}
    full = train(cfg, tmp_path / "full", **quiet)
    # the same 2-epoch schedule, stopped after epoch 1 as a killed run would be
    first = train(cfg, tmp_path / "split", stop_after_epoch=1, **quiet)
    assert first["epochs_completed"] == 1
    resumed = train(cfg, tmp_path / "split", resume=True, **quiet)
    assert resumed["epochs_completed"] == 2
    a, _ = load_checkpoint(tmp_path / "full")
    b, _ = load_checkpoint(tmp_path / "split")
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), k
    assert resumed["history"][-1]["test_accuracy"] == full["history"][-1]["test_accuracy"]
    other = TrainConfig(**{**cfg.__dict__, "lr": 0.01})
    with pytest.raises(CheckpointError, match="different settings"):
        train(other, tmp_path / "split", resume=True, **quiet)
