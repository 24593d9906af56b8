"""Every registered conversion method round-trips through `spikebridge compare` on tiny data.

Tiny checkpoints (fashion_cnn on scikit-learn's 8×8 digits, random weights with real BatchNorm
statistics) of each activation kind; `compare` must convert and simulate every method on the
model of the kind it needs and write one record per method. Methods registered later (SlipReLU,
stReLU, ...) are picked up automatically once `spikebridge.methods.METHODS` has them.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch

from spikebridge.activations import ActivationSpec
from spikebridge.checkpoint import save_checkpoint
from spikebridge.cli import main
from spikebridge.data import BatchLoader, load_dataset
from spikebridge.methods import METHODS, get_method
from spikebridge.models import create_model

CORE = ["qcfs", "cos", "maxnorm", "robustnorm", "threshold-balancing", "rmp", "opi", "ecc"]
# being added by someone else; picked up automatically when registered
PENDING = ["slip", "strelu", "leaky-threshold", "threshold-relu"]
EXTRA = sorted((set(PENDING) | set(METHODS)) - set(CORE))
STEPS = ["1", "4"]


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def digit_images() -> torch.Tensor:
    train = load_dataset("digits", "train").subset(96, seed=0)
    return next(iter(BatchLoader(train, 96)))[0]


def _checkpoint(directory, spec: ActivationSpec, images: torch.Tensor, seed: int = 0):
    """A fashion_cnn for 8×8 digits with activation ``spec``, BN statistics from real images."""
    torch.manual_seed(seed)
    model = create_model("fashion_cnn", 10, 1, spec, input_size=(8, 8))
    model.train()
    with torch.no_grad():
        for chunk in images.split(32):
            model(chunk)
    model.eval()
    config = {
        "architecture": "fashion_cnn", "num_classes": 10, "in_channels": 1,
        "model_kwargs": {"input_size": [8, 8]}, "activation": spec.to_dict(),
        "dataset": "digits", "input_size": [8, 8], "epochs_completed": 0,
    }
    save_checkpoint(directory, model, config)
    return directory


@pytest.fixture(scope="module")
def models(tmp_path_factory, digit_images) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    return {kind: str(_checkpoint(root / kind, ActivationSpec(kind), digit_images))
            for kind in ("relu", "qcfs")}


def _compare(methods: list[str], model_arg: str, out, *extra: str) -> int:
    from spikebridge.methods import get_method, parse_method_spec

    data_based = any(get_method(s.name, **s.params).needs_calibration_data()
                     for s in map(parse_method_spec, methods))
    samples = ["--calibration-samples", "50"] if data_based else []  # refused otherwise
    return main(["compare", "--methods", ",".join(methods), "--model", model_arg,
                 "--T", ",".join(STEPS), "--limit", "50", *samples,
                 "--batch-size", "25", "--out", str(out), "--quiet", *extra])


def _check_records(records: list[dict], specs: list[str], out) -> None:
    assert len(records) == len(specs)
    for spec, record in zip(specs, records, strict=True):
        name, _, options = spec.partition(":")
        assert record["method"] == name
        if options or name == "cos":  # the CLI gives COS its --rho/--iterations/... flags
            assert record["label"].startswith(f"{name}(") and record["label"] != name
            assert all(o.partition("=")[0] in record["label"] for o in options.split(":") if o)
        else:
            assert record["label"] == name
        assert record["dataset"] == "digits" and record["n_samples"] == 50
        assert set(record["snn_accuracy"]) == set(STEPS)
        assert all(0.0 <= a <= 1.0 for a in record["snn_accuracy"].values())
        assert 0.0 <= record["ann_accuracy"] <= 1.0
        spikes = record["spikes"]
        assert isinstance(spikes["signed"], bool)
        assert spikes["bits_per_spike"] == (2 if spikes["signed"] else 1)
        pre = 4 if name == "cos" else 0  # COS pre-simulates ρ = 4 steps (the CLI default)
        for t in STEPS:
            frames = pre + max(int(t), 4) if name == "cos" else int(t)
            assert record["latency"][t] == {"presimulation": pre, "inference": int(t),
                                            "presented": int(t) + pre,
                                            "frames_per_layer": frames, "total": int(t) + pre}
        data_based = get_method(name).needs_calibration_data()
        assert record["calibration_samples"] == (50 if data_based else None), name
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == len(specs) * len(STEPS)
    assert [r["method"] for r in rows] == [s.partition(":")[0] for s in specs
                                           for _ in STEPS]
    assert all(r["bits_per_spike"] in ("1", "2") and r["snn_accuracy"] for r in rows)
    assert (out / "accuracy_vs_T.png").read_bytes()[:4] == b"\x89PNG"


def test_every_core_method_round_trips_through_compare(models, tmp_path):
    assert set(CORE) <= set(METHODS)
    specs = [m if m != "rmp" else "rmp:scale=0.9" for m in CORE]
    out = tmp_path / "cmp"
    assert _compare(specs, f"relu={models['relu']},qcfs={models['qcfs']}", out) == 0
    records = json.loads((out / "results.json").read_text())["results"]
    _check_records(records, specs, out)
    by_label = {r["label"]: r for r in records}
    # each method ran on the model of its kind: the two models' ANN accuracies differ per row
    relu_rows = [by_label[m] for m in ("maxnorm", "robustnorm", "threshold-balancing", "opi",
                                       "ecc")]
    assert len({r["model"] for r in relu_rows}) == 1
    cos = next(r for r in records if r["method"] == "cos")
    assert by_label["qcfs"]["model"] == cos["model"] != relu_rows[0]["model"]
    assert cos["params"]["rho"] == 4
    assert 0.9 in by_label["rmp(scale=0.9)"]["params"].values()
    assert by_label["ecc"]["params"]["kappa"] == 100.0
    assert by_label["ecc"]["spikes"]["value"] == "unit"
    assert by_label["qcfs"]["spikes"]["value"] == "threshold-weighted"


@pytest.mark.parametrize(("methods", "model_kind", "hint"), [
    ("maxnorm", "qcfs", "spikebridge train --activation relu"),
    ("ecc:tre=0", "qcfs", "spikebridge train --activation relu"),
    ("qcfs", "relu", "--activation qcfs"),
    ("cos", "relu", "--activation qcfs"),
])
def test_wrong_kind_of_model_is_a_one_line_error(methods, model_kind, hint, models, tmp_path,
                                                 capsys):
    out = tmp_path / "cmp"
    assert _compare([methods], models[model_kind], out) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("spikebridge compare: error:") and hint in lines[0]
    assert not (out / "results.json").exists()


def _spec_for(kind: str) -> ActivationSpec | None:
    try:
        return ActivationSpec(kind)
    except (TypeError, ValueError):
        return None


@pytest.mark.parametrize("name", EXTRA)
def test_newly_registered_method_round_trips_through_compare(name, models, digit_images,
                                                             tmp_path):
    if name not in METHODS:
        pytest.skip(f"method {name!r} is not registered in spikebridge.methods.METHODS yet "
                    "(being added); this test runs it through compare once it is")
    method = METHODS[name]
    model_arg = None
    for kind in method.source_kinds:
        if kind in models:
            model_arg = f"{kind}={models[kind]}"
            break
        spec = _spec_for(kind)
        if spec is not None:
            directory = _checkpoint(tmp_path / f"model_{kind}", spec, digit_images)
            model_arg = f"{kind}={directory}"
            break
    if model_arg is None:
        pytest.skip(f"method {name!r} converts {method.source_kinds} models, which "
                    "ActivationSpec cannot build yet")
    out = tmp_path / "cmp"
    assert _compare([name], model_arg, out) == 0
    records = json.loads((out / "results.json").read_text())["results"]
    _check_records(records, [name], out)


def test_one_model_for_every_method_with_weight_bits(models, tmp_path):
    """A plain `--model DIR` is used for every method; --weight-bits reaches every record."""
    out = tmp_path / "cmp"
    assert _compare(["maxnorm", "opi"], models["relu"], out, "--weight-bits", "6") == 0
    records = json.loads((out / "results.json").read_text())["results"]
    assert [r["method"] for r in records] == ["maxnorm", "opi"]
    assert records[0]["model"] == records[1]["model"]
    assert records[0]["params"]["v0"] == 0.0 and records[1]["params"]["v0"] == 0.5
    assert [r["weight_bits"] for r in records] == [6, 6]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["weight_bits"] for r in rows} == {"6"}
    assert _compare(["maxnorm"], models["relu"], out, "--weight-bits", "1") == 2

