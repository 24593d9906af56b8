"""The model a checkpoint's ``config.json`` describes: a registered architecture, or a user's own
model from its factory with the QCFS rewrite it was fine-tuned as.

A config without ``model_factory`` (every checkpoint written before factories existed) names a
registered architecture: :func:`spikebridge.models.build_model`. One written by
``spikebridge train --model-factory pkg.mod:fn [--activation qcfs:L=4]`` records::

    "architecture": "pkg.mod:fn",
    "activation": {"kind": "qcfs", "levels": 4, ...},          # or {"kind": "relu", ...}
    "model_factory": {"target": "pkg.mod:fn", "kwargs": {...},
                      "to_qcfs": {"levels": 4, "maxpool": "keep", "samples": 256}}  # or null

and is rebuilt as ``to_qcfs(fn(**kwargs), levels, maxpool=...)`` — θ at a placeholder, since the
trained θ is part of the weights loaded next. :func:`factory_model` is the same construction for
training, where θ starts from a few training batches and the initial weights (a ReLU model's,
``--init-weights``) are loaded before the rewrite.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from .activations import ActivationSpec
from .checkpoint_errors import CheckpointError
from .models import build_model as build_registered_model
from .models.factory import ModelFactory, ModelFactoryError
from .models.weights_file import WeightsFile, load_weights
from .qcfs_fitting import MAXPOOL_OPTIONS, to_qcfs

__all__ = ["FACTORY_ACTIVATIONS", "QCFS_FIT_SAMPLES", "UntrustedFactoryError", "build_model",
           "factory_model", "factory_record"]

#: activation kinds a factory model is trained with: as it is, or rewritten by to_qcfs
FACTORY_ACTIVATIONS = ("relu", "qcfs")
#: training images to_qcfs starts θ from (its percentile of each activation's outputs)
QCFS_FIT_SAMPLES = 256
_PLACEHOLDER_THETA = 1.0  # replaced by the trained θ of the weights loaded after the rebuild


def check_factory_activation(activation: ActivationSpec, maxpool: str | None) -> None:
    """Refuse what a factory model cannot be trained with: an activation other than ``relu``
    (the model as it is) or ``qcfs`` (``to_qcfs``), ``maxpool`` without ``to_qcfs``."""
    if activation.kind not in FACTORY_ACTIVATIONS:
        raise ValueError(
            f"a model from --model-factory is trained as it is (--activation relu) or rewritten "
            f"with QCFS (--activation qcfs:L=4, spikebridge.to_qcfs); {activation.kind!r} "
            "applies to spikebridge's own architectures (--model)")
    if maxpool is not None and activation.kind != "qcfs":
        raise ValueError("--maxpool applies to the QCFS rewrite (--activation qcfs:L=N), which "
                         "keeps max-pooling or swaps it for average pooling; a model trained as "
                         "it is keeps its own pooling")
    if maxpool is not None and maxpool not in MAXPOOL_OPTIONS:
        raise ValueError(f"--maxpool must be one of {', '.join(MAXPOOL_OPTIONS)}, got "
                         f"{maxpool!r}")


def factory_record(factory: ModelFactory, activation: ActivationSpec, maxpool: str | None,
                   samples: int = QCFS_FIT_SAMPLES) -> dict[str, Any]:
    """The ``model_factory`` entry of a checkpoint's ``config.json`` (module docstring)."""
    check_factory_activation(activation, maxpool)
    rewrite = None if activation.kind == "relu" else {
        "levels": activation.levels, "maxpool": maxpool or "keep", "samples": samples}
    return {**factory.to_dict(), "to_qcfs": rewrite}


def _check_fits_data(model: nn.Module, factory: ModelFactory, input_shape: Sequence[int],
                     num_classes: int | None) -> None:
    """One forward pass on a zero image: the model takes the data set's images and returns one
    score per class (a clear error now, not a shape error deep inside training)."""
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *input_shape))
    except Exception as exc:
        raise ModelFactoryError(
            f"the model of {factory.describe()} cannot take the data set's images (a batch of "
            f"shape {[2, *input_shape]}): {type(exc).__name__}: {exc}") from exc
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or (
            num_classes is not None and out.shape[1] != num_classes):
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelFactoryError(
            f"the model of {factory.describe()} returns {got} for a batch of 2 images, but the "
            f"data set has {num_classes} classes: it must return [batch, {num_classes}] class "
            "scores (pass the class count with --factory-arg, e.g. num_classes=10)")


