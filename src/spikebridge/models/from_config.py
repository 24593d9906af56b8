"""Build the model a checkpoint's ``config.json`` describes, through the registry."""

from __future__ import annotations

from torch import nn

from spikebridge.activations import ActivationSpec
from spikebridge.checkpoint_errors import CheckpointError
from spikebridge.models.registry import create_model

__all__ = ["build_model"]


def build_model(config: dict) -> nn.Module:
    """An untrained model of the architecture a config describes."""
    try:
        activation = ActivationSpec.from_dict(config["activation"])
        return create_model(
            config["architecture"], num_classes=int(config["num_classes"]),
            in_channels=int(config["in_channels"]), activation=activation,
            **config.get("model_kwargs", {}),
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"config.json describes a model we cannot build: {exc}") from exc

