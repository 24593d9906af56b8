"""Conversion methods: one module per method, each registered by name (:mod:`.registry`).

A method says how one ANN activation becomes a spiking neuron (threshold, initial potential,
reset) and what it must measure or calibrate first (:class:`~.base.ConversionMethod`).
"""

from __future__ import annotations

from . import (  # noqa: F401 - importing a method's module registers it
    cos,
    cos_frozen,
    ecc,
    opi,
    qcfs,
    rmp,
    rueckauer,
    slip,
    strelu,
    threshold_balancing,
)
from .base import ActivationSite, ConversionMethod, Preparation, WrongSourceModelError
from .registry import (
    METHODS,
    MethodSpec,
    get_method,
    list_methods,
    method_class,
    method_defaults,
    parse_method_spec,
    register_method,
)

__all__ = [
    "METHODS",
    "ActivationSite",
    "ConversionMethod",
    "MethodSpec",
    "Preparation",
    "WrongSourceModelError",
    "get_method",
    "list_methods",
    "method_class",
    "method_defaults",
    "parse_method_spec",
    "register_method",
]
