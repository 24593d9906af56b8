"""Recipes (spikebridge.recipes): the shipped COS rows load and validate, bad files are refused
with the field named, and a recipe becomes a TrainConfig that CLI options override."""

from __future__ import annotations

import tomllib

import pytest

from spikebridge.activations import ActivationSpec
from spikebridge.recipes import RECIPE_DIR, RecipeError, list_recipes, load_recipe
from spikebridge.train import TrainConfig

ROWS = ["cifar10-resnet18", "cifar10-resnet20", "cifar10-vgg16", "cifar100-resnet20",
        "cifar100-vgg16", "imagenet-resnet34", "imagenet-vgg16"]


def test_one_recipe_per_row_of_the_cos_tables():
    # beside them the ECC paper's DVS row (tests/test_events_training.py)
    assert [name for name in list_recipes() if load_recipe(name).family == "cos"] == ROWS
    assert sorted(set(list_recipes()) - set(ROWS)) == ["cifar10-dvs-vgg7"]


@pytest.mark.parametrize("name", ROWS)
def test_shipped_recipes_are_valid_and_consistent(name):
    recipe = load_recipe(name)
    assert recipe.name == name
    assert recipe.dataset == name.split("-")[0]
    assert recipe.epochs == 300 and recipe.momentum == 0.9
    assert recipe.steps == (1, 2, 4, 8, 16, 32)
    imagenet = recipe.dataset == "imagenet"
    assert recipe.architecture.endswith("_imagenet") == imagenet
    assert recipe.rho == (8 if imagenet else 4)  # COS: ρ = 4 on CIFAR, 8 on ImageNet
    assert recipe.lr == (0.02 if recipe.dataset == "cifar100" else 0.1)
    assert recipe.autoaugment == (not imagenet)
    assert recipe.cutout == {"cifar10": 16, "cifar100": 8, "imagenet": 0}[recipe.dataset]
    cos = recipe.paper["cos"]
    assert sorted(cos.accuracy) == list(recipe.steps)  # COS reports every T
    for row in recipe.paper.values():
        assert 0 < row.ann <= 100 and all(0 < v <= 100 for v in row.accuracy.values())


def test_paper_numbers_of_two_rows():
    c100 = load_recipe("cifar100-vgg16")
    assert c100.paper["cos"].accuracy[1] == 74.24 and c100.paper["cos"].ann == 76.28
    assert c100.paper["qcfs"].accuracy == {2: 63.79, 4: 69.62, 8: 73.96, 16: 76.24, 32: 77.01}
    r34 = load_recipe("imagenet-resnet34")
    assert r34.paper["cos"].accuracy[8] == 74.17 and r34.paper["qcfs"].accuracy[16] == 59.35
    assert r34.levels == 16


def test_train_config_from_recipe_and_overrides():
    recipe = load_recipe("cifar100-vgg16")
    cfg = recipe.train_config()
    assert (cfg.architecture, cfg.dataset, cfg.epochs, cfg.lr, cfg.batch_size) == (
        "vgg16", "cifar100", 300, 0.02, 100)
    assert cfg.activation == ActivationSpec("qcfs", levels=4, theta=8.0)
    assert cfg.autoaugment and cfg.cutout == 8 and cfg.augment and cfg.recipe == "cifar100-vgg16"
    quick = recipe.train_config(epochs=1, train_subset=256)
    assert quick.epochs == 1 and quick.train_subset == 256 and quick.lr == 0.02


