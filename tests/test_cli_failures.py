"""Every CLI failure is one clear line on stderr and a non-zero exit code (docs/reliability.md).

Exit codes: 2 = the input was wrong (the message says what to change), 1 = the run failed
(disk full, internal error), 130 = interrupted. ``--debug`` shows the traceback instead.
Each case asserts the message text, the code, and that stderr is exactly one line.
"""

from __future__ import annotations

import errno
import json
import shutil

import numpy as np
import pytest

from spikebridge.cli import main
from spikebridge.data import load_dataset
from spikebridge.data.idx import write_idx
from spikebridge.shipped import SHIPPED_MODEL_DIR

FAST = ["--limit", "20", "--T", "1", "--quiet", "--no-energy"]


def _fails(argv, capsys, code=2):
    """Run the CLI; assert exit ``code`` and exactly one stderr line; return that line.
    (argparse's own errors leave through ``SystemExit``, like ``--help``.)"""
    try:
        returned = main(argv)
    except SystemExit as exit_info:
        returned = exit_info.code
    assert returned == code
    lines = capsys.readouterr().err.splitlines()
    assert all(line.startswith("spikebridge") for line in lines), lines  # no traceback
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and lines[-1] == errors[0], lines  # warnings may come before
    return errors[0]


@pytest.fixture
def no_simulation(monkeypatch):
    """Fail loudly if a command starts converting or simulating (work before validation)."""
    def forbidden(*_args, **_kwargs):
        raise AssertionError("work started before the options were validated")

    monkeypatch.setattr("spikebridge.cli.runs.run_methods", forbidden)
    monkeypatch.setattr("spikebridge.experiments.compare_iterations", forbidden)


# --------------------------------------------------------------------------------------------
# options checked before any work


