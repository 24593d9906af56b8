"""The edges of issue #15 (docs/reliability.md): reads that never delete, links never followed,
a bound on every size, our own errors for API misuse, Ctrl-C at any instant, exit codes."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import spikebridge as sb
from spikebridge import checkpoint as ckpt_module
from spikebridge.activations import QCFS
from spikebridge.checkpoint import (
    CONFIG_FILE,
    CURRENT_LINK,
    LOCK_FILE,
    MODEL_FILE,
    SNAPSHOTS_DIR,
    CheckpointError,
    CheckpointWriteError,
    CheckpointWriter,
    read_checkpoint,
    save_checkpoint,
    write_manifest,
)
from spikebridge.cli import _describe_failure, main
from spikebridge.distributed import WorkerDiedError
from spikebridge.evaluation import Evaluation
from spikebridge.input_checks import InputError
from spikebridge.limits import MAX_STEPS, ResourceLimitError, UsageError, check_integer
from spikebridge.models import create_model
from spikebridge.shipped import SHIPPED_MODEL_DIR
from spikebridge.train import TrainConfig, train

_CONFIG = {"architecture": "fashion_cnn", "num_classes": 10, "in_channels": 1,
           "model_kwargs": {"input_size": [8, 8]},
           "activation": {"kind": "qcfs", "levels": 4, "theta": 2.0}}


def _saved(directory: Path, epoch: int = 1, seed: int = 0) -> None:
    torch.manual_seed(seed)
    model = create_model("fashion_cnn", 10, 1, input_size=(8, 8))
    save_checkpoint(directory, model, {**_CONFIG, "epochs_completed": epoch}, {"epoch": epoch})


def _tree(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def _snapshots(directory: Path) -> list[str]:
    return sorted(p.name for p in (directory / SNAPSHOTS_DIR).iterdir())


# ---------------------------------------------------------------------------------------------
# 1. a read never deletes; `current` is resolved strictly inside the directory


@pytest.mark.parametrize("tamper", ["other-checkpoint", "dangling", "itself", "dotdot",
                                    "regular-file"])
def test_a_read_of_a_tampered_directory_deletes_nothing(tmp_path, tamper, capsys):
    good, other = tmp_path / "good", tmp_path / "good2"
    _saved(good, seed=1)
    _saved(other, seed=2)
    current = good / CURRENT_LINK
    os.unlink(current)
    if tamper == "other-checkpoint":
        os.symlink(os.path.realpath(other / CURRENT_LINK), current)
    elif tamper == "dangling":
        os.symlink(f"{SNAPSHOTS_DIR}/nope", current)
    elif tamper == "itself":
        os.symlink(CURRENT_LINK, current)
    elif tamper == "dotdot":
        os.symlink(f"{SNAPSHOTS_DIR}/../../good2/{SNAPSHOTS_DIR}/{_snapshots(other)[0]}",
                   current)
    else:
        current.write_text("snapshots/epoch-0001")
    before = _tree(good)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(good)
    assert "\n" not in str(caught.value)
    assert _tree(good) == before  # every snapshot still on disk
    assert main(["evaluate", "--model", str(good), "--T", "1", "--limit", "8", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert _tree(good) == before
    if tamper == "regular-file":
        assert "regular file" in err and "Invalid argument" not in err


def test_a_writer_never_deletes_the_last_intact_snapshot(tmp_path):
    """``current`` dangles: --overwrite keeps the newest intact snapshot until its own commit."""
    _saved(tmp_path)
    (name,) = _snapshots(tmp_path)
    os.unlink(tmp_path / CURRENT_LINK)
    os.symlink(f"{SNAPSHOTS_DIR}/nope", tmp_path / CURRENT_LINK)
    with CheckpointWriter(tmp_path, overwrite=True):
        assert name in _snapshots(tmp_path)
    assert name in _snapshots(tmp_path)
    # a resume of it is refused in one line, and deletes nothing either
    with pytest.raises(CheckpointError, match="does not exist"):
        train(TrainConfig(dataset="digits", epochs=1), tmp_path, resume=True, progress=False,
              log=lambda _m: None)
    assert name in _snapshots(tmp_path)


def test_a_link_planted_as_the_lock_is_refused_and_its_target_untouched(tmp_path):
    _saved(tmp_path / "D")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.symlink(victim, tmp_path / "D" / LOCK_FILE)
    with pytest.raises(CheckpointError, match="symbolic link"):
        CheckpointWriter(tmp_path / "D", resume=True)
    assert victim.read_text() == "precious"
    assert (tmp_path / "D" / LOCK_FILE).is_symlink()


def test_disk_full_while_taking_the_lock_leaves_no_lock_file(tmp_path, monkeypatch):
    _saved(tmp_path)
    real_pwrite = os.pwrite

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(CheckpointWriteError, match="No space left"):
        CheckpointWriter(tmp_path, resume=True)
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    assert not os.path.lexists(tmp_path / LOCK_FILE)


def test_a_full_disk_during_training_exits_1_and_removes_the_lock(tmp_path, monkeypatch,
                                                                     capsys):
    class FullDisk(ckpt_module._FileOps):
        def write(self, fd, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt_module, "_fs", FullDisk())
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--dataset", "digits", "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert len(err.splitlines()) == 1 and "No space left" in err
    assert not os.path.lexists(out / LOCK_FILE)


def test_a_dead_worker_is_a_failed_run_not_wrong_input():
    code, message = _describe_failure(WorkerDiedError("process 1 of 2 died with exit code -9"))
    assert code == 1 and "died" in message


def test_resume_with_more_epochs_extends_a_finished_run(tmp_path):
    quiet = {"progress": False, "log": lambda _m: None}
    cfg = TrainConfig(dataset="digits", epochs=1, batch_size=64, lr=0.05, seed=3)
    assert train(cfg, tmp_path, **quiet)["epochs_completed"] == 1
    longer = TrainConfig(**{**cfg.__dict__, "epochs": 2})
    messages: list[str] = []
    config = train(longer, tmp_path, resume=True, progress=False, log=messages.append)
    assert config["epochs_completed"] == 2 and config["training"]["epochs"] == 2
    assert any("extending" in m for m in messages)
    assert read_checkpoint(tmp_path).epoch == 2
    with pytest.raises(CheckpointError, match="already completed 2 epochs"):
        train(cfg, tmp_path, resume=True, **quiet)
    with pytest.raises(CheckpointError, match="differing: lr"):
        train(TrainConfig(**{**longer.__dict__, "lr": 0.01}), tmp_path, resume=True, **quiet)


# ---------------------------------------------------------------------------------------------
# 2. a signature vouches for a unit that is one


def _flat_copy(tmp_path: Path) -> Path:
    target = tmp_path / "flat"
    target.mkdir()
    for name in (MODEL_FILE, CONFIG_FILE):
        (target / name).write_bytes((SHIPPED_MODEL_DIR / name).read_bytes())
    return target


@pytest.mark.parametrize("edit, expected", [
    (lambda c: {**c, "weights_sha256": "0" * 64}, "weights_sha256"),
    (lambda c: {**c, "training": {**c["training"], "activation": {
        **c["training"]["activation"], "levels": 8}}}, "levels"),
    (lambda c: {**c, "thresholds": {k: v + 1.0 for k, v in c["thresholds"].items()}},
     "thresholds"),
    (lambda c: {**c, "num_classes": 11}, "does not fit"),
])
def test_write_manifest_refuses_a_config_that_contradicts_itself(tmp_path, edit, expected):
    flat = _flat_copy(tmp_path)
    write_manifest(flat)  # the shipped files as they are: one unit
    config = json.loads((flat / CONFIG_FILE).read_text())
    (flat / CONFIG_FILE).write_text(json.dumps(edit(config)))
    os.unlink(flat / "manifest.json")
    with pytest.raises(CheckpointError, match=expected):
        write_manifest(flat)
    assert not (flat / "manifest.json").exists()


# ---------------------------------------------------------------------------------------------
# 3. one bound on every size, checked before work


def _tiny_snn(method: str = "qcfs", **params):
    torch.manual_seed(0)
    ann = create_model("fashion_cnn", 10, 1, input_size=(8, 8)).eval()
    return sb.convert(ann, method, **params), ann


def test_sizes_beyond_the_bounds_are_refused_at_once():
    snn, ann = _tiny_snn()
    x = torch.rand(2, 1, 8, 8)
    start = time.perf_counter()
    with pytest.raises(ResourceLimitError, match="bound"):
        sb.simulate(snn, x, 10**20)
    with pytest.raises(ResourceLimitError, match="bound"):
        sb.evaluate(snn, [(x, torch.zeros(2, dtype=torch.long))], [1, 2**31])
    with pytest.raises(ResourceLimitError, match="rho"):
        sb.convert(ann, "cos", rho=10**9)
    with pytest.raises(ResourceLimitError, match="frames per layer"):
        sb.convert(ann, "cos", rho=MAX_STEPS // 2, iterations=4)
    assert time.perf_counter() - start < 5


def test_the_memory_a_run_would_take_is_estimated_first(monkeypatch):
    snn, _ = _tiny_snn()
    monkeypatch.setattr("spikebridge.limits.machine_memory", lambda device="cpu": 2**20)
    with pytest.raises(ResourceLimitError, match=r"would need about .* GiB of memory, more "
                       r"than the 0.0 GiB this machine has; lower T or the batch size"):
        sb.simulate(snn, torch.rand(64, 1, 8, 8), 1000)


@pytest.mark.parametrize("argv", [
    ["evaluate", "--T", "99999999999999999999"],
    ["evaluate", "--method", "cos", "--rho", "1000000000"],
    ["analyse", "--T", "100001"],
    ["compare", "--T", "1,2,1000000"],
    ["evaluate", "--batch-size", "99999999999"],
    ["reproduce", "--recipe", "cifar100-vgg16", "--T", "10000000"],
])
def test_huge_sizes_on_the_command_line_are_one_line_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bound" in err, err


@pytest.mark.parametrize("value", [math.nan, None, "4", 2.5, math.inf, True])
def test_non_integer_sizes_are_our_error(value):
    with pytest.raises(UsageError, match="must be an integer"):
        check_integer(value, "T", minimum=1, maximum=10)
    snn, _ = _tiny_snn()
    with pytest.raises(UsageError):
        sb.simulate(snn, torch.rand(1, 1, 8, 8), value)


# ---------------------------------------------------------------------------------------------
# 4. API misuse: our error, one sentence


def test_meta_and_misplaced_inputs_are_input_errors():
    snn, _ = _tiny_snn()
    with pytest.raises(InputError, match="meta tensor"):
        sb.simulate(snn, torch.empty(2, 1, 8, 8, device="meta"), 2)


@pytest.mark.parametrize("labels, expected", [
    (torch.zeros(4, 1, dtype=torch.long), "1-D integer tensor"),
    (torch.zeros(3, dtype=torch.long), "4 images but 3 labels"),
    (torch.full((4,), 10), r"lie in \[0, 9\]"),
    (torch.full((4,), -1), r"lie in \[0, 9\]"),
    (torch.zeros(4), "1-D integer tensor"),
    ([0, 1, 2, 3], "torch.Tensor"),
])
def test_bad_labels_are_refused(labels, expected):
    snn, _ = _tiny_snn()
    with pytest.raises(UsageError, match=expected):
        sb.evaluate(snn, [(torch.rand(4, 1, 8, 8), labels)], [1, 2])


def test_accuracy_at_a_T_not_simulated_names_what_was():
    result = Evaluation(snn_accuracy={1: 0.5, 2: 0.75}, n_samples=4)
    assert result.at(2) == 0.75 and result.at([1, 2]) == {1: 0.5, 2: 0.75}
    with pytest.raises(UsageError, match=r"no accuracy at T = 4: this evaluation simulated "
                       r"T = 1…2"):
        result.at([4])


class _ViewNet(nn.Module):
    """Flattens with ``x.view`` (``flatten=False``), which needs strides the SNN's channels_last
    currents lack, or with ``torch.flatten``."""

    def __init__(self, flatten: bool = False) -> None:
        super().__init__()
        self.flatten = flatten
        self.conv, self.act, self.fc = nn.Conv2d(3, 8, 3), QCFS(4, 2.0), nn.Linear(8 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x))
        return self.fc(torch.flatten(y, 1) if self.flatten else y.view(-1, 8 * 6 * 6))


@pytest.mark.parametrize("mode", ["step", "layer"])
def test_a_network_flattening_with_view_simulates(mode):
    torch.manual_seed(0)
    ann = _ViewNet().eval()
    x = torch.rand(3, 3, 8, 8)
    with pytest.raises(RuntimeError, match="view"):  # the ANN's own view on channels_last
        ann(x.to(memory_format=torch.channels_last))
    reference = _ViewNet(flatten=True).eval()
    reference.load_state_dict(ann.state_dict())
    out = sb.simulate(sb.convert(ann, "qcfs"), x, 8, mode=mode)
    assert torch.equal(out, sb.simulate(sb.convert(reference, "qcfs"), x, 8, mode=mode))


# ---------------------------------------------------------------------------------------------
# 5. Ctrl-C at any instant: one line, exit 130


def test_ctrl_c_at_any_instant_is_one_line_and_130(tmp_path):
    command = [sys.executable, "-m", "spikebridge", "evaluate", "--T", "1,2", "--limit", "200",
               "--json", str(tmp_path / "r.json")]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for delay in (0.0, 0.1, 0.3, 0.6, 1.2):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env=env)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=120)
        lines = [line for line in err.replace("\r", "\n").splitlines()
                 if line.strip() and "%|" not in line]
        assert "Traceback" not in err, (delay, err)
        if process.returncode == 0:  # finished before the signal arrived
            continue
        if process.returncode == -signal.SIGINT and not err:
            continue  # stopped while the interpreter itself started: nothing ran, nothing printed
        assert process.returncode == 130, (delay, err)
        assert len(lines) == 1 and lines[0].endswith("interrupted"), (delay, err)
        assert not list(tmp_path.glob(".*.tmp")), "a half-written file was left"


# ---------------------------------------------------------------------------------------------
# 6. every module imports on its own (no import order hides a circle)


def test_every_module_imports_in_a_fresh_package():
    script = (
        "import importlib, pkgutil, sys, spikebridge\n"
        "names = sorted(m.name for m in pkgutil.walk_packages(spikebridge.__path__, "
        "'spikebridge.') if not m.name.endswith('__main__'))\n"
        "for name in names:\n"
        "    for loaded in [k for k in sys.modules if k.startswith('spikebridge.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) > 30


# ---------------------------------------------------------------------------------------------
# 7. data files: links never followed by default, sizes bounded by the file


def _image_tree(root: Path, classes=("a", "b", "c"), per_class: int = 3) -> None:
    from PIL import Image

    for name in classes:
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            Image.new("RGB", (4, 4), (k * 40, 0, 0)).save(root / name / f"{k}.png")


def _folder(split: Path, **kwargs):
    from spikebridge.data.imagefolder import ImageFolderDataset

    return ImageFolderDataset(split, image_size=4, **kwargs)


@pytest.mark.parametrize("follow", [False, True])
def test_link_loops_in_an_image_folder_end_with_the_right_labels(tmp_path, follow):
    val = tmp_path / "val"
    _image_tree(val)
    os.symlink("..", val / "a" / "loop1")
    os.symlink("..", val / "a" / "loop2")
    os.symlink("../b", val / "c" / "b-again")
    start = time.perf_counter()
    dataset = _folder(val, follow_links=follow)
    assert time.perf_counter() - start < 1.0
    assert len(dataset) == 9
    assert dataset.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3


def test_a_linked_class_folder_is_read_only_when_asked(tmp_path):
    from spikebridge.data import DatasetNotFoundError

    _image_tree(tmp_path / "elsewhere", classes=("a", "b"))
    val = tmp_path / "val"
    val.mkdir()
    for name in ("a", "b"):
        os.symlink(tmp_path / "elsewhere" / name, val / name)
    with pytest.raises(DatasetNotFoundError, match="--follow-links"):
        _folder(val)
    dataset = _folder(val, follow_links=True)
    assert len(dataset) == 6 and dataset.classes == ("a", "b")
    assert dataset.labels.tolist() == [0] * 3 + [1] * 3


def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(tmp_path, monkeypatch):
    from PIL import Image

    from spikebridge.data import imagefolder
    from spikebridge.data.imagefolder import CorruptImageError, decode_image

    path = tmp_path / "huge.png"
    Image.new("L", (3000, 3000)).save(path)  # 9 M pixels in a few KB
    monkeypatch.setattr(imagefolder, "MAX_IMAGE_PIXELS", 1_000_000)
    with pytest.raises(CorruptImageError, match=r"3000 × 3000 = 9,000,000 pixels, more than"):
        decode_image(path)
    assert decode_image(_small_png(tmp_path)).shape == (8, 8, 3)  # below the bound: decoded


def _small_png(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "small.png"
    Image.new("RGB", (8, 8)).save(path)
    return path


class _Fabricated:
    """Pickles as a call of ``numpy.ndarray(shape, dtype)``: a huge array from a few bytes."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def __reduce__(self):
        import numpy as np

        return np.ndarray, (self.shape, np.dtype("u1"))


