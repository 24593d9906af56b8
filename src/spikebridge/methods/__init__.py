"""Conversion-method registry: name → recipe class (one module per method)."""

from __future__ import annotations

import inspect
from typing import Any

from .base import ActivationSite, ConversionMethod
from .cos import COSMethod
from .qcfs import QCFSMethod

__all__ = ["ActivationSite", "ConversionMethod", "METHODS", "get_method", "list_methods"]

METHODS: dict[str, type[ConversionMethod]] = {
    QCFSMethod.name: QCFSMethod,
    COSMethod.name: COSMethod,
}


def list_methods() -> list[str]:
    return sorted(METHODS)


def get_method(method: str | ConversionMethod, **params: Any) -> ConversionMethod:
    """Build a method recipe by name, checking its parameters (``rho`` for ``"cos"``, …)."""
    if isinstance(method, ConversionMethod):
        if params:
            raise ValueError("pass parameters either to the method object or by name, not both")
        return method
    key = str(method).lower()
    if key not in METHODS:
        known = ", ".join(list_methods())
        raise ValueError(f"unknown conversion method {method!r}; known: {known}")
    cls = METHODS[key]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"method {key!r} has no parameter(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'none'}"
        )
    return cls(**params)
