"""A user's own model from the command line (issue #18, CLI part): ``--model-factory
pkg.mod:fn`` for train / evaluate / compare / convert / check, ``--init-weights FILE``,
``train --activation qcfs:L=4`` (to_qcfs, then fine-tuning), checkpoints that rebuild the
factory's model, ``spikebridge check``, and every wrong input refused in one line (exit 2).

The factory module is tests/own_model_factory.py, copied into a temporary directory that is
the current directory of the commands (the current directory is importable, as with uvicorn).
Everything runs on scikit-learn's 8×8 digits (1437 training, 360 test images) in seconds.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import sys
import uuid
from pathlib import Path

import pytest
import torch
from torch import nn

from spikebridge.activations import QCFS
from spikebridge.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from spikebridge.checkpoint_model import UntrustedFactoryError
from spikebridge.cli import main
from spikebridge.convert import check_convertible
from spikebridge.models import build_model as build_registered_model
from spikebridge.models.factory import ModelFactory

FACTORY = "own_model_factory:digits_cnn"
FACTORY_MODULE = Path(__file__).with_name("own_model_factory.py")
# NCHW like evaluate, so the accuracy train reports is computed with the same arithmetic
DIGITS = ["--dataset", "digits", "--batch-size", "32", "--no-augment", "--no-channels-last",
          "--quiet"]


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_info:  # argparse's own checks
        return exit_info.code


def _config(directory: Path) -> dict:
    return json.loads((directory / "config.json").read_text())


@pytest.fixture(scope="module")
def work(tmp_path_factory, single_torch_thread):
    """A directory holding the factory module, a ReLU model trained from it (``relu/``, average
    pooling: ``--factory-arg pool=avg``) and its QCFS fine-tuning from those weights (``qcfs/``)."""
    root = tmp_path_factory.mktemp("own_model")
    shutil.copy(FACTORY_MODULE, root / FACTORY_MODULE.name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "path", list(sys.path))  # the factory puts the cwd on it: undo that
        mp.chdir(root)
        assert main(["train", "--model-factory", FACTORY, "--factory-arg", "pool=avg",
                     "--epochs", "6", "--lr", "0.1", "--out", "relu",
                     *DIGITS]) == 0
        assert main(["train", "--model-factory", FACTORY, "--factory-arg", "pool=avg",
                     "--activation", "qcfs:L=4", "--init-weights", "relu/model.safetensors",
                     "--epochs", "2", "--lr", "0.01", "--out", "qcfs", *DIGITS]) == 0
        yield root


@pytest.fixture
def in_work(work, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(work)
    return work


def test_a_factory_checkpoint_records_the_factory_its_arguments_and_the_qcfs_rewrite(in_work):
    relu, qcfs = _config(in_work / "relu"), _config(in_work / "qcfs")
    assert relu["architecture"] == FACTORY
    assert relu["activation"]["kind"] == "relu"  # a factory's model is trained as it is
    assert relu["model_factory"] == {"target": FACTORY, "kwargs": {"pool": "avg"},
                                     "to_qcfs": None}
    assert relu["test_accuracy"] > 0.7  # it learned: a real ReLU model to start from
    assert qcfs["model_factory"] == {"target": FACTORY, "kwargs": {"pool": "avg"},
                                     "to_qcfs": {"levels": 4, "maxpool": "keep", "samples": 256}}
    assert qcfs["activation"]["kind"] == "qcfs" and qcfs["activation"]["levels"] == 4
    sha = hashlib.sha256((in_work / "relu" / "model.safetensors").read_bytes()).hexdigest()
    assert qcfs["init_weights"] == {"file": "relu/model.safetensors", "sha256": sha}
    assert set(qcfs["thresholds"]) == {"act", "relu_qcfs"}  # nn.ReLU kept its name; F.relu
    ann, _ = load_checkpoint(in_work / "qcfs", trust_factory=True)  # rebuilt, θ loaded
    thetas = {name: float(m.theta.detach()) for name, m in ann.named_modules()
              if isinstance(m, QCFS)}
    assert thetas == pytest.approx(qcfs["thresholds"])
    assert all(m.levels == 4 for m in ann.modules() if isinstance(m, QCFS))
    with pytest.raises(CheckpointError, match="spikebridge.checkpoint.build_model"):
        build_registered_model(qcfs)  # the registry alone cannot: it names the function that can


def test_train_qcfs_then_evaluate_convert_and_compare_with_cos(in_work):
    """The whole path: the ANN accuracy the train run reported is reproduced by evaluate, COS
    converges to it, and the saved SNN gives exactly the accuracies of the in-memory one."""
    reported = _config(in_work / "qcfs")["test_accuracy"]
    assert main(["evaluate", "--model", "qcfs",
                 "--trust-factory", "--method", "cos", "--T", "1,4,16",
                 "--json", "cos.json", "--quiet"]) == 0
    record = json.loads(Path("cos.json").read_text())
    assert record["ann_accuracy"] == reported
    assert record["n_samples"] == 360 and record["model"].startswith(FACTORY)
    assert abs(record["snn_accuracy"]["16"] - reported) <= 0.05
    assert record["snn_accuracy"]["16"] > record["snn_accuracy"]["1"]
    assert main(["convert", "--model", "qcfs",
                 "--trust-factory", "--method", "cos", "--out", "snn_cos",
                 "--quiet"]) == 0
    assert main(["evaluate", "--snn", "snn_cos", "--T", "1,4,16", "--json", "saved.json",
                 "--quiet"]) == 0
    saved = json.loads(Path("saved.json").read_text())
    assert saved["snn_accuracy"] == record["snn_accuracy"]
    assert main(["compare", "--model", "qcfs",
                 "--trust-factory", "--methods", "qcfs,cos", "--T", "4",
                 "--no-energy", "--out", "cmp", "--quiet"]) == 0
    results = json.loads(Path("cmp/results.json").read_text())["results"]
    assert [r["ann_accuracy"] for r in results] == [reported, reported]
    assert results[1]["snn_accuracy"]["4"] == record["snn_accuracy"]["4"]


@pytest.mark.parametrize("form", ["safetensors", "state_dict entry", "model entry + prefix"])
def test_evaluate_a_factory_model_with_init_weights_uses_them(in_work, form):
    """A plain ReLU model given as factory + weights file: its ANN accuracy is the accuracy the
    weights' training reported; without the weights (the factory's random ones) it is not."""
    state = read_checkpoint(in_work / "relu").state_dict
    path = Path("relu/model.safetensors")
    if form == "state_dict entry":
        path = Path(f"{uuid.uuid4().hex}.pt")
        torch.save({"state_dict": state, "epoch": 6}, path)
    elif form == "model entry + prefix":  # saved from a DistributedDataParallel wrapper
        path = Path(f"{uuid.uuid4().hex}.pth")
        torch.save({"model": {f"module.{k}": v for k, v in state.items()},
                    "optimizer": {"lr": 0.1}}, path)
    common = ["evaluate", "--model-factory", FACTORY, "--factory-arg", "pool=avg", "--dataset",
              "digits", "--method", "robustnorm", "--T", "16", "--no-energy", "--quiet"]
    assert main([*common, "--init-weights", str(path), "--json", "with.json"]) == 0
    record = json.loads(Path("with.json").read_text())
    assert record["ann_accuracy"] == _config(in_work / "relu")["test_accuracy"]
    assert record["snn_accuracy"]["16"] > 0.5
    if form == "safetensors":
        assert main([*common, "--json", "without.json"]) == 0
        assert json.loads(Path("without.json").read_text())["ann_accuracy"] < 0.5


def _seeded_relu_state(seed: int, **kwargs) -> dict[str, torch.Tensor]:
    sys.path.insert(0, str(FACTORY_MODULE.parent))
    try:
        from own_model_factory import digits_cnn
    finally:
        sys.path.remove(str(FACTORY_MODULE.parent))
    torch.manual_seed(seed)
    return digits_cnn(**kwargs).state_dict()


@pytest.mark.parametrize("maxpool", [None, "avg"])
def test_train_starts_from_the_init_weights_before_the_qcfs_rewrite(in_work, maxpool):
    """With a vanishing learning rate the trained parameters are the weights file's (loaded
    into the ReLU model, then rewritten); the model's own initialization (seed 0) differs.
    --maxpool passes through to to_qcfs: kept max-pooling by default, average pooling on
    request."""
    source = _seeded_relu_state(123)
    torch.save({"state_dict": source, "epoch": 3}, "start.pt")
    out = f"tiny_lr_{maxpool}"
    assert main(["train", "--model-factory", FACTORY, "--activation", "qcfs:L=4",
                 "--init-weights", "start.pt", "--epochs", "1", "--lr", "1e-12",
                 "--momentum", "0", "--weight-decay", "0", "--out", out,
                 *(["--maxpool", maxpool] if maxpool else []), *DIGITS]) == 0
    trained = read_checkpoint(Path(out)).state_dict
    parameters = [k for k in source if not k.endswith(("running_mean", "running_var",
                                                       "num_batches_tracked"))]
    assert len(parameters) == 8
    for key in parameters:
        torch.testing.assert_close(trained[key], source[key], rtol=0, atol=1e-7)
    fresh = _seeded_relu_state(0)  # what train builds without --init-weights
    assert not torch.allclose(fresh["conv1.weight"], source["conv1.weight"])
    config = _config(Path(out))
    assert config["model_factory"]["to_qcfs"]["maxpool"] == (maxpool or "keep")
    ann, _ = load_checkpoint(out, trust_factory=True)
    pools = {type(m) for m in ann.modules() if isinstance(m, nn.MaxPool2d | nn.AvgPool2d)}
    assert pools == ({nn.AvgPool2d} if maxpool == "avg" else {nn.MaxPool2d})
    assert sum(isinstance(m, QCFS) for m in ann.modules()) == 2


def test_check_lists_every_problem_at_once_and_exits_nonzero(in_work, capsys):
    assert main(["check", "--model-factory", "own_model_factory:unconvertible"]) == 2
    out, err = capsys.readouterr()
    listed = [line for line in out.splitlines() if line.startswith("  - ")]
    sys.path.insert(0, str(in_work))
    from own_model_factory import unconvertible

    expected = check_convertible(unconvertible())
    assert len(listed) == len(expected) == 4
    for problem, line in zip(expected, listed, strict=True):
        assert line == f"  - {problem.node} ({problem.op}): {problem.why}"
    ops = {line.split()[2].rstrip(":") for line in listed}
    assert {"(GELU)", "(LeakyReLU)", "(MaxPool3d)"} <= ops
    assert "inside module 'custom'" in out
    assert "does not convert: 4 problem(s)" in err and err.count("\n") == 1
    assert main(["check", "--model-factory", FACTORY, "--init-weights",
                 "relu/model.safetensors", "--factory-arg", "pool=avg"]) == 0
    assert "converts (activations: 2 relu)" in capsys.readouterr().out
    assert main(["check", "--model", "qcfs", "--trust-factory"]) == 0
    assert "converts (activations: 2 qcfs)" in capsys.readouterr().out


def test_the_current_directory_is_importable(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "path", list(sys.path))
    name = f"mynet_{uuid.uuid4().hex[:8]}"
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / f"{name}.py").write_text(
        "from torch import nn\n\n"
        "def build(hidden=4):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(),\n"
        "                         nn.Linear(hidden, 10))\n")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--model-factory", f"{name}:build"]) == 2
    assert f"no module named '{name}'" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path / "here")
    assert main(["check", "--model-factory", f"{name}:build", "--factory-arg", "hidden=3"]) == 0
    assert "converts (activations: 1 relu)" in capsys.readouterr().out


def test_a_checkpoint_whose_factory_cannot_be_imported_names_it(in_work, capsys):
    ckpt = read_checkpoint(in_work / "qcfs")
    config = {**ckpt.config, "architecture": "vanished_factory_q:build",
              "model_factory": {**ckpt.config["model_factory"],
                                "target": "vanished_factory_q:build"}}
    save_checkpoint(in_work / "vanished", ckpt.state_dict, config)
    assert main(["evaluate", "--model", "vanished",
                 "--trust-factory", "--method", "cos", "--T", "1",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "factory vanished_factory_q:build" in err
    assert "--model-factory vanished_factory_q:build" in err
    assert "no module named 'vanished_factory_q'" in err and "make it importable" in err
    assert err.count("\n") == 1


def _bad_weights(work: Path) -> None:
    """Weights files that must be refused, written once into ``work``."""
    if (work / "bad_weights_done").exists():
        return
    (work / "garbage.pt").write_bytes(b"\x00not a torch file at all" * 10)
    data = (work / "relu" / "model.safetensors").read_bytes()
    (work / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    torch.save(nn.Linear(2, 2), work / "whole_model.pt")  # a pickled module, not a state dict
    torch.save(_seeded_relu_state(0, width=6), work / "width6.pt")
    torch.save({f"extra{i}": torch.zeros(1) for i in range(12)}, work / "extra.pt")
    torch.save({"epoch": 3, "note": "no weights"}, work / "no_state.pt")
    (work / "bad_weights_done").write_text("")


@pytest.mark.parametrize(("argv", "message"), [
    # the factory named wrongly, missing, not callable, not a model
    (["check", "--model-factory", "own_model_factory"], "has no colon"),
    (["check", "--model-factory", "no_such_pkg_q.nets:build"], "no module named 'no_such_pkg_q'"),
    (["check", "--model-factory", "own_model_factory:nope"], "has no attribute 'nope'"),
    (["check", "--model-factory", "own_model_factory:NOT_CALLABLE"], "of type int, not a "
     "function"),
    (["check", "--model-factory", "own_model_factory:not_a_model"], "returned a dict, not a "
     "torch.nn.Module"),
    (["check", "--model-factory", "own_model_factory:broken"], "raised RuntimeError: the user's"),
    (["check", "--model-factory", FACTORY, "--factory-arg", "width"], "must look like key=value"),
    (["check", "--model-factory", FACTORY, "--factory-arg", "depth=3"], "unexpected keyword "
     "argument 'depth'"),
    (["check", "--model-factory", FACTORY, "--factory-arg", "width=2", "--factory-arg",
      "width=3"], "given twice"),
    (["check"], "name the model to check"),
    # weights files: absent, corrupt, pickled code, no state dict, not fitting (all named)
    (["check", "--model-factory", FACTORY, "--init-weights", "absent.pt"], "absent.pt does not "
     "exist"),
    (["check", "--model-factory", FACTORY, "--init-weights", "garbage.pt"], "garbage.pt cannot "
     "be read as a state dict"),
    (["check", "--model-factory", FACTORY, "--init-weights", "truncated.safetensors"],
     "truncated.safetensors is not a valid safetensors file"),
    (["check", "--model-factory", FACTORY, "--init-weights", "whole_model.pt"], "a whole model "
     "saved with torch.save(model) is refused"),
    (["check", "--model-factory", FACTORY, "--init-weights", "no_state.pt"], "entries that are "
     "not tensors: epoch, note"),
    (["check", "--model-factory", FACTORY, "--init-weights", "width6.pt"], "9 of another shape: "
     "conv1.weight (file [6, 1, 3, 3], model [8, 1, 3, 3])"),
    (["check", "--model-factory", FACTORY, "--init-weights", "extra.pt"], "12 in the file but "
     "not in the model: extra0, extra1, extra2, extra3, extra4 (and 7 more)"),
    (["train", "--out", "t1", "--model-factory", FACTORY, "--init-weights", "extra.pt",
      *DIGITS], "11 missing from the file: conv1.weight"),
    # options that do not apply
    (["evaluate", "--factory-arg", "width=4"], "--factory-arg applies to --model-factory"),
    (["evaluate", "--model", "qcfs", "--init-weights", "relu/model.safetensors"],
     "--init-weights applies to a model from --model-factory"),
    (["convert", "--model", "qcfs", "--init-weights", "relu/model.safetensors", "--out", "s"],
     "--init-weights applies to a model from --model-factory"),
    (["compare", "--dataset", "digits"], "--dataset applies to a model from --model-factory"),
    (["evaluate", "--model", "qcfs", "--model-factory", FACTORY], "--model-factory and --model "
     "exclude each other"),
    (["evaluate", "--snn", "snn_x", "--model-factory", FACTORY], "do(es) not apply with --snn"),
    (["evaluate", "--method", "qcfs", "--rho", "4"], "--rho only applies to method cos"),
    (["evaluate", "--model-factory", FACTORY, "--activation", "qcfs:L=4"],
     "unrecognized arguments: --activation"),
    (["evaluate", "--model-factory", FACTORY, "--factory-arg", "num_classes=3", "--dataset",
      "digits"], "data set has 10 classes"),
    (["train", "--out", "t2", "--model-factory", FACTORY, "--activation", "clipped_relu:theta=2",
      *DIGITS], "is trained as it is (--activation relu) or rewritten with QCFS"),
    (["train", "--out", "t3", "--model-factory", FACTORY, "--activation", "qcfs:L=4,theta=3",
      *DIGITS], "θ of a --model-factory model is not set by hand"),
    (["train", "--out", "t4", "--maxpool", "avg", *DIGITS], "--maxpool applies to "
     "--model-factory"),
    (["train", "--out", "t5", "--model-factory", FACTORY, "--maxpool", "avg", *DIGITS],
     "--maxpool applies to the QCFS rewrite"),
    (["train", "--out", "t6", "--model-factory", FACTORY, "--model", "vgg16", *DIGITS],
     "--model-factory and --model both name the model"),
    (["train", "--out", "qcfs", "--resume", "--model-factory", FACTORY, "--init-weights",
      "relu/model.safetensors", *DIGITS], "--init-weights and --resume exclude each other"),
])
def test_bad_input_is_refused_in_one_line(in_work, argv, message, capsys):
    _bad_weights(in_work)
    before = sorted(p.name for p in in_work.iterdir())
    assert _run(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
    assert sorted(p.name for p in in_work.iterdir()) == before  # nothing half-written


def _documented_commands() -> list[str]:
    """The `spikebridge` lines of the shell blocks of docs/your-model.md, "From the command
    line" (continuation lines joined, comments dropped)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "your-model.md").read_text()
    section = text[text.index("## From the command line"):]
    section = section[:section.index("\n## ", 1)]
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("spikebridge "):
                lines.append(line)
    return lines