@pytest.mark.parametrize("command", ["evaluate", "compare", "analyse", "train", "demo"])
@pytest.mark.parametrize(("device", "message"), [
    ("banana", "'banana' is not a torch device"),
    ("cuda:7", "cuda:7: this machine has no usable cuda device"),
])
def test_bad_device_is_refused_before_any_work(command, device, message, capsys, tmp_path,
                                               no_simulation, monkeypatch):
    import torch

    if torch.cuda.is_available() and device.startswith("cuda"):
        pytest.skip("this machine has CUDA devices")
    extra = ["--out", str(tmp_path / "o")] if command == "train" else []
    err = _fails([command, "--device", device, *extra, "--quiet"], capsys)
    assert message in err and "argument --device" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["analyse", "--T", "0"], "argument --T: must be >= 1, got 0"),
    (["evaluate", "--T", "1,0"], "argument --T: every value must be >= 1, got 0"),
    (["analyse", "--iterations", "0,-1"], "every value must be >= 0, got -1"),
    (["analyse", "--mode", "step"], "unrecognized arguments: --mode step"),
    (["analyse", "--calibration-samples", "5"], "unrecognized arguments"),
    (["evaluate", "--method", "qcfs", "--rho", "8"], "--rho only applies to method cos, not to "
                                                     "qcfs"),
    (["compare", "--methods", "qcfs,maxnorm", "--iterations", "2", "--variant", "shift"],
     "--iterations, --variant only apply to method cos"),
    (["evaluate", "--method", "cos", "--variant", "lightweight", "--epsilon", "0.1"],
     "--epsilon does not apply to the lightweight COS variant"),
    (["evaluate", "--method", "cos", "--variant", "lightweight", "--iterations", "2"],
     "iterations must be 0 or 1, got 2"),
    (["evaluate", "--method", "cos", "--calibration-samples", "10"],
     "--calibration-samples only applies to data-based methods"),
    (["evaluate", "--no-energy", "--mac-pj", "3"], "--mac-pj set(s) the energy model, which "
                                                   "--no-energy turns off"),
    (["analyse", "--iterations", "0", "--rho", "8"], "--rho only applies to COS runs"),
    (["demo", "--epochs", "3"], "--epochs only applies with --retrain"),
    (["demo", "--limit", "-1"], "argument --limit: must be >= 0, got -1"),
    (["evaluate", "--limit", "0"], "argument --limit: must be >= 1, got 0"),
    (["train", "--out", "x", "--no-augment", "--cutout", "8"],
     "--cutout set(s) augmentation, which --no-augment turns off"),
    (["train", "--out", "x", "--no-augment", "--no-flip"], "--no-flip set(s) augmentation"),
    (["train", "--out", "x", "--momentum", "1.5"], "momentum must lie in [0, 1), got 1.5"),
    (["train", "--out", "x", "--weight-decay", "nan"], "weight_decay must be a finite number"),
    (["train", "--out", "x", "--crop-padding", "-1"], "crop_padding must be >= 0"),
    (["train", "--out", "x", "--image-size", "64"], "--image-size applies to streamed datasets"),
    (["evaluate", "--batch-size", "0"], "argument --batch-size: must be >= 1"),
    (["evaluate", "--model", "m", "--model-x"], "unrecognized arguments: --model-x"),
])
def test_options_that_do_not_apply_are_refused(argv, message, capsys, no_simulation, tmp_path,
                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _fails([*argv, "--quiet"], capsys)
    assert message in err
    assert not (tmp_path / "x").exists()  # refused before an output directory was created


def test_abbreviations_are_not_accepted(capsys, no_simulation):
    """`--mode` used to be taken as `--model` by argparse's prefix matching."""
    err = _fails(["analyse", "--mod", "x", "--quiet"], capsys)
    assert "unrecognized arguments: --mod x" in err


def test_output_paths_are_checked_before_any_work(tmp_path, capsys, no_simulation):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    cases = [
        (["evaluate", "--json", str(tmp_path / "dir")], "is a directory; give a file name"),
        (["evaluate", "--json", str(tmp_path / "file" / "r.json")], "is a file, not a directory"),
        (["compare", "--out", str(tmp_path / "file")], "exists and is a file, not a directory"),
        (["compare", "--out", str(tmp_path / "file" / "sub")], "is a file, not a directory"),
        (["analyse", "--out", str(tmp_path / "file")], "exists and is a file, not a directory"),
        (["demo", "--out", str(tmp_path / "file")], "exists and is a file, not a directory"),
        (["compare", "--out", str(SHIPPED_MODEL_DIR / "x")], "read-only"),
    ]
    for argv, message in cases:
        assert message in _fails([*argv, "--quiet"], capsys)
    assert (tmp_path / "file").read_text() == "x"


# --------------------------------------------------------------------------------------------
# model and data that do not belong together


def _idx_copy(directory, transform):
    """The shipped model's test split, changed by ``transform``, as IDX files in ``directory``."""
    test = load_dataset("fashion-mnist", "test")
    images = transform(test.images[:, 0].numpy())
    labels = test.labels.numpy().astype(np.uint8)
    directory.mkdir()
    write_idx(directory / "t10k-images-idx3-ubyte", np.ascontiguousarray(images))
    write_idx(directory / "t10k-labels-idx1-ubyte", labels)
    return directory


def test_other_files_under_the_dataset_name_are_refused(tmp_path, capsys):
    """Digit-like files handed over as Fashion-MNIST: same shape and classes, other images."""
    data = _idx_copy(tmp_path / "other", lambda x: 255 - x)  # other images, same labels/shape
    err = _fails(["evaluate", "--data-dir", str(data), *FAST], capsys)
    assert "are not the ones" in err and "fingerprint" in err and "--ignore-data-mismatch" in err
    assert main(["evaluate", "--data-dir", str(data), "--ignore-data-mismatch", *FAST]) == 0
    same = _idx_copy(tmp_path / "same", lambda x: x)  # a byte-identical copy elsewhere is fine
    assert main(["evaluate", "--data-dir", str(same), *FAST]) == 0


def test_images_of_another_size_are_refused(tmp_path, capsys):
    data = _idx_copy(tmp_path / "big", lambda x: np.pad(x, ((0, 0), (2, 2), (2, 2))))  # 32×32
    err = _fails(["evaluate", "--data-dir", str(data), *FAST], capsys)
    assert "images of shape [1, 28, 28]" in err and "[1, 32, 32]" in err


def _edited_model(tmp_path, edit):
    model = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL_DIR, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(edit(config)))
    return model


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: 42, "is not a JSON object"),
    (lambda c: {k: v for k, v in c.items() if k != "dataset"}, "names no dataset"),
    (lambda c: {**c, "num_classes": "ten"}, "num_classes must be an integer >= 1"),
    (lambda c: {**c, "model_kwargs": {"input_size": [100000, 100000]}},
     "has shape [128, 3136], the config's architecture needs [128, 40000000000]"),
])
def test_broken_configs_give_one_line(edit, message, tmp_path, capsys):
    model = _edited_model(tmp_path, edit)
    err = _fails(["evaluate", "--model", str(model), "--allow-unverified", *FAST], capsys)
    assert message in err


