"""The `spikebridge` command: schemas of the result files, help texts, clear errors."""

from __future__ import annotations

import json

import pytest

from spikebridge.cli import main

SUBCOMMANDS = ["train", "evaluate", "compare", "analyse", "demo"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--quiet" in capsys.readouterr().out


def test_evaluate_writes_the_documented_schema(tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = main(["evaluate", "--method", "cos", "--rho", "4", "--T", "1,4", "--limit", "100",
                 "--json", str(out), "--quiet"])
    assert code == 0
    record = json.loads(out.read_text())
    for key in ("dataset", "model", "method", "params", "ann_accuracy", "snn_accuracy",
                "n_samples", "latency"):
        assert key in record
    assert record["dataset"] == "fashion-mnist" and record["method"] == "cos"
    assert record["params"] == {"rho": 4, "iterations": 1, "variant": "shift", "epsilon": 0.001}
    assert set(record["snn_accuracy"]) == {"1", "4"} and record["n_samples"] == 100
    assert all(0.0 <= v <= 1.0 for v in record["snn_accuracy"].values())
    assert 0.0 <= record["ann_accuracy"] <= 1.0
    assert record["latency"]["4"] == {"presimulation": 4, "inference": 4, "presented": 8,
                                      "frames_per_layer": 8, "total": 8}
    assert record["latency"]["1"]["frames_per_layer"] == 8  # ρ·iterations + max(T, ρ)
    assert "T=1" in capsys.readouterr().out


def test_compare_and_analyse_write_files(tmp_path):
    assert main(["compare", "--methods", "qcfs,cos", "--T", "1,2", "--limit", "50",
                 "--out", str(tmp_path / "cmp"), "--quiet"]) == 0
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())["results"]
    assert [r["method"] for r in results] == ["qcfs", "cos"]
    assert (tmp_path / "cmp" / "accuracy_vs_T.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "cmp" / "results.csv").read_text().count("\n") == 5
    assert main(["analyse", "--iterations", "0,1", "--limit", "30",
                 "--out", str(tmp_path / "an"), "--quiet"]) == 0
    report = json.loads((tmp_path / "an" / "offsets.json").read_text())
    assert report["T"] == 4 and set(report["iterations"]) == {"0", "1"}
    out0 = report["iterations"]["0"]
    assert len(out0["layers"]) == 5 and 0 <= out0["layers"][out0["output_layer"]]["ratio"] <= 1
    assert (tmp_path / "an" / "offsets.png").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["evaluate", "--model", "/nonexistent/model"], "does not exist"),
    (["evaluate", "--T", "0"], "every value must be >= 1"),
    (["evaluate", "--method", "cos", "--rho", "0", "--limit", "5"], "--rho: must be >= 1"),
    (["evaluate", "--method", "cos", "--iterations", "-1", "--limit", "5"], "iterations"),
    (["evaluate", "--method", "magic", "--limit", "5"], "unknown conversion method"),
    (["evaluate", "--limit", "0"], "--limit"),
])
def test_bad_input_gives_a_clear_error(argv, message, capsys):
    try:
        code = main([*argv, "--quiet"])
    except SystemExit as exit_info:  # argparse's own checks
        code = exit_info.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_train_on_digits_records_the_command(tmp_path, monkeypatch):
    out = tmp_path / "digits_model"
    argv = ["train", "--out", str(out), "--dataset", "digits", "--epochs", "1",
            "--batch-size", "64", "--quiet"]
    monkeypatch.setattr("sys.argv", ["spikebridge", *argv])
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["command"].startswith("spikebridge train --out")
    assert config["dataset"] == "digits" and config["activation"]["levels"] == 4
    from spikebridge.data import load_dataset

    assert config["test_fingerprint"] == load_dataset("digits", "test").fingerprint()
    assert set(config["thresholds"]) == {"features.2", "features.6", "features.9",
                                         "features.13", "classifier.2"}
    assert {"config.json", "model.safetensors", "train_state.pt", "manifest.json"} <= {
        p.name for p in out.iterdir()}
