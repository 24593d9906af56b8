"""Reproduce a row of the COS paper: convert a model trained from a recipe with QCFS and with COS,
evaluate it and set our accuracy per T beside the paper's, with the gap (docs/reproduce.md).

:func:`check_model` refuses a model that is not the recipe's (architecture, dataset, QCFS with
the recipe's L); :func:`reproduce` runs both conversions on the test set (one simulation each,
every T read from it) and returns a JSON-ready record; :func:`format_reproduction` prints it.
Accuracies in the record are percentages, like the paper's; ``gap`` is ours − paper's in
percentage points, ``None`` where the paper reports no number.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from spikebridge.convert import convert
from spikebridge.experiments import RunOptions, evaluate_snn, load_model
from spikebridge.recipes import METHODS, Recipe

__all__ = ["ModelMismatchError", "check_model", "format_reproduction", "reproduce"]


class ModelMismatchError(ValueError):
    """The model to reproduce a recipe with was not trained as the recipe says."""


def check_model(recipe: Recipe, config: dict[str, Any], model_dir: str | os.PathLike[str]) -> None:
    """Check that a checkpoint's ``config`` is the recipe's model: same architecture, dataset
    and a QCFS activation with the recipe's levels ``L``.

    Raises:
        ModelMismatchError: naming every difference and the command that trains the right model.
    """
    activation = config.get("activation") or {}
    found = {
        "architecture": config.get("architecture"),
        "dataset": config.get("dataset"),
        "activation": activation.get("kind"),
        "L": activation.get("levels"),
    }
    wanted = {"architecture": recipe.architecture, "dataset": recipe.dataset,
              "activation": "qcfs", "L": recipe.levels}
    differences = [f"{key} {found[key]!r} (the recipe's: {wanted[key]!r})"
                   for key in wanted if found[key] != wanted[key]]
    if differences:
        raise ModelMismatchError(
            f"{model_dir} is not a model of recipe {recipe.name!r}: " + "; ".join(differences)
            + f". Train one with `spikebridge train --recipe {recipe.name} --out DIR`"
        )


def reproduce(
    recipe: Recipe,
    model_dir: str | os.PathLike[str],
    *,
    steps: Sequence[int] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    batch_size: int = 250,
    device: str | torch.device = "cpu",
    mode: str = "auto",
    progress: bool = False,
    allow_unverified: bool | None = None,
    ignore_data_mismatch: bool = False,
    workers: int = 0,
) -> dict[str, Any]:
    """Convert the model in ``model_dir`` with ``qcfs`` and with ``cos`` (ρ from the recipe),
    evaluate both on the test set (or a fixed random subset of ``limit`` images) at every T in
    ``steps`` (default: the recipe's), and return the record of ours vs the paper's.

    Raises:
        ModelMismatchError: the model is not the recipe's (:func:`check_model`).
        DataMismatchError: the test files are not the model's (shape, classes, fingerprint;
            ``ignore_data_mismatch`` waives the fingerprint).
        ValueError: bad ``steps`` or ``limit``, or not a COS recipe.
    """
    if recipe.family != "cos":
        raise ValueError(f"recipe {recipe.name!r} is a row of the {recipe.family.upper()} paper; "
                         "`reproduce` compares COS rows (QCFS and COS conversions) only")
    steps = list(recipe.steps if steps is None else steps)
    if not steps or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in steps):
        raise ValueError(f"time-steps T must be integers >= 1, got {steps}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    options = RunOptions(device=device, mode=mode, batch_size=batch_size, limit=limit,
                         data_dir=data_dir, workers=workers, progress=progress,
                         allow_unverified=allow_unverified,
                         ignore_data_mismatch=ignore_data_mismatch, count_operations=False)
    # the model must be the recipe's before any data is read; the test set is streamed at the
    # model's image size, this process's share
    model = load_model(model_dir, options, check=lambda config: check_model(recipe, config,
                                                                             model_dir))
    ann, config, loader = model.ann, model.config, model.loader
    record: dict[str, Any] = {
        "recipe": recipe.name, "title": recipe.title, "source": recipe.source,
        "model": str(model_dir), "dataset": config["dataset"],
        "architecture": config["architecture"], "L": recipe.levels, "rho": recipe.rho,
        "T": steps, "images": len(loader.dataset),
    }  # fmt: skip
    ann_accuracy = None
    for method in METHODS:
        params = {"rho": recipe.rho} if method == "cos" else {}
        snn = convert(ann, method, **params)
        result = evaluate_snn(snn, loader, steps, options,
                              ann=ann if ann_accuracy is None else None)
        if ann_accuracy is None:
            ann_accuracy = 100.0 * result.ann_accuracy
        paper = recipe.paper[method]
        ours = {t: 100.0 * acc for t, acc in result.at(steps).items()}
        theirs = {t: paper.accuracy.get(t) for t in steps}
        record[method] = {
            "ours": ours,
            "paper": theirs,
            "gap": {t: None if theirs[t] is None else ours[t] - theirs[t] for t in steps},
            "paper_ann": paper.ann,
        }
    record["ann"] = {"ours": ann_accuracy,
                     "paper": {method: recipe.paper[method].ann for method in METHODS}}
    return record


def _cell(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def format_reproduction(record: dict[str, Any]) -> str:
    """The record as a table: for the ANN, QCFS and COS one line each of ours, the paper's and
    the gap (ours − paper, percentage points) per T; ``–`` where the paper has no number."""
    steps = record["T"]
    width = 8
    header = f"{'':<18}" + "".join(f"{'T=' + str(t):>{width}}" for t in steps)
    lines = [
        f"{record['title']} — recipe {record['recipe']}, model {record['model']}, "
        f"{record['images']} test images, COS ρ = {record['rho']}",
        "top-1 accuracy (%); gap = ours − paper (percentage points)",
        "",
        header,
    ]
    def row(label: str, values: Sequence[float | None], signed: bool = False) -> str:
        return f"{label:<18}" + "".join(f"{_cell(v, signed):>{width}}" for v in values)

    lines.append(row("ANN ours", [record["ann"]["ours"]] * len(steps)))
    for method in METHODS:
        result = record[method]
        label = "QCFS" if method == "qcfs" else f"COS ρ={record['rho']}"
        lines += [
            "",
            row(f"ANN paper ({method})", [record["ann"]["paper"][method]] * len(steps)),
            row(f"{label} ours", [result["ours"][t] for t in steps]),
            row(f"{label} paper", [result["paper"][t] for t in steps]),
            row(f"{label} gap", [result["gap"][t] for t in steps], signed=True),
        ]
    return "\n".join(lines)
