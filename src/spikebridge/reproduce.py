"""Reproduce a row of a paper: convert a model trained from a recipe with the recipe's methods,
evaluate it and set our accuracy per T beside the paper's, with the gap (docs/reproduce.md).

A COS recipe converts with QCFS and with COS (ρ from the recipe) on the test images; an ECC
recipe (the ECC paper's DVS row) converts its ReLU CNN with ECC (κ, η from the recipe,
calibrated on training recordings) and runs the SNN on the test recordings' event frames,
``max(T)`` frames a recording, optionally with signed neurons with memory (docs/methods.md §2.7).

:func:`check_model` refuses a model that is not the recipe's (architecture, dataset, and the
activation: QCFS with the recipe's L, or ReLU); :func:`reproduce` runs the conversions on the
test set (one simulation each where the method allows, every T read from it) and returns a
JSON-ready record; :func:`format_reproduction` prints it.
Accuracies in the record are percentages, like the paper's; ``gap`` is ours − paper's in
percentage points, ``None`` where the paper reports no number.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from spikebridge.experiments import (
    RunOptions,
    convert_model,
    evaluate_snn,
    load_model,
    run_label,
    sample_count,
)
from spikebridge.methods import MethodSpec, get_method
from spikebridge.recipes import Recipe

__all__ = ["ModelMismatchError", "check_model", "format_reproduction", "reproduce"]


class ModelMismatchError(ValueError):
    """The model to reproduce a recipe with was not trained as the recipe says."""


def check_model(recipe: Recipe, config: dict[str, Any], model_dir: str | os.PathLike[str]) -> None:
    """Check that a checkpoint's ``config`` is the recipe's model: same architecture, dataset
    and activation (a COS recipe's: QCFS with the recipe's levels ``L``; an ECC recipe's: its
    ``activation_kind``, ReLU).

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
    if recipe.family != "cos":
        wanted = {**wanted, "activation": recipe.activation_kind}
        del wanted["L"]
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
    calibration_samples: int | None = None,
    neuron: str = "if",
) -> dict[str, Any]:
    """Convert the model in ``model_dir`` with the recipe's methods (COS: ``qcfs`` and ``cos``
    with the recipe's ρ; ECC: ``ecc`` with its κ and η, on ``calibration_samples`` training
    recordings, default 1000), evaluate each on the test set (or a fixed random subset of
    ``limit`` samples) at every T in ``steps`` (default: the recipe's), and return the record
    of ours vs the paper's. An ECC recipe on an event data set runs the SNN on the recordings'
    frames (``max(steps)`` a recording); ``neuron="memory"`` gives it signed neurons with
    memory (docs/methods.md §2.7).

    Raises:
        ModelMismatchError: the model is not the recipe's (:func:`check_model`).
        DataMismatchError: the test files are not the model's (shape, classes, fingerprint;
            ``ignore_data_mismatch`` waives the fingerprint).
        ValueError: bad ``steps``, ``limit`` or ``neuron``, or an option the recipe's family
            does not use.
    """
    if recipe.family == "cos" and calibration_samples is not None:
        raise ValueError("calibration samples apply to ECC recipes (QCFS and COS need no "
                         "calibration data)")
    steps = list(recipe.steps if steps is None else steps)
    if not steps or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in steps):
        raise ValueError(f"time-steps T must be integers >= 1, got {steps}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    events = recipe.family == "ecc" and _is_event_set(recipe.dataset)
    options = RunOptions(device=device, mode=mode, batch_size=batch_size, limit=limit,
                         data_dir=data_dir, workers=workers, progress=progress,
                         allow_unverified=allow_unverified,
                         ignore_data_mismatch=ignore_data_mismatch, count_operations=False,
                         calibration_samples=calibration_samples, neuron=neuron,
                         **({"input": "sequence", "frames": max(steps)} if events else {}))
    # the model must be the recipe's before any data is read; the test set is streamed at the
    # model's image size, this process's share
    model = load_model(model_dir, options, check=lambda config: check_model(recipe, config,
                                                                             model_dir))
    ann, config, loader = model.ann, model.config, model.loader
    record: dict[str, Any] = {
        "recipe": recipe.name, "family": recipe.family, "title": recipe.title,
        "source": recipe.source, "model": str(model_dir), "dataset": config["dataset"],
        "architecture": config["architecture"], "L": recipe.levels, "rho": recipe.rho,
        "kappa": recipe.kappa, "eta": recipe.eta, "input": options.input,
        "frames": options.frames, "neuron": neuron, "T": steps,
        "images": sample_count(loader), "labels": {},
    }  # fmt: skip
    ann_accuracy = None
    for method in recipe.methods:
        params = _method_params(recipe, method)
        snn, calibration = convert_model(ann, config, get_method(method, **params), options)
        record["labels"][method] = run_label(MethodSpec(method), neuron)
        if calibration is not None:
            record["calibration_samples"] = calibration.samples
        result = evaluate_snn(snn, loader, steps, options,
                              ann=ann if ann_accuracy is None else None,
                              label=record["labels"][method])
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
                     "paper": {method: recipe.paper[method].ann for method in recipe.methods}}
    return record


def _method_params(recipe: Recipe, method: str) -> dict[str, Any]:
    """The recipe's parameters of ``method``: COS's ρ, ECC's κ and η."""
    if method == "cos":
        return {"rho": recipe.rho}
    if method == "ecc":
        return {"kappa": recipe.kappa, "eta": recipe.eta}
    return {}


def _is_event_set(dataset: str) -> bool:
    from spikebridge.data.registry import dataset_info

    return dataset_info(dataset).events is not None


def _cell(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def format_reproduction(record: dict[str, Any]) -> str:
    """The record as a table: for the ANN, QCFS and COS one line each of ours, the paper's and
    the gap (ours − paper, percentage points) per T; ``–`` where the paper has no number."""
    steps = record["T"]
    width = 8
    family = record.get("family", "cos")
    methods = list(record["ann"]["paper"])
    header = f"{'':<18}" + "".join(f"{'T=' + str(t):>{width}}" for t in steps)
    if family == "cos":
        setting = f"{record['images']} test images, COS ρ = {record['rho']}"
    else:
        shown = (f"{record['images']} test recordings, {record['frames']} event frames each"
                 if record.get("input") == "sequence" else f"{record['images']} test images")
        neuron = ("signed neurons with memory" if record.get("neuron") == "memory"
                  else "IF neurons")
        setting = f"{shown}, ECC κ = {record['kappa']:g}, η = {record['eta']:g}, {neuron}"
    lines = [
        f"{record['title']} — recipe {record['recipe']}, model {record['model']}, {setting}",
        "top-1 accuracy (%); gap = ours − paper (percentage points)",
        "",
        header,
    ]
    def row(label: str, values: Sequence[float | None], signed: bool = False) -> str:
        return f"{label:<18}" + "".join(f"{_cell(v, signed):>{width}}" for v in values)

    lines.append(row("ANN ours", [record["ann"]["ours"]] * len(steps)))
    for method in methods:
        result = record[method]
        label = {"qcfs": "QCFS", "cos": f"COS ρ={record['rho']}", "ecc": "ECC"}.get(
            method, method)
        if record.get("neuron") == "memory":
            label += "+memory"
        lines += [
            "",
            row(f"ANN paper ({method})", [record["ann"]["paper"][method]] * len(steps)),
            row(f"{label} ours", [result["ours"][t] for t in steps]),
            row(f"{label} paper", [result["paper"][t] for t in steps]),
            row(f"{label} gap", [result["gap"][t] for t in steps], signed=True),
        ]
    return "\n".join(lines)
