"""The conversion-method registry: name → method class, filled by :func:`register_method`.

How to add a method: write one module under ``spikebridge/methods/`` with a
:class:`~spikebridge.methods.base.ConversionMethod` subclass (its ``name``, ``summary``,
``source_kinds``, ``source_hint`` and the equation in its docstring), decorate the class with
``@register_method`` and import the module in ``methods/__init__.py``. The CLI's ``--method``
choices, ``spikebridge info`` and every "unknown method" message are generated from here.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .base import ConversionMethod

__all__ = [
    "METHODS",
    "MethodSpec",
    "get_method",
    "list_methods",
    "method_class",
    "method_defaults",
    "parse_method_spec",
    "register_method",
]

METHODS: dict[str, type[ConversionMethod]] = {}

_M = TypeVar("_M", bound=type[ConversionMethod])


def register_method(cls: _M) -> _M:
    """Class decorator: make ``cls`` available as ``cls.name`` (``get_method``, ``--method``)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} has no method name (class attribute 'name')")
    if name in METHODS and METHODS[name] is not cls:
        raise ValueError(f"conversion method {name!r} is registered twice "
                         f"({METHODS[name].__name__} and {cls.__name__})")
    METHODS[name] = cls
    return cls


def method_class(method: str) -> type[ConversionMethod]:
    """The class registered as ``method`` (case-insensitive); unknown names list the known."""
    key = str(method).lower()
    if key not in METHODS:
        raise ValueError(f"unknown conversion method {method!r}; "
                         f"known: {', '.join(list_methods())}")
    return METHODS[key]


def method_defaults(method: str) -> dict[str, Any]:
    """The parameters of ``method`` with their default values (``{"rho": 4, ...}`` for COS)."""
    signature = inspect.signature(method_class(method).__init__).parameters
    return {name: p.default for name, p in signature.items()
            if name != "self" and p.default is not inspect.Parameter.empty}


def list_methods() -> list[str]:
    return sorted(METHODS)


def get_method(method: str | ConversionMethod, **params: Any) -> ConversionMethod:
    """Build a conversion method by name, checking its parameters (``rho`` for ``"cos"``, …)."""
    if isinstance(method, ConversionMethod):
        if params:
            raise ValueError("pass parameters either to the method object or by name, not both")
        return method
    key = str(method).lower()
    cls = method_class(method)
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
    signature = inspect.signature(method_class(name).__init__).parameters
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
