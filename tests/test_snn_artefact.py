"""Saved SNNs (docs/export.md): save_snn / load_snn and `convert --out` + `evaluate --snn` give
bit-identical simulations for every method; tampered or foreign directories are refused."""

from __future__ import annotations

import json
import os

import pytest
import torch

import spikebridge as sb
from spikebridge.activations import ActivationSpec
from spikebridge.checkpoint import (
    CONFIG_FILE,
    CheckpointError,
    UnverifiedCheckpointWarning,
    load_checkpoint,
)
from spikebridge.cli import main
from spikebridge.models import create_model
from spikebridge.shipped import SHIPPED_MODEL_DIR
from spikebridge.snn_artefact import SnnFormatError, load_snn, save_snn

# a source ANN of the kind each method converts
_SOURCES = {
    "qcfs": "qcfs:L=4,theta=2", "cos": "qcfs:L=4,theta=2", "slip": "slip:L=4,c=0.5,theta=2",
    "strelu": "strelu:theta=2",
    "leaky-threshold": "leaky_threshold:theta=2,alpha=0.1,neg_theta=0.5",
    "threshold-relu": "clipped_relu:theta=2", "ecc": "relu", "maxnorm": "relu",
    "robustnorm": "relu", "threshold-balancing": "relu", "rmp": "relu", "opi": "relu",
    "cos-frozen": "qcfs:L=4,theta=2",
}


def test_every_method_has_a_source_here():
    assert set(_SOURCES) == set(sb.list_methods())


def _snapshot(directory):
    return directory / "snapshots" / os.readlink(directory / "current").split("/")[-1]


@pytest.mark.parametrize("method", sorted(_SOURCES))
def test_a_saved_snn_simulates_bit_identically(tmp_path, method):
    torch.manual_seed(0)
    ann = create_model("fashion_cnn", 10, 1, input_size=(8, 8),
                       activation=ActivationSpec.parse(_SOURCES[method])).eval()
    data = [(torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long)) for _ in range(2)]
    snn = sb.convert(ann, method, calibration_data=data, calibration_samples=16, weight_bits=6)
    save_snn(snn, tmp_path / "snn")
    loaded = load_snn(tmp_path / "snn")
    assert loaded.weight_bits == 6 and loaded.method.params() == snn.method.params()
    x = torch.rand(5, 1, 8, 8)
    for steps in (1, 3, 8):
        assert torch.equal(sb.simulate(loaded, x, steps), sb.simulate(snn, x, steps)), steps
    # the neurons' parameters are stated, readable, in config.json
    layers = json.loads((tmp_path / "snn" / CONFIG_FILE).read_text())["snn"]["layers"]
    neurons = [r for r in layers.values() if r["type"] == "IFNeuron"]
    assert len(neurons) == len(snn.neurons())
    assert {r["reset"] for r in neurons} <= {"subtract", "zero"}


@pytest.mark.parametrize("method", ["qcfs", "cos"])
def test_convert_then_evaluate_snn_equals_evaluate_model(tmp_path, method, capsys):
    out = tmp_path / "snn"
    assert main(["convert", "--method", method, "--out", str(out), "--quiet"]) == 0
    common = ["--T", "1,2,5", "--limit", "100", "--quiet", "--no-energy"]
    assert main(["evaluate", "--snn", str(out), *common, "--json", str(tmp_path / "a.json")]) == 0
    assert main(["evaluate", "--method", method, *common, "--json", str(tmp_path / "b.json")]) == 0
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    assert a["snn_accuracy"] == b["snn_accuracy"]
    # and the networks themselves give the same bits
    ann, _ = load_checkpoint(SHIPPED_MODEL_DIR)
    x = torch.randn(6, 1, 28, 28)
    assert torch.equal(sb.simulate(load_snn(out), x, 5), sb.simulate(sb.convert(ann, method), x, 5))