def test_the_documented_commands_exist():
    """Every command of the CLI section parses with the real parser (options that exist)."""
    from spikebridge.cli import build_parser

    lines = _documented_commands()
    assert len(lines) >= 6
    assert {line.split()[1] for line in lines} >= {"check", "evaluate", "train", "convert"}
    for line in lines:
        args, unknown = build_parser().parse_known_args(shlex.split(line)[1:])
        assert not unknown and getattr(args, "func", None) is not None, line


def test_to_qcfs_rebuilds_the_structure_without_data_for_loading_trained_weights():
    """``theta=``: the rewrite a checkpoint is rebuilt with — the same modules and state-dict
    keys as the rewrite from data, every θ at the placeholder; data and theta together refused."""
    from spikebridge import to_qcfs

    sys.path.insert(0, str(FACTORY_MODULE.parent))
    try:
        from own_model_factory import digits_cnn
    finally:
        sys.path.remove(str(FACTORY_MODULE.parent))
    model = digits_cnn()
    fitted = to_qcfs(model, 4, data=[torch.randn(16, 1, 8, 8)], maxpool="avg")
    rebuilt = to_qcfs(model, 4, theta=1.0, maxpool="avg")
    assert list(rebuilt.state_dict()) == list(fitted.state_dict())
    assert [float(m.theta.detach()) for m in rebuilt.modules() if isinstance(m, QCFS)] == [1, 1]
    rebuilt.load_state_dict(fitted.state_dict())
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(rebuilt.eval()(x), fitted.eval()(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="not both"):
        to_qcfs(model, 4, data=[torch.randn(4, 1, 8, 8)], theta=1.0)


def test_a_factory_checkpoint_runs_no_code_unless_trusted(in_work, capsys, tmp_path):
    """config.json names the code that rebuilds the model: loading someone else's checkpoint
    must not import or call it without --trust-factory (here: a factory that writes a file)."""
    ckpt = read_checkpoint(in_work / "qcfs")
    marker = tmp_path / "ran"
    config = {**ckpt.config, "model_factory": {**ckpt.config["model_factory"],
                                               "target": "pathlib:Path.touch",
                                               "kwargs": {"self": str(marker)}}}
    save_checkpoint(in_work / "hostile", ckpt.state_dict, config)
    assert main(["evaluate", "--model", "hostile", "--method", "cos", "--T", "1",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "pathlib:Path.touch" in err and "--trust-factory" in err
    with pytest.raises(UntrustedFactoryError):
        load_checkpoint(in_work / "hostile")
    assert not marker.exists()


def test_non_persistent_buffers_of_a_factory_model_survive_the_rebuild(tmp_path, monkeypatch):
    """A user's module may hold state no state dict carries (persistent=False buffers)."""
    (tmp_path / "buffered_factory.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.register_buffer('offset', torch.full((1,), 0.5), persistent=False)\n"
        "        self.fc = nn.Linear(4, 2)\n\n"
        "    def forward(self, x):\n"
        "        return self.fc(torch.relu(x.flatten(1) - self.offset))\n\n"
        "def build():\n"
        "    return Net()\n")
    monkeypatch.chdir(tmp_path)
    model = ModelFactory("buffered_factory:build").build()
    config = {"architecture": "buffered_factory:build", "num_classes": 2, "in_channels": 1,
              "input_size": [2, 2], "activation": {"kind": "relu"},
              "model_factory": {"target": "buffered_factory:build", "kwargs": {},
                                "to_qcfs": None}}
    save_checkpoint(tmp_path / "ckpt", model.state_dict(), config)
    loaded, _ = load_checkpoint(tmp_path / "ckpt", trust_factory=True)
    assert float(loaded.offset) == 0.5
    assert "buffered_factory" not in " ".join(sys.path)  # the cwd left sys.path again