def test_recipe_augmentation_reaches_the_training_loader(tmp_path, monkeypatch):
    """crop_padding and horizontal_flip are the recipe's, not the dataset's defaults; with
    neither, AutoAugment and Cutout still run (augment is the master switch)."""
    import spikebridge.train as train_module
    from spikebridge.train import train

    seen = {}

    class Stop(Exception):
        pass

    def capture(dataset, batch_size, **kwargs):
        seen.update(kwargs)
        raise Stop

    def plain(d):
        d["model"]["dataset"] = "digits"
        d["augmentation"].update(crop_padding=0, horizontal_flip=False, autoaugment=True,
                                 cutout=3)

    cfg = load_recipe(_write(tmp_path, plain)).train_config(architecture="fashion_cnn")
    assert (cfg.augment, cfg.crop_padding, cfg.horizontal_flip) == (True, 0, False)
    monkeypatch.setattr(train_module, "training_loader", capture)
    with pytest.raises(Stop):
        train(cfg, tmp_path / "m", progress=False, log=lambda _m: None)
    assert (seen["augment"], seen["crop_padding"], seen["horizontal_flip"]) == (True, 0, False)
    assert seen["autoaugment"] is True and seen["cutout"] == 3
    default = load_recipe("cifar10-resnet20").train_config()
    assert (default.crop_padding, default.horizontal_flip) == (4, True)


def _write(tmp_path, mutate) -> str:
    data = tomllib.loads((RECIPE_DIR / "cifar10-resnet20.toml").read_text())
    mutate(data)
    lines = []

    def emit(prefix: str, table: dict) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict) or k == "accuracy"}
        if prefix:
            lines.append(f"[{prefix}]")
        for key, value in scalars.items():
            if isinstance(value, dict):
                inner = ", ".join(f"{k} = {v!r}" for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            else:
                lines.append(f"{key} = {_toml(value)}")
        for key, value in table.items():
            if isinstance(value, dict) and key != "accuracy":
                emit(f"{prefix}.{key}" if prefix else key, value)

    emit("", data)
    path = tmp_path / "custom.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"""' + value + '"""'
    return repr(value)


def test_a_recipe_file_by_path_round_trips(tmp_path):
    recipe = load_recipe(_write(tmp_path, lambda d: None))
    assert recipe.name == "custom" and recipe.architecture == "resnet20"
    assert recipe.paper == load_recipe("cifar10-resnet20").paper


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["model"].pop("levels"), "missing field 'levels'"),
    (lambda d: d["training"].update(lr=-0.1), "'lr' must be > 0"),
    (lambda d: d["training"].update(epochs="300"), "'epochs' must be int"),
    (lambda d: d["augmentation"].update(cutout=True), "'cutout' must be int"),
    (lambda d: d["augmentation"].update(mixup=True), "unknown field(s) 'mixup'"),
    (lambda d: d["model"].update(architecture="resnet9000"), "unknown architecture 'resnet9000'"),
    (lambda d: d["model"].update(dataset="svhn"), "unknown dataset 'svhn'"),
    (lambda d: d["conversion"].update(T=[0, 2]), "'T' must be a non-empty list"),
    (lambda d: d["paper"]["cos"]["accuracy"].update({"x": 1.0}), "not a time-step"),
    (lambda d: d["paper"]["qcfs"].update(ann=120.0), "'ann' must be a percentage"),
    (lambda d: d["paper"].pop("cos"), "missing table [paper.cos]"),
    (lambda d: d.pop("training"), "missing table [training]"),
    (lambda d: d.update(extra="x"), "unknown field(s) 'extra'"),
    (lambda d: d["conversion"].update(rho=0), "'rho' must be >= 1"),
])
def test_bad_fields_are_named(tmp_path, mutate, message):
    with pytest.raises(RecipeError) as excinfo:
        load_recipe(_write(tmp_path, mutate))
    assert message in str(excinfo.value) and "custom.toml" in str(excinfo.value)


def test_unknown_recipe_and_unreadable_file(tmp_path):
    with pytest.raises(RecipeError, match="unknown recipe 'cifar10-vgg19'.*cifar10-vgg16"):
        load_recipe("cifar10-vgg19")
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("title = \n")
    with pytest.raises(RecipeError, match="cannot read recipe"):
        load_recipe(bad)


def test_train_config_from_an_older_config_json_fills_new_fields():
    old = TrainConfig().to_dict()
    for added in ("autoaugment", "cutout", "recipe"):
        old.pop(added)
    restored = TrainConfig.from_dict(old)
    assert restored == TrainConfig()
    with pytest.raises(ValueError, match="unknown training setting"):
        TrainConfig.from_dict({**old, "mixup": 0.2})
