"""End to end on CIFAR-shaped data: `train --recipe` for a few steps, then `reproduce` prints our
accuracy per T beside the paper's row; a model that is not the recipe's is refused."""

from __future__ import annotations

import json

import pytest
from test_cifar import write_cifar10_python

from spikebridge.cli import main
from spikebridge.recipes import load_recipe
from spikebridge.reproduce import ModelMismatchError, check_model, format_reproduction


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A cifar10-resnet20 recipe model trained for one epoch on 64 fixture images."""
    root = tmp_path_factory.mktemp("reproduce")
    data = root / "data"
    write_cifar10_python(data / "cifar-10-batches-py", per_batch=16, n_test=40)
    out = root / "model"
    rc = main(["train", "--recipe", "cifar10-resnet20", "--data-dir", str(data), "--out", str(out),
               "--epochs", "1", "--train-subset", "64", "--batch-size", "32", "--quiet"])
    assert rc == 0
    return data, out


def test_train_recipe_records_the_recipe_and_its_augmentation(trained):
    _, out = trained
    config = json.loads((out / "config.json").read_text())
    training = config["training"]
    assert training["recipe"] == "cifar10-resnet20"
    assert (training["epochs"], training["batch_size"], training["train_subset"]) == (1, 32, 64)
    assert training["lr"] == 0.1 and training["weight_decay"] == 5e-4  # from the recipe
    assert training["autoaugment"] is True and training["cutout"] == 16
    assert config["activation"]["levels"] == 4 and config["architecture"] == "resnet20"


def test_reproduce_prints_ours_beside_the_paper(trained, capsys, tmp_path):
    data, out = trained
    capsys.readouterr()
    record_path = tmp_path / "record.json"
    rc = main(["reproduce", "--recipe", "cifar10-resnet20", "--model", str(out), "--data-dir",
               str(data), "--T", "1,2", "--limit", "32", "--quiet", "--json", str(record_path)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "T=1" in printed and "T=2" in printed
    assert "89.88" in printed and "91.26" in printed  # paper's COS row at T = 1, 2
    assert "73.20" in printed and "91.77" in printed  # paper's QCFS at T = 2, the ANN
    assert "COS ρ=4 gap" in printed and "QCFS gap" in printed
    record = json.loads(record_path.read_text())
    assert record["images"] == 32 and record["T"] == [1, 2] and record["rho"] == 4
    cos = record["cos"]
    assert cos["paper"] == {"1": 89.88, "2": 91.26}
    assert cos["gap"]["1"] == pytest.approx(cos["ours"]["1"] - 89.88)
    assert record["qcfs"]["paper"]["1"] is None and record["qcfs"]["gap"]["1"] is None
    assert 0 <= record["ann"]["ours"] <= 100


def test_reproduce_refuses_another_recipes_model(trained, capsys):
    data, out = trained
    rc = main(["reproduce", "--recipe", "cifar100-resnet20", "--model", str(out), "--data-dir",
               str(data), "--T", "1", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "not a model of recipe 'cifar100-resnet20'" in err
    assert "dataset 'cifar10'" in err and "L 4" in err


def test_check_model_names_every_difference():
    recipe = load_recipe("imagenet-vgg16")
    config = {"architecture": "vgg16", "dataset": "cifar10",
              "activation": {"kind": "relu", "levels": 4}}
    with pytest.raises(ModelMismatchError) as excinfo:
        check_model(recipe, config, "runs/x")
    message = str(excinfo.value)
    for part in ("architecture 'vgg16'", "'vgg16_imagenet'", "dataset 'cifar10'",
                 "activation 'relu'", "L 4", "train --recipe imagenet-vgg16"):
        assert part in message
    check_model(recipe, {"architecture": "vgg16_imagenet", "dataset": "imagenet",
                         "activation": {"kind": "qcfs", "levels": 16}}, "runs/x")


def test_format_shows_dashes_where_the_paper_has_no_number():
    record = {
        "title": "t", "recipe": "r", "model": "m", "images": 10, "rho": 8, "T": [1, 16],
        "ann": {"ours": 70.0, "paper": {"qcfs": 74.32, "cos": 74.22}},
        "qcfs": {"ours": {1: 0.5, 16: 60.0}, "paper": {1: None, 16: 59.35},
                 "gap": {1: None, 16: 0.65}},
        "cos": {"ours": {1: 69.0, 16: 74.0}, "paper": {1: 69.11, 16: 74.14},
                "gap": {1: -0.11, 16: -0.14}},
    }
    table = format_reproduction(record)
    qcfs_paper = next(line for line in table.splitlines() if line.startswith("QCFS paper"))
    assert qcfs_paper.split()[2:] == ["–", "59.35"]
    assert "+0.65" in table and "-0.11" in table and "COS ρ=8 ours" in table