def factory_model(
    factory: ModelFactory, activation: ActivationSpec, maxpool: str | None = None, *,
    data: Iterable[Any] | None = None, init_weights: str | os.PathLike[str] | None = None,
    input_shape: Sequence[int] | None = None, num_classes: int | None = None,
    samples: int = QCFS_FIT_SAMPLES,
) -> tuple[nn.Module, WeightsFile | None]:
    """``factory``'s model with the weights of ``init_weights`` (the model as the factory builds
    it: a ReLU network's state dict), then, for a ``qcfs`` activation, ``to_qcfs(model,
    activation.levels, data=data, maxpool=maxpool)``; without ``data`` θ starts at a
    placeholder (the trained θ is loaded next). ``input_shape`` (C, H, W) and ``num_classes``:
    check the model on the data set's image size first. Returns the model and the weights file
    read (``None`` without ``init_weights``)."""
    check_factory_activation(activation, maxpool)
    model = factory.build()
    if input_shape is not None:
        _check_fits_data(model, factory, input_shape, num_classes)
    weights = None if init_weights is None else load_weights(
        model, init_weights, what=f"the model of {factory.describe()}")
    if activation.kind == "qcfs":
        model = to_qcfs(model, activation.levels, data=data, samples=samples,
                        maxpool=maxpool or "keep",
                        theta=None if data is not None else _PLACEHOLDER_THETA)
    return model, weights


class UntrustedFactoryError(CheckpointError):
    """A checkpoint whose model is built by a factory, loaded without trusting it: rebuilding
    the model would import and call code that is not in the checkpoint."""


def _rebuild_factory_model(config: dict, record: Any, trust_factory: bool) -> nn.Module:
    if not isinstance(record, dict):
        raise CheckpointError(f"config.json: model_factory must be an object, got {record!r}")
    if not trust_factory:
        target = record.get("target")
        raise UntrustedFactoryError(
            f"this checkpoint's model is built by the model factory {target!r}: loading it "
            "imports and calls that code, which is not part of the checkpoint (a config.json "
            "from someone else could name any function). Load it only if you trust that code: "
            "CLI --trust-factory, Python trust_factory=True")
    try:
        factory = ModelFactory.from_dict({k: record[k] for k in ("target", "kwargs")
                                          if k in record})
        activation = ActivationSpec.from_dict(config["activation"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"config.json describes a model we cannot build: {exc}") from exc
    rewrite = record.get("to_qcfs")
    expected = "qcfs" if rewrite is not None else "relu"
    if activation.kind != expected or (rewrite is not None and (
            not isinstance(rewrite, dict) or rewrite.get("levels") != activation.levels)):
        raise CheckpointError(
            f"config.json contradicts itself: activation {activation.to_dict()} but "
            f"model_factory.to_qcfs = {rewrite!r} (a QCFS rewrite has the activation's levels; "
            "a model trained as it is has none)")
    try:
        model, _ = factory_model(factory, activation,
                                 None if rewrite is None else rewrite.get("maxpool"))
    except ModelFactoryError as exc:
        raise CheckpointError(
            f"the checkpoint's model is built by the factory {factory.describe()} (it was "
            f"trained with --model-factory {factory.target}), which cannot be used here: "
            f"{exc}") from exc
    except ValueError as exc:
        raise CheckpointError(f"config.json describes a model we cannot build: {exc}") from exc
    return model


def build_model(config: dict, *, trust_factory: bool = False) -> nn.Module:
    """An untrained model of the architecture a checkpoint's config describes (module
    docstring): registered, or — only with ``trust_factory`` — a factory's (imported and called;
    the current directory is importable while it is imported). A factory config without
    ``trust_factory`` raises :class:`UntrustedFactoryError`."""
    record = config.get("model_factory")
    if record is None:
        return build_registered_model(config)
    return _rebuild_factory_model(config, record, trust_factory)