def test_a_tampered_snn_is_refused(tmp_path, capsys):
    ann, config = load_checkpoint(SHIPPED_MODEL_DIR)
    save_snn(sb.convert(ann, "qcfs"), tmp_path / "snn", ann_config=config)
    saved = _snapshot(tmp_path / "snn") / CONFIG_FILE
    record = json.loads(saved.read_text())
    name = next(n for n, r in record["snn"]["layers"].items() if r["type"] == "IFNeuron")
    record["snn"]["layers"][name]["initial_fraction"] = 0.0
    saved.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="edited after"):
        load_snn(tmp_path / "snn")
    assert main(["evaluate", "--snn", str(tmp_path / "snn"), "--T", "1", "--quiet"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_graph_naming_a_foreign_function_is_refused_even_unverified(tmp_path):
    ann, config = load_checkpoint(SHIPPED_MODEL_DIR)
    save_snn(sb.convert(ann, "qcfs"), tmp_path / "snn", ann_config=config)
    saved = _snapshot(tmp_path / "snn") / CONFIG_FILE
    record = json.loads(saved.read_text())
    node = next(n for n in record["snn"]["graph"] if n["op"] == "call_function")
    node["target"] = "posix.system"
    saved.write_text(json.dumps(record))
    with pytest.raises(SnnFormatError, match="posix.system.*may not use"), \
            pytest.warns(UnverifiedCheckpointWarning):
        load_snn(tmp_path / "snn", allow_unverified=True)


def test_snn_and_ann_directories_are_not_mixed_up(tmp_path, capsys):
    ann, config = load_checkpoint(SHIPPED_MODEL_DIR)
    save_snn(sb.convert(ann, "qcfs"), tmp_path / "snn", ann_config=config)
    with pytest.raises(CheckpointError, match="holds a converted SNN"):
        load_checkpoint(tmp_path / "snn")
    with pytest.raises(CheckpointError, match="holds an ANN checkpoint"):
        load_snn(SHIPPED_MODEL_DIR)
    assert main(["evaluate", "--snn", str(tmp_path / "snn"), "--method", "cos", "--T", "1"]) == 2
    assert "--method" in capsys.readouterr().err
    assert main(["evaluate", "--snn", str(tmp_path / "snn"), "--weight-rounding", "ecc",
                 "--T", "1"]) == 2
    assert "--weight-rounding" in capsys.readouterr().err
    assert main(["evaluate", "--weight-rounding", "ecc", "--T", "1", "--limit", "5"]) == 2
    assert "only applies with --weight-bits" in capsys.readouterr().err


def test_a_custom_network_saves_and_loads(tmp_path):
    """Any network convert() takes (not only our model registry), flattening with torch.flatten
    and adding a residual branch."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.b = torch.nn.Conv2d(4, 4, 3, padding=1)
            self.act1, self.act2 = sb.QCFS(4, 1.5), sb.QCFS(4, 1.5)
            self.pool, self.fc = torch.nn.AdaptiveAvgPool2d(2), torch.nn.Linear(16, 5)

        def forward(self, x):
            y = self.act1(self.a(x))
            y = self.act2(self.b(y) + y)
            return self.fc(torch.flatten(self.pool(y), 1))

    torch.manual_seed(1)
    snn = sb.convert(Net().eval(), "cos", rho=3)
    save_snn(snn, tmp_path / "snn")
    x = torch.rand(4, 3, 6, 6)
    assert torch.equal(sb.simulate(load_snn(tmp_path / "snn"), x, 6), sb.simulate(snn, x, 6))


def test_an_existing_snn_is_replaced_only_with_overwrite(tmp_path):
    """save_snn commits with the checkpoint writer: no silent overwrite, atomic replacement."""
    ann, config = load_checkpoint(SHIPPED_MODEL_DIR)
    save_snn(sb.convert(ann, "qcfs"), tmp_path / "snn", ann_config=config)
    with pytest.raises(CheckpointError, match="already holds"):
        save_snn(sb.convert(ann, "qcfs"), tmp_path / "snn", ann_config=config)
    save_snn(sb.convert(ann, "cos"), tmp_path / "snn", ann_config=config, overwrite=True)
    assert load_snn(tmp_path / "snn").method.name == "cos"


def test_analyse_and_compare_take_saved_snns(tmp_path, capsys):
    cos, qcfs = tmp_path / "cos", tmp_path / "qcfs"
    assert main(["convert", "--method", "cos", "--out", str(cos), "--quiet"]) == 0
    assert main(["convert", "--method", "qcfs", "--out", str(qcfs), "--quiet"]) == 0
    common = ["--limit", "60", "--quiet"]
    assert main(["analyse", "--snn", str(cos), *common, "--out", str(tmp_path / "a")]) == 0
    assert main(["analyse", "--iterations", "1", "--no-energy", *common,
                 "--out", str(tmp_path / "b")]) == 0
    saved = json.loads((tmp_path / "a" / "offsets.json").read_text())["report"]
    online = json.loads((tmp_path / "b" / "offsets.json").read_text())["iterations"]["1"]
    assert saved["layers"] == online["layers"] and saved["accuracy"] == online["accuracy"]
    assert main(["compare", "--snn", f"{cos},{qcfs}", "--T", "1,2", *common, "--no-energy",
                 "--out", str(tmp_path / "c")]) == 0
    records = json.loads((tmp_path / "c" / "results.json").read_text())["results"]
    assert [r["method"] for r in records] == ["cos", "qcfs"]


def test_analyse_refuses_a_source_checkpoint_that_changed(tmp_path, capsys):
    import shutil

    from spikebridge.checkpoint import write_manifest

    source = tmp_path / "ann"
    shutil.copytree(SHIPPED_MODEL_DIR, source)
    assert main(["convert", "--model", str(source), "--method", "cos", "--out",
                 str(tmp_path / "snn"), "--quiet"]) == 0
    config = json.loads((source / CONFIG_FILE).read_text())
    (source / CONFIG_FILE).write_text(json.dumps({**config, "test_accuracy": 0.5}))
    write_manifest(source)  # a valid, signed checkpoint — but not the one converted
    capsys.readouterr()
    assert main(["analyse", "--snn", str(tmp_path / "snn"), "--limit", "10", "--quiet",
                 "--out", str(tmp_path / "a")]) == 2
    assert "no longer holds the ANN" in capsys.readouterr().err


@pytest.fixture(scope="module")
def source_checkpoints(tmp_path_factory):
    """One checkpoint per activation kind, shaped like the shipped model (random weights: the
    equality below does not depend on them), so every method has a CLI source."""
    from spikebridge.checkpoint import save_checkpoint

    _, shipped = load_checkpoint(SHIPPED_MODEL_DIR)
    root = tmp_path_factory.mktemp("sources")
    made = {}
    for activation in sorted(set(_SOURCES.values())):
        spec = ActivationSpec.parse(activation)
        torch.manual_seed(0)
        model = create_model("fashion_cnn", 10, 1, activation=spec, input_size=(28, 28))
        directory = root / spec.kind
        config = {**shipped, "activation": spec.to_dict(), "thresholds": {},
                  "training": {**shipped["training"], "activation": spec.to_dict()},
                  "epochs_completed": 1}
        save_checkpoint(directory, model, config, {"epoch": 1})
        made[activation] = directory
    return made


@pytest.mark.parametrize("method", sorted(_SOURCES))
def test_cli_convert_then_evaluate_snn_equals_evaluate_model_for_every_method(
        tmp_path, method, source_checkpoints):
    model = str(source_checkpoints[_SOURCES[method]])
    data = [] if method in ("qcfs", "cos", "slip", "strelu", "leaky-threshold",
                            "threshold-relu") else ["--calibration-samples", "64"]
    out = tmp_path / "snn"
    assert main(["convert", "--model", model, "--method", method, *data, "--out", str(out),
                 "--quiet"]) == 0
    common = ["--T", "1,3", "--limit", "40", "--quiet", "--no-energy",
              "--ignore-data-mismatch"]
    assert main(["evaluate", "--snn", str(out), *common, "--json", str(tmp_path / "a.json")]) == 0
    assert main(["evaluate", "--model", model, "--method", method, *data, *common,
                 "--json", str(tmp_path / "b.json")]) == 0
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    assert a["snn_accuracy"] == b["snn_accuracy"]


def test_names_from_the_file_never_reach_generated_code(tmp_path):
    """torch.fx writes node and layer names into the source it executes: a name that is not a
    plain identifier is refused before anything is built (even unverified)."""
    ann, config = load_checkpoint(SHIPPED_MODEL_DIR)
    marker = tmp_path / "PWNED"
    for field in ("placeholder", "layer", "node"):
        save_snn(sb.convert(ann, "qcfs"), tmp_path / field, ann_config=config)
        saved = _snapshot(tmp_path / field) / CONFIG_FILE
        record = json.loads(saved.read_text())
        payload = f"x=__import__('os').system('touch {marker}')"
        if field == "placeholder":
            record["snn"]["graph"][0]["target"] = payload
        elif field == "node":
            record["snn"]["graph"][1]["name"] = payload
        else:
            name = next(iter(record["snn"]["layers"]))
            record["snn"]["layers"][payload] = record["snn"]["layers"].pop(name)
        saved.write_text(json.dumps(record))
        with pytest.raises(SnnFormatError, match="not a plain identifier"), \
                pytest.warns(UnverifiedCheckpointWarning):
            load_snn(tmp_path / field, allow_unverified=True)
        assert not marker.exists()


def test_a_huge_declared_state_is_refused_before_allocation(tmp_path):
    ann, config = load_checkpoint(SHIPPED_MODEL_DIR)
    snn = sb.convert(ann, "cos-frozen", calibration_data=[(torch.randn(4, 1, 28, 28), None)],
                     calibration_samples=4)
    save_snn(snn, tmp_path / "snn", ann_config=config)
    saved = _snapshot(tmp_path / "snn") / CONFIG_FILE
    record = json.loads(saved.read_text())
    layer = next(r for r in record["snn"]["layers"].values() if r.get("initial_state"))
    layer["initial_state"] = [100000, 100000]  # 40 GB if it were allocated
    saved.write_text(json.dumps(record))
    with pytest.raises(SnnFormatError, match="does not fit"), \
            pytest.warns(UnverifiedCheckpointWarning):
        load_snn(tmp_path / "snn", allow_unverified=True)
