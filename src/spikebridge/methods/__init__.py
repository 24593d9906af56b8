"""Conversion-method registry: name → recipe class (one module per method)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from .base import ActivationSite, ConversionMethod, Preparation, WrongSourceModelError
from .cos import COSMethod
from .cos_frozen import FrozenCOSMethod
from .ecc import ECCMethod
from .opi import OPIMethod
from .qcfs import QCFSMethod
from .rmp import RMPMethod
from .rueckauer import MaxNormMethod, RobustNormMethod
from .slip import SlipMethod
from .strelu import LeakyThresholdMethod, StReLUMethod, ThresholdReLUMethod
from .threshold_balancing import ThresholdBalancingMethod

__all__ = [
    "METHODS",
    "ActivationSite",
    "ConversionMethod",
    "Preparation",
    "WrongSourceModelError",
    "MethodSpec",
    "get_method",
    "list_methods",
    "parse_method_spec",
]

METHODS: dict[str, type[ConversionMethod]] = {
    QCFSMethod.name: QCFSMethod,
    COSMethod.name: COSMethod,
    FrozenCOSMethod.name: FrozenCOSMethod,
    MaxNormMethod.name: MaxNormMethod,
    RobustNormMethod.name: RobustNormMethod,
    ThresholdBalancingMethod.name: ThresholdBalancingMethod,
    RMPMethod.name: RMPMethod,
    OPIMethod.name: OPIMethod,
    ECCMethod.name: ECCMethod,
    SlipMethod.name: SlipMethod,
    StReLUMethod.name: StReLUMethod,
    LeakyThresholdMethod.name: LeakyThresholdMethod,
    ThresholdReLUMethod.name: ThresholdReLUMethod,
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


@dataclass(frozen=True)
class MethodSpec:
    """A method named on the command line: ``name`` and its parameters (``rmp:scale=0.9``)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``rmp`` or ``rmp(scale=0.9)``: how results name this run."""
        if not self.params:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in self.params.items())})"


def _convert_value(method: str, key: str, text: str, default: Any) -> Any:
    kind = type(default) if default is not inspect.Parameter.empty else float
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(text)
            return lowered in ("1", "true", "yes", "on")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        return text
    except ValueError:
        raise ValueError(
            f"method {method!r}: parameter {key}={text!r} is not a valid {kind.__name__}"
        ) from None


def parse_method_spec(text: str) -> MethodSpec:
    """Parse ``name`` or ``name:key=value[:key=value...]`` (e.g. ``ecc:tre=0:cmb=0``).

    Values are converted to the type of the parameter's default; unknown methods and
    parameters are errors that list what exists.
    """
    name, *items = [part.strip() for part in text.strip().split(":")]
    key = name.lower()
    if key not in METHODS:
        raise ValueError(f"unknown conversion method {name!r}; known: {', '.join(list_methods())}")
    signature = inspect.signature(METHODS[key].__init__).parameters
    params: dict[str, Any] = {}
    for item in filter(None, items):
        pname, sep, value = item.partition("=")
        pname = pname.strip()
        if not sep:
            raise ValueError(f"method option {item!r} in {text!r} must look like key=value")
        if pname not in signature or pname == "self":
            accepted = ", ".join(p for p in signature if p != "self") or "none"
            raise ValueError(f"method {key!r} has no parameter {pname!r}; it accepts: {accepted}")
        params[pname] = _convert_value(key, pname, value, signature[pname].default)
    return MethodSpec(key, params)
