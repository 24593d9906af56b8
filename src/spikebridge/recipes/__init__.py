"""Recipes: one TOML file per row of a paper's result tables (docs/reproduce.md).

A recipe is plain data shipped in this package (``spikebridge/recipes/NAME.toml``), of one of
two families, named by the optional top-level key ``family``:

* ``"cos"`` (the default; the COS paper's rows): the model (architecture, dataset, QCFS levels
  ``L`` and initial threshold), the training hyper-parameters, the augmentation, the COS
  pre-simulation length ρ and the time-steps, and the accuracies the paper reports for the ANN,
  QCFS and COS at each T (tables ``[paper.qcfs]``, ``[paper.cos]``);
* ``"ecc"`` (the ECC paper's rows): the model (architecture, dataset, ``activation = "relu"``:
  ECC converts an ordinary ReLU CNN), training and augmentation as above, ECC's ``kappa`` and
  ``eta`` and the time-steps (frames, for event data) in ``[conversion]``, and the CNN and SNN
  accuracies in ``[paper.ecc]``.

:func:`load_recipe` reads and validates one — every table and key of its family is required,
unknown keys are refused, and each error names the file and the field — and
:func:`list_recipes` lists the shipped ones. ``spikebridge train --recipe NAME`` trains from
:meth:`Recipe.train_config`; ``spikebridge reproduce --recipe NAME`` compares a trained model
with the row, for either family (:mod:`spikebridge.reproduce`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FAMILIES", "RECIPE_DIR", "PaperRow", "Recipe", "RecipeError", "list_recipes",
           "load_recipe"]

RECIPE_DIR = Path(__file__).resolve().parent
"""Where the shipped recipe files are."""

METHODS = ("qcfs", "cos")
"""The methods whose reported accuracies a COS recipe holds, in table order."""

FAMILIES: dict[str, tuple[str, ...]] = {"cos": METHODS, "ecc": ("ecc",)}
"""Recipe families and the methods whose reported accuracies each holds (``[paper.<method>]``)."""


class RecipeError(ValueError):
    """A recipe is unknown, unreadable or has a missing, unknown or invalid field."""


@dataclass(frozen=True)
class PaperRow:
    """One method's row of a paper table: the ANN accuracy and the SNN accuracy per T (%)."""

    ann: float
    accuracy: dict[int, float]


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """A validated recipe (see the module docstring); accuracies are in percent. Fields of the
    other family are ``None``: ``levels``, ``theta``, ``rho`` (COS), ``kappa``, ``eta`` (ECC)."""

    name: str
    title: str
    source: str
    notes: str
    family: str = "cos"
    architecture: str
    dataset: str
    activation_kind: str = "qcfs"
    levels: int | None = None
    theta: float | None = None
    epochs: int
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    crop_padding: int
    horizontal_flip: bool
    autoaugment: bool
    cutout: int
    rho: int | None = None
    kappa: float | None = None
    eta: float | None = None
    steps: tuple[int, ...]
    paper: dict[str, PaperRow]

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods whose paper accuracies this recipe holds (keys of :attr:`paper`)."""
        return FAMILIES[self.family]

    def activation(self):
        """The activation the recipe trains with: QCFS (``L`` = :attr:`levels`) for a COS
        recipe, the plain ``activation_kind`` (ReLU) for an ECC one."""
        from spikebridge.activations import ActivationSpec

        if self.family == "cos":
            return ActivationSpec("qcfs", levels=self.levels, theta=self.theta)
        return ActivationSpec(self.activation_kind)

    def summary(self) -> str:
        """One line: the model and the conversion settings (``spikebridge info`` prints it)."""
        if self.family == "cos":
            return f"{self.architecture}, L = {self.levels}, ρ = {self.rho}"
        steps = ", ".join(map(str, self.steps))
        return (f"{self.architecture} ({self.activation_kind}) on {self.dataset}, ECC κ = "
                f"{self.kappa:g}, η = {self.eta:g}, T = {steps}")

    def train_config(self, **overrides: Any):
        """A :class:`~spikebridge.train.TrainConfig` with the recipe's values; ``overrides``
        (e.g. ``epochs=1``, ``train_subset=256``) replace single fields."""
        from spikebridge.train import TrainConfig

        values: dict[str, Any] = {
            "architecture": self.architecture, "dataset": self.dataset,
            "activation": self.activation(), "epochs": self.epochs, "lr": self.lr,
            "momentum": self.momentum, "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "augment": True, "crop_padding": self.crop_padding,
            "horizontal_flip": self.horizontal_flip,
            "autoaugment": self.autoaugment, "cutout": self.cutout, "recipe": self.name,
        }  # fmt: skip
        values.update(overrides)
        return TrainConfig(**values)


def list_recipes() -> list[str]:
    """Names of the shipped recipes, sorted."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))


# table -> {key: (type, check or None, what the check requires)}
def _positive(v: float) -> bool:
    return v > 0


def _non_negative(v: float) -> bool:
    return v >= 0


