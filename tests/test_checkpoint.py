"""Checkpoints: round trip, signed manifest, clear errors for missing/corrupt/edited files,
overwrite rules, the read-only shipped model, resume (docs/reliability.md).

Crash/kill/disk-full/lock/bounded-parsing fault tests live in test_checkpoint_faults.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
import torch

from spikebridge import checkpoint as ckpt_module
from spikebridge.checkpoint import (
    ALLOW_UNVERIFIED_ENV,
    CONFIG_FILE,
    CURRENT_LINK,
    MANIFEST_FILE,
    MODEL_FILE,
    SNAPSHOTS_DIR,
    TRAIN_STATE_FILE,
    CheckpointError,
    CheckpointWriter,
    UnverifiedCheckpointWarning,
    atomic_write_bytes,
    load_checkpoint,
    load_config,
    read_checkpoint,
    save_checkpoint,
)
from spikebridge.cli import main
from spikebridge.models import create_model
from spikebridge.shipped import SHIPPED_MODEL_DIR
from spikebridge.train import TrainConfig, train


def _config() -> dict:
    return {"architecture": "fashion_cnn", "num_classes": 10, "in_channels": 1,
            "model_kwargs": {"input_size": [8, 8]},
            "activation": {"kind": "qcfs", "levels": 4, "theta": 2.0}}


def _saved(directory, epoch: int = 1):
    torch.manual_seed(epoch)
    model = create_model("fashion_cnn", 10, 1, input_size=(8, 8))
    save_checkpoint(directory, model, {**_config(), "epochs_completed": epoch}, {"epoch": epoch})
    return model


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values(), strict=True))


def _snapshot(directory):
    return directory / SNAPSHOTS_DIR / os.readlink(directory / CURRENT_LINK).split("/")[-1]


def _legacy(directory, *, weights_sha: bool):
    """A spikebridge-0.1 style directory: files side by side, no manifest."""
    directory.mkdir()
    model = _saved(directory / "src")
    shutil.copy(directory / "src" / MODEL_FILE, directory / MODEL_FILE)
    config = _config()
    if weights_sha:
        config["weights_sha256"] = hashlib.sha256((directory / MODEL_FILE).read_bytes()).hexdigest()
    (directory / CONFIG_FILE).write_text(json.dumps(config))
    shutil.rmtree(directory / "src")
    return model


# ---------------------------------------------------------------------------------------------
# layout, round trip, verification


def test_round_trip_and_layout(tmp_path):
    model = _saved(tmp_path / "c", epoch=3)
    loaded, config = load_checkpoint(tmp_path / "c")
    assert _equal(model, loaded) and config["epochs_completed"] == 3
    ck = read_checkpoint(tmp_path / "c", train_state=True)
    assert ck.verified and ck.epoch == 3 and ck.train_state == {"epoch": 3}
    snap = _snapshot(tmp_path / "c")
    assert sorted(p.name for p in snap.iterdir()) == sorted(
        [MODEL_FILE, CONFIG_FILE, TRAIN_STATE_FILE, MANIFEST_FILE])
    manifest = json.loads((tmp_path / "c" / MANIFEST_FILE).read_text())  # convenience link
    assert manifest["epoch"] == 3
    for name in (MODEL_FILE, CONFIG_FILE, TRAIN_STATE_FILE):
        assert manifest["files"][name]["sha256"] == hashlib.sha256(
            (tmp_path / "c" / name).read_bytes()).hexdigest()
    # a second commit replaces the first; the superseded snapshot is garbage-collected
    _saved(tmp_path / "c", epoch=4)
    assert read_checkpoint(tmp_path / "c").epoch == 4
    assert len(list((tmp_path / "c" / SNAPSHOTS_DIR).iterdir())) == 1


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load_checkpoint(tmp_path)
    _saved(tmp_path / "c")
    (_snapshot(tmp_path / "c") / MODEL_FILE).unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_checkpoint(tmp_path / "c")
    shutil.rmtree(_snapshot(tmp_path / "c"))
    with pytest.raises(CheckpointError, match="does not exist; the checkpoint was damaged"):
        load_checkpoint(tmp_path / "c")


def test_corrupt_weights_are_detected(tmp_path):
    _saved(tmp_path)
    weights = tmp_path / MODEL_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # truncated (written through the link)
    with pytest.raises(CheckpointError, match="does not match its SHA-256.*truncated"):
        load_checkpoint(tmp_path)
    with pytest.warns(UnverifiedCheckpointWarning), \
            pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(tmp_path, allow_unverified=True)
    (_snapshot(tmp_path) / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path)


def test_edited_config_is_detected(tmp_path, monkeypatch):
    """Editing L = 4 -> 8 in config.json changes the converted SNN: it must not go unnoticed."""
    monkeypatch.delenv(ALLOW_UNVERIFIED_ENV, raising=False)
    _saved(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["activation"]["levels"] = 8
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    for load in (load_checkpoint, load_config):
        with pytest.raises(CheckpointError,
                           match="config.json was edited after the checkpoint was written"):
            load(tmp_path)
    with pytest.warns(UnverifiedCheckpointWarning, match="was edited"):
        _, loaded = load_checkpoint(tmp_path, allow_unverified=True)
    assert loaded["activation"]["levels"] == 8
    monkeypatch.setenv(ALLOW_UNVERIFIED_ENV, "1")
    with pytest.warns(UnverifiedCheckpointWarning):
        assert not read_checkpoint(tmp_path).verified
    with pytest.raises(CheckpointError, match="was edited"):  # explicit False beats the env
        load_checkpoint(tmp_path, allow_unverified=False)


def test_missing_hashes_are_rejected_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_UNVERIFIED_ENV, raising=False)
    model = _legacy(tmp_path / "old", weights_sha=False)
    with pytest.raises(CheckpointError, match="has no manifest.json: no hash vouches"):
        load_checkpoint(tmp_path / "old")
    with pytest.warns(UnverifiedCheckpointWarning, match="no manifest"):
        loaded, _ = load_checkpoint(tmp_path / "old", allow_unverified=True)
    assert _equal(model, loaded)
    # a legacy weights_sha256 is still checked when unverified loading is allowed
    _legacy(tmp_path / "old2", weights_sha=True)
    config = json.loads((tmp_path / "old2" / CONFIG_FILE).read_text())
    config["weights_sha256"] = "0" * 64
    (tmp_path / "old2" / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.warns(UnverifiedCheckpointWarning, match="belong to another run"):
        load_checkpoint(tmp_path / "old2", allow_unverified=True)
    # a manifest lacking a file's hash is refused too
    _saved(tmp_path / "c")
    manifest = json.loads((tmp_path / "c" / MANIFEST_FILE).read_text())
    del manifest["files"][CONFIG_FILE]
    (_snapshot(tmp_path / "c") / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="does not list config.json"):
        load_checkpoint(tmp_path / "c")


def test_weights_of_another_architecture(tmp_path):
    torch.manual_seed(0)
    model = create_model("fashion_cnn", 10, 1, input_size=(8, 8))
    save_checkpoint(tmp_path, model, {**_config(), "architecture": "resnet20", "model_kwargs": {}})
    with pytest.raises(CheckpointError, match="does not fit architecture 'resnet20'"):
        load_checkpoint(tmp_path)


def test_a_dereferenced_copy_still_loads(tmp_path):
    model = _saved(tmp_path / "c")
    shutil.copytree(tmp_path / "c", tmp_path / "copy")  # symlinks become plain files/dirs
    loaded, _ = load_checkpoint(tmp_path / "copy")
    assert _equal(model, loaded) and read_checkpoint(tmp_path / "copy").verified
    with pytest.raises(CheckpointError, match="links dereferenced"):
        CheckpointWriter(tmp_path / "copy", resume=True)


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


def test_leftovers_survive_a_read_and_go_with_the_next_write(tmp_path):
    """Reading never deletes (docs/reliability.md §1): the leftovers of an interrupted commit
    are ignored by a read and removed by the next writer, under the lock."""
    _saved(tmp_path)
    snapshots = tmp_path / SNAPSHOTS_DIR
    (snapshots / ".tmp-epoch-0002-deadbeef").mkdir()
    (snapshots / ".tmp-epoch-0002-deadbeef" / MODEL_FILE).write_bytes(b"partial")
    (snapshots / "epoch-0002-cafecafe").mkdir()  # renamed but never published
    os.symlink("snapshots/epoch-0002-cafecafe", tmp_path / ".current.tmp-cafecafe")
    (tmp_path / ".config.json.1234.tmp").write_bytes(b"{")
    (tmp_path / "notes.txt").write_text("the user's own file")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert read_checkpoint(tmp_path).epoch == 1
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    CheckpointWriter(tmp_path, resume=True).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [CURRENT_LINK, SNAPSHOTS_DIR, MODEL_FILE, CONFIG_FILE, TRAIN_STATE_FILE, MANIFEST_FILE,
         "notes.txt"])
    assert len(list(snapshots.iterdir())) == 1


# ---------------------------------------------------------------------------------------------
# the shipped model: signed, verified, read-only


def test_shipped_model_is_signed_and_read_only(tmp_path, capsys):
    ck = read_checkpoint(SHIPPED_MODEL_DIR)
    assert ck.verified and ck.epoch == 12 and ck.source == SHIPPED_MODEL_DIR
    weights = (SHIPPED_MODEL_DIR / MODEL_FILE).read_bytes()
    assert hashlib.sha256(weights).hexdigest() == (
        "82c55c447ddf4f01b931e125c51526eb2a589080c9a25c63df431f83a3d51502")  # bytes unchanged
    assert ck.config["activation"] == {"kind": "qcfs", "levels": 4, "theta": 2.0}
    before = sorted((p.name, p.stat().st_mtime_ns) for p in SHIPPED_MODEL_DIR.iterdir())
    model = create_model("fashion_cnn", 10, 1, input_size=(8, 8))
    for target in (SHIPPED_MODEL_DIR, SHIPPED_MODEL_DIR / "sub", SHIPPED_MODEL_DIR.parent):
        with pytest.raises(CheckpointError, match="read-only"):
            save_checkpoint(target, model, _config())
    with pytest.raises(CheckpointError, match="read-only"):
        atomic_write_bytes(SHIPPED_MODEL_DIR / "results.json", b"{}")
    assert main(["train", "--out", str(SHIPPED_MODEL_DIR), "--overwrite", "--dataset", "digits",
                 "--quiet"]) == 2
    assert "read-only" in capsys.readouterr().err
    assert main(["compare", "--out", str(SHIPPED_MODEL_DIR), "--T", "1", "--limit", "5",
                 "--methods", "qcfs", "--quiet"]) == 2
    assert "read-only" in capsys.readouterr().err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in SHIPPED_MODEL_DIR.iterdir()) == before


# ---------------------------------------------------------------------------------------------
# no silent overwrite; output-path problems found before any work


@pytest.fixture
def no_training(monkeypatch):
    """Fail loudly if a command gets as far as loading data (i.e. starts training work)."""
    def forbidden(*_args, **_kwargs):
        raise AssertionError("training work started before the output directory was checked")

    monkeypatch.setattr("spikebridge.train.open_dataset", forbidden)


def _train_cli(out, *extra):
    return main(["train", "--out", str(out), "--dataset", "digits", "--epochs", "1", "--quiet",
                 *extra])


def test_existing_checkpoint_needs_resume_or_overwrite(tmp_path, capsys, no_training):
    _saved(tmp_path / "c", epoch=2)
    before = os.readlink(tmp_path / "c" / CURRENT_LINK)
    assert _train_cli(tmp_path / "c") == 2
    err = capsys.readouterr().err
    assert "already holds a checkpoint (epoch 2); pass --resume to continue it or --overwrite" \
        in err and err.count("\n") == 1
    assert _train_cli(tmp_path / "c", "--resume", "--overwrite") == 2
    assert "exclude each other" in capsys.readouterr().err
    assert os.readlink(tmp_path / "c" / CURRENT_LINK) == before  # untouched
    (tmp_path / "empty").mkdir()
    assert _train_cli(tmp_path / "empty", "--resume") == 2
    assert "holds no checkpoint" in capsys.readouterr().err
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "thesis.tex").write_text("")
    assert _train_cli(tmp_path / "stuff") == 2
    assert "is not empty and is not a spikebridge checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "stuff" / ".spikebridge.lock").exists()


def test_overwrite_replaces_only_at_the_first_commit(tmp_path):
    old = _saved(tmp_path, epoch=5)
    with CheckpointWriter(tmp_path, overwrite=True) as writer:
        loaded, _ = load_checkpoint(tmp_path)  # the old checkpoint stays valid meanwhile
        assert _equal(old, loaded)
        new = create_model("fashion_cnn", 10, 1, input_size=(8, 8))
        writer.commit(new, {**_config(), "epochs_completed": 1}, {"epoch": 1})
    loaded, config = load_checkpoint(tmp_path)
    assert _equal(new, loaded) and config["epochs_completed"] == 1


def test_output_path_problems_are_found_first(tmp_path, capsys, no_training, monkeypatch):
    (tmp_path / "file").write_text("x")
    for out, message in [(tmp_path / "file", "exists and is a file, not a directory"),
                         (tmp_path / "file" / "sub", "is a file, not a directory")]:
        assert _train_cli(out) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # root ignores permission bits: emulate a read-only mount
            real = os.access
            monkeypatch.setattr(ckpt_module.os, "access",
                                lambda p, mode: False if str(p).startswith(str(ro))
                                else real(p, mode))
        for out in (ro, ro / "new"):
            assert _train_cli(out) == 2
            assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


# ---------------------------------------------------------------------------------------------
# resume


def test_resume_continues_exactly(tmp_path):
    """2 epochs in one go == 1 epoch, then --resume for the second (bitwise)."""
    cfg = TrainConfig(dataset="digits", epochs=2, batch_size=64, lr=0.05, seed=3)
    quiet = {"progress": False, "log": lambda _msg: None}
    full = train(cfg, tmp_path / "full", **quiet)
    # the same 2-epoch schedule, stopped after epoch 1 as a killed run would be
    first = train(cfg, tmp_path / "split", stop_after_epoch=1, **quiet)
    assert first["epochs_completed"] == 1
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        train(cfg, tmp_path / "split", **quiet)
    resumed = train(cfg, tmp_path / "split", resume=True, **quiet)
    assert resumed["epochs_completed"] == 2
    a, _ = load_checkpoint(tmp_path / "full")
    b, _ = load_checkpoint(tmp_path / "split")
    assert _equal(a, b)
    assert resumed["history"][-1]["test_accuracy"] == full["history"][-1]["test_accuracy"]
    other = TrainConfig(**{**cfg.__dict__, "lr": 0.01})
    with pytest.raises(CheckpointError, match="different settings"):
        train(other, tmp_path / "split", resume=True, **quiet)
    # a tampered training state is refused for resume
    state = _snapshot(tmp_path / "split") / TRAIN_STATE_FILE
    state.write_bytes(state.read_bytes() + b"\0")
    with pytest.raises(CheckpointError, match="train_state.pt does not match its SHA-256"):
        train(cfg, tmp_path / "split", resume=True, **quiet)
