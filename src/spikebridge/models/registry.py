"""Model registry: build any supported ANN by name with a chosen activation.

A timm-style registry. Every constructor is registered with :func:`register_model` and has the
same signature ``(num_classes, in_channels, activation) -> nn.Module``, where ``activation`` is a
zero-argument factory returning a *fresh* activation module (one per layer, never reused, so that
every layer gets its own trainable threshold and, after conversion, its own spiking neuron).
Use :func:`create_model` to build a model and :func:`list_models` to see what is available.

How to add a model
------------------
In one place: define its constructor in a module under ``spikebridge/models/``, decorated with
``@register_model("name")`` from this module, and import that module in
``spikebridge/models/__init__.py`` (the import is what registers it). Nothing else lists model
names: :func:`list_models`, the error for an unknown name, ``spikebridge info`` and the recipe
checks all read the registry.

A leaf module: it imports only :mod:`torch` and :mod:`spikebridge.activations`, never the model
modules (they import it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from torch import nn

from spikebridge.activations import ActivationSpec

__all__ = ["ModelConstructor", "create_model", "list_models", "register_model"]


class ModelConstructor(Protocol):
    """The signature every registered model constructor has."""

    def __call__(
        self, num_classes: int, in_channels: int, activation: Callable[[], nn.Module]
    ) -> nn.Module: ...


_REGISTRY: dict[str, ModelConstructor] = {}


def register_model(name: str) -> Callable[[ModelConstructor], ModelConstructor]:
    """Decorator that registers a model constructor under ``name`` (names must be unique)."""

    def decorator(fn: ModelConstructor) -> ModelConstructor:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def create_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    activation: ActivationSpec | Callable[[], nn.Module] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the registered model ``name``.

    ``activation`` is an :class:`ActivationSpec` (turned into its ``build`` factory), a
    zero-argument factory returning a fresh activation module, or ``None`` for the default
    ``ActivationSpec()`` (QCFS, ``L=4``, ``theta=2``). Extra keyword arguments go to the
    constructor (e.g. ``input_size`` for ``fashion_cnn``).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    if activation is None:
        activation = ActivationSpec()
    factory = activation.build if isinstance(activation, ActivationSpec) else activation
    if not callable(factory):
        raise TypeError(
            f"activation must be an ActivationSpec, a factory or None, got {type(activation)!r}"
        )
    return _REGISTRY[name](
        num_classes=num_classes, in_channels=in_channels, activation=factory, **kwargs
    )