def test_a_tiny_pickle_cannot_fabricate_a_huge_array(tmp_path):
    import pickle

    import numpy as np

    from spikebridge.data import load_dataset
    from spikebridge.data.datasets import DatasetFormatError
    from spikebridge.data.safe_pickle import OversizedArrayError, safe_load

    folder = tmp_path / "cifar-10-batches-py"
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from test_cifar import write_cifar10_python
    finally:
        sys.path.pop(0)
    write_cifar10_python(folder)
    bomb = pickle.dumps({"data": _Fabricated((400000, 3072)),
                         "labels": _Fabricated((400000,))}, protocol=2)
    assert len(bomb) < 400
    (folder / "test_batch").write_bytes(bomb)
    with pytest.raises(OversizedArrayError, match=r"\(400000, 3072\)"):
        safe_load(folder / "test_batch")
    with pytest.raises(DatasetFormatError, match="test_batch.*not a plain data file"):
        load_dataset("cifar10", "test", folder)
    # an honest pickle of a real array still loads, through every constructor
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps({"x": np.arange(12, dtype=np.uint8)},
                                                   protocol=2))
    assert safe_load(tmp_path / "ok.pkl")["x"].tolist() == list(range(12))
    (tmp_path / "ok5.pkl").write_bytes(pickle.dumps({"x": np.arange(12.0)}, protocol=5))
    assert safe_load(tmp_path / "ok5.pkl")["x"].tolist() == list(map(float, range(12)))