_SCHEMA: dict[str, dict[str, tuple[type, Any, str]]] = {
    "": {"title": (str, None, ""), "source": (str, None, ""), "notes": (str, None, "")},
    "model": {
        "architecture": (str, None, ""), "dataset": (str, None, ""),
        "levels": (int, _positive, ">= 1"), "theta": (float, _positive, "> 0"),
    },
    "training": {
        "epochs": (int, _positive, ">= 1"), "lr": (float, _positive, "> 0"),
        "momentum": (float, lambda v: 0 <= v < 1, "in [0, 1)"),
        "weight_decay": (float, _non_negative, ">= 0"), "batch_size": (int, _positive, ">= 1"),
    },
    "augmentation": {
        "crop_padding": (int, _non_negative, ">= 0"), "horizontal_flip": (bool, None, ""),
        "autoaugment": (bool, None, ""), "cutout": (int, _non_negative, ">= 0"),
    },
    "conversion": {"rho": (int, _positive, ">= 1"), "T": (list, None, "")},
}  # fmt: skip
# an ECC recipe: the same tables, with its own [model] and [conversion] keys
_ECC_SCHEMA: dict[str, dict[str, tuple[type, Any, str]]] = {
    **_SCHEMA,
    "model": {
        "architecture": (str, None, ""), "dataset": (str, None, ""),
        "activation": (str, lambda v: v == "relu", "'relu' (ECC converts a ReLU CNN)"),
    },
    "conversion": {
        "kappa": (float, _positive, "> 0"),
        "eta": (float, lambda v: 0 <= v < 1, "in [0, 1)"),
        "T": (list, None, ""),
    },
}  # fmt: skip
_SCHEMAS = {"cos": _SCHEMA, "ecc": _ECC_SCHEMA}
_TABLES = ("model", "training", "augmentation", "conversion", "paper")


def _field(where: str, table: dict, key: str, kind: type, check: Any, requirement: str) -> Any:
    if key not in table:
        raise RecipeError(f"{where}: missing field {key!r}")
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise RecipeError(f"{where}: field {key!r} must be {kind.__name__}, got {value!r}")
    if check is not None and not check(value):
        raise RecipeError(f"{where}: field {key!r} must be {requirement}, got {value!r}")
    return value


def _no_unknown(where: str, table: dict, known: set[str]) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise RecipeError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; known: "
                          f"{', '.join(sorted(known))}")


def _steps(where: str, value: list) -> tuple[int, ...]:
    if not value or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 1
                            for t in value):
        raise RecipeError(f"{where}: field 'T' must be a non-empty list of integers >= 1, "
                          f"got {value!r}")
    return tuple(value)


def _paper_row(where: str, table: Any) -> PaperRow:
    if not isinstance(table, dict):
        raise RecipeError(f"{where}: must be a table with 'ann' and 'accuracy'")
    _no_unknown(where, table, {"ann", "accuracy"})
    ann = _field(where, table, "ann", float, lambda v: 0 <= v <= 100, "a percentage (0..100)")
    raw = _field(where, table, "accuracy", dict, None, "")
    accuracy: dict[int, float] = {}
    for key, value in raw.items():
        if not key.isdigit() or int(key) < 1:
            raise RecipeError(f"{where}.accuracy: key {key!r} is not a time-step T >= 1")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
            raise RecipeError(f"{where}.accuracy: T = {key}: {value!r} is not a percentage")
        accuracy[int(key)] = float(value)
    return PaperRow(ann, dict(sorted(accuracy.items())))


def _validate(name: str, data: dict, path: Path) -> Recipe:
    where = str(path)
    _no_unknown(where, data, set(_SCHEMA[""]) | set(_TABLES) | {"family"})
    family = data.get("family", "cos")
    if family not in FAMILIES:
        raise RecipeError(f"{where}: field 'family' must be one of {', '.join(FAMILIES)}, got "
                          f"{family!r}")
    schema = _SCHEMAS[family]
    values: dict[str, Any] = {"family": family}
    for table_name, fields in schema.items():
        table = data if table_name == "" else data.get(table_name)
        label = where if table_name == "" else f"{where} [{table_name}]"
        if not isinstance(table, dict):
            raise RecipeError(f"{where}: missing table [{table_name}]")
        if table_name:
            _no_unknown(label, table, set(fields))
        for key, (kind, check, requirement) in fields.items():
            values[key] = _field(label, table, key, kind, check, requirement)
    from spikebridge.data import list_datasets, list_streaming_datasets
    from spikebridge.models import list_models

    if values["architecture"] not in list_models():
        raise RecipeError(f"{where} [model]: unknown architecture {values['architecture']!r}; "
                          f"known: {', '.join(list_models())}")
    datasets = list_datasets() + list(list_streaming_datasets())
    if values["dataset"] not in datasets:
        raise RecipeError(f"{where} [model]: unknown dataset {values['dataset']!r}; known: "
                          f"{', '.join(datasets)}")
    if "activation" in values:
        values["activation_kind"] = values.pop("activation")
    paper = data.get("paper")
    if not isinstance(paper, dict):
        raise RecipeError(f"{where}: missing table [paper]")
    _no_unknown(f"{where} [paper]", paper, set(FAMILIES[family]))
    rows = {}
    for method in FAMILIES[family]:
        if method not in paper:
            raise RecipeError(f"{where}: missing table [paper.{method}]")
        rows[method] = _paper_row(f"{where} [paper.{method}]", paper[method])
    steps = _steps(f"{where} [conversion]", values.pop("T"))
    return Recipe(name=name, steps=steps, paper=rows, **values)


def load_recipe(name: str | Path) -> Recipe:
    """The shipped recipe ``name`` (see :func:`list_recipes`), or the recipe file at a path
    ending in ``.toml``; validated.

    Raises:
        RecipeError: unknown name, missing or unreadable file, invalid TOML, or a missing,
            unknown or invalid field (the message names the file and the field).
    """
    text = str(name)
    if text.endswith(".toml"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise RecipeError(f"recipe file {path} does not exist")
    else:
        path = RECIPE_DIR / f"{text}.toml"
        if not path.is_file():
            raise RecipeError(f"unknown recipe {text!r}; known recipes: "
                              f"{', '.join(list_recipes())} (or give a path to a .toml file)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc}") from exc
    return _validate(path.stem, data, path)
