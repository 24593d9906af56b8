"""Build the registered model a checkpoint's ``config.json`` describes, through the registry.

A config that records a ``model_factory`` (a user's own model, ``spikebridge train
--model-factory``) is built by :func:`spikebridge.checkpoint.build_model`, which can also apply
the QCFS rewrite (a layer above this one); here it is refused with that pointer.
"""

from __future__ import annotations

from torch import nn

from spikebridge.activations import ActivationSpec
from spikebridge.checkpoint_errors import CheckpointError
from spikebridge.models.registry import create_model

__all__ = ["build_model"]


def build_model(config: dict) -> nn.Module:
    """An untrained model of the registered architecture a config describes."""
    if config.get("model_factory") is not None:
        raise CheckpointError(
            f"config.json describes a model built by the factory {config['architecture']!r}, "
            "not a registered architecture; build it with spikebridge.checkpoint.build_model "
            "(or load it with spikebridge.checkpoint.load_checkpoint)")
    try:
        activation = ActivationSpec.from_dict(config["activation"])
        return create_model(
            config["architecture"], num_classes=int(config["num_classes"]),
            in_channels=int(config["in_channels"]), activation=activation,
            **config.get("model_kwargs", {}),
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"config.json describes a model we cannot build: {exc}") from exc