# ---------------------------------------------------------------------------------------------
# 8. messages a newcomer trips over (issue #19)


def test_a_modified_cifar_copy_warns_once_per_command_and_says_what_it_means(tmp_path):
    import warnings

    from spikebridge.data import ChecksumWarning, load_dataset

    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from test_cifar import write_cifar10_python
    finally:
        sys.path.pop(0)
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10_python(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_dataset("cifar10", "train", folder)
        load_dataset("cifar10", "test", folder)
    checksum = [w for w in caught if issubclass(w.category, ChecksumWarning)]
    assert len(checksum) == 1
    assert "not comparable" in str(checksum[0].message)


def test_a_training_subset_smaller_than_a_batch_names_the_batch_size_to_use(tmp_path):
    config = TrainConfig(dataset="digits", epochs=1, batch_size=64, train_subset=10)
    with pytest.raises(ValueError, match="--batch-size 10 or less"):
        train(config, tmp_path / "run", progress=False, log=lambda _m: None)


def test_too_many_processes_for_the_images_is_refused_before_any_process_starts(capsys):
    start = time.perf_counter()
    code = main(["evaluate", "--nproc", "2", "--limit", "100", "--batch-size", "250", "--T", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "fewer batches than processes" in err and "--batch-size 50" in err
    assert time.perf_counter() - start < 5
