"""Models: every supported ANN, built by name with a chosen activation.

The registry (:mod:`spikebridge.models.registry`: :func:`register_model`, :func:`create_model`,
:func:`list_models`) holds the constructors; importing the model modules below registers them.
To add a model, see "How to add a model" in :mod:`spikebridge.models.registry`.
:func:`build_model` builds the model a checkpoint's config describes.
"""

from __future__ import annotations

# The model modules register their constructors when imported: one import per module here.
from spikebridge.models import resnet, small_cnn, vgg, vgg7  # noqa: F401
from spikebridge.models.from_config import build_model
from spikebridge.models.registry import (
    _REGISTRY,  # noqa: F401 - the registry itself, for tests that register a model temporarily
    ModelConstructor,
    create_model,
    list_models,
    register_model,
)

__all__ = ["ModelConstructor", "build_model", "create_model", "list_models", "register_model"]