def test_non_finite_threshold_is_refused_with_the_right_hint(tmp_path, capsys):
    err = _fails(["train", "--out", str(tmp_path / "m"), "--dataset", "digits",
                  "--activation", "clipped_relu:theta=inf", "--quiet"], capsys)
    assert "theta='inf' must be a finite number" in err
    assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------------------------
# failures of the run itself


def test_disk_full_is_one_line_with_exit_code_1(tmp_path, capsys, monkeypatch):
    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "r.json"))

    monkeypatch.setattr("spikebridge.reporting.write_json", full)
    err = _fails(["evaluate", "--json", str(tmp_path / "r.json"), *FAST], capsys, code=1)
    assert "no space left on the device" in err and "r.json" in err


def test_internal_errors_are_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    def broken(*_args, **_kwargs):
        raise KeyError("oops")

    monkeypatch.setattr("spikebridge.cli.runs.run_methods", broken)
    err = _fails(["evaluate", *FAST], capsys, code=1)
    assert "KeyError" in err and "--debug" in err
    with pytest.raises(KeyError):
        main(["evaluate", *FAST, "--debug"])


def test_long_runs_are_announced(capsys, monkeypatch):
    monkeypatch.setattr("spikebridge.runtime_estimate.LONG_RUN_SECONDS", 0.0)
    assert main(["evaluate", *FAST]) == 0
    err = capsys.readouterr().err
    assert "warning: qcfs will take about" in err and "20 images for T=1" in err


def test_the_long_run_notice_covers_the_whole_command(tmp_path, capsys, monkeypatch):
    """Two methods of 400 s each: neither alone crosses the 600 s line, the command does."""
    monkeypatch.setattr("spikebridge.runtime_estimate.estimate_simulation_seconds",
                        lambda *args, **kwargs: 400.0)
    assert main(["compare", "--methods", "qcfs,cos", "--T", "1", "--limit", "20", "--quiet",
                 "--no-energy", "--out", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err
    assert err.count("warning") == 1
    assert "these 2 methods will take about 13 min" in err and "qcfs 7 min" in err
    assert main(["compare", "--methods", "qcfs", "--T", "1", "--limit", "20", "--quiet",
                 "--no-energy", "--out", str(tmp_path / "d")]) == 0
    assert "warning" not in capsys.readouterr().err  # 400 s alone: no notice


def test_warnings_are_one_line(tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL_DIR, model)
    (model / "manifest.json").unlink()
    assert main(["evaluate", "--model", str(model), "--allow-unverified", *FAST]) == 0
    err = capsys.readouterr().err
    assert err.startswith("spikebridge evaluate: warning:") and err.count("\n") == 1


def test_analyse_warns_when_the_desired_count_is_fractional(tmp_path, capsys):
    argv = ["analyse", "--iterations", "0", "--limit", "10", "--no-energy", "--quiet",
            "--out", str(tmp_path / "a")]
    assert main([*argv, "--T", "6"]) == 0
    assert "T=6 is not a multiple of the model's L=4" in capsys.readouterr().err
    assert main([*argv, "--T", "8"]) == 0  # a multiple of L: integer desired counts
    assert "warning" not in capsys.readouterr().err
