"""A user's own model, named as ``pkg.module:function`` (the ``module:attr`` convention of
uvicorn and gunicorn) and built by calling it.

:class:`ModelFactory` is the record a checkpoint's ``config.json`` keeps (``target`` and the
keyword arguments, JSON values); :meth:`ModelFactory.build` imports the module, looks the
attribute up (a dotted path, ``pkg.mod:Class.method``, works too), calls it and checks that it
returned an ``nn.Module``. As with uvicorn, the current directory is importable: it is put at
the front of ``sys.path`` before the import (``python -m`` does the same). Every failure is a
:class:`ModelFactoryError` (a ``ValueError``) saying what is wrong and how to fix it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["ModelFactory", "ModelFactoryError", "parse_factory_args"]

_IMPORTABLE_HINT = ("make it importable: run from the directory that holds it (the current "
                    "directory is importable), add that directory to PYTHONPATH, or pip install "
                    "your package")


class ModelFactoryError(ValueError):
    """A model factory that cannot be named, imported, called, or did not build a model."""


def _dotted(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def parse_factory_args(items: Iterable[str]) -> dict[str, Any]:
    """``["depth=3", "name=wide", "sizes=[1, 2]"]`` -> keyword arguments. A value is read as a
    JSON literal (number, true/false/null, string in double quotes, list, object); a value that
    is not JSON is taken as a plain string (``name=wide`` is ``"wide"``)."""
    kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ModelFactoryError(f"factory argument {item!r} must look like key=value with a "
                                    "Python identifier as key (e.g. --factory-arg width=16)")
        if key in kwargs:
            raise ModelFactoryError(f"factory argument {key!r} is given twice")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    return kwargs


@dataclass(frozen=True)
class ModelFactory:
    """``target``: ``"pkg.module:function"``; ``kwargs``: what the function is called with."""

    target: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.target, str):
            raise ModelFactoryError(f"a model factory is named by a string 'pkg.module:function',"
                                    f" got {type(self.target).__name__}")
        module, sep, attribute = self.target.partition(":")
        if not sep:
            raise ModelFactoryError(
                f"model factory {self.target!r} has no colon: name it as 'pkg.module:function' "
                "(the module to import, a colon, the function in it that returns the model)")
        if not _dotted(module) or not _dotted(attribute):
            raise ModelFactoryError(
                f"model factory {self.target!r} is not 'pkg.module:function': the part before "
                "the colon must be a module name (dotted identifiers), the part after it a "
                "name in that module")
        if not isinstance(self.kwargs, Mapping) or not all(
                isinstance(key, str) and key.isidentifier() for key in self.kwargs):
            raise ModelFactoryError(f"the keyword arguments of {self.target} must map "
                                    "identifiers to values")
        try:
            json.dumps(dict(self.kwargs))
        except (TypeError, ValueError) as exc:
            raise ModelFactoryError(f"the keyword arguments of {self.target} must be JSON "
                                    f"values (they are recorded in config.json): {exc}") from exc

    @property
    def module_name(self) -> str:
        return self.target.partition(":")[0]

    @property
    def attribute(self) -> str:
        return self.target.partition(":")[2]

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelFactory:
        if not isinstance(data, Mapping) or not isinstance(data.get("target"), str):
            raise ModelFactoryError(f"a model factory record needs a 'target' string, got "
                                    f"{data!r}")
        unknown = sorted(set(data) - {"target", "kwargs"})
        if unknown:
            raise ModelFactoryError(f"unknown model factory field(s) {', '.join(unknown)}")
        return cls(data["target"], dict(data.get("kwargs") or {}))

    def describe(self) -> str:
        """``pkg.mod:fn`` or ``pkg.mod:fn(width=16)``: what the user would call."""
        if not self.kwargs:
            return self.target
        return f"{self.target}({', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())})"

    def _import_module(self) -> Any:
        cwd = os.getcwd()
        added = cwd not in sys.path and "" not in sys.path
        if added:  # uvicorn's default --app-dir: the current directory, for this import only
            sys.path.insert(0, cwd)
        importlib.invalidate_caches()  # a module written after this process started
        name = self.module_name
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if name == missing or name.startswith(missing + "."):
                raise ModelFactoryError(
                    f"model factory {self.target}: no module named {missing!r} (searched the "
                    f"current directory {cwd} and sys.path); {_IMPORTABLE_HINT}") from exc
            raise ModelFactoryError(
                f"model factory {self.target}: importing {name} failed because it imports "
                f"{missing!r}, which is not installed or not importable") from exc
        except Exception as exc:  # SyntaxError, an exception at the module's top level, ...
            raise ModelFactoryError(
                f"model factory {self.target}: importing {name} raised "
                f"{type(exc).__name__}: {exc}") from exc
        finally:
            if added and cwd in sys.path:  # later imports must not look in the current directory
                sys.path.remove(cwd)

    def resolve(self) -> Callable[..., Any]:
        """The callable the target names (imported; checked to be callable)."""
        module = self._import_module()
        found: Any = module
        walked = []
        for part in self.attribute.split("."):
            if not hasattr(found, part):
                where = getattr(module, "__file__", None) or self.module_name
                owner = ".".join(walked) or f"module {self.module_name} ({where})"
                offered = sorted(name for name, value in getattr(found, "__dict__", {}).items()
                                 if callable(value) and not name.startswith("_"))
                hint = f"; it has {', '.join(offered[:8])}" if offered else ""
                raise ModelFactoryError(
                    f"model factory {self.target}: {owner} has no attribute {part!r}{hint}")
            found = getattr(found, part)
            walked.append(part)
        if not callable(found):
            raise ModelFactoryError(
                f"model factory {self.target} names an object of type {type(found).__name__}, "
                "not a function (or class) that returns a torch.nn.Module")
        return found

    def build(self) -> nn.Module:
        """Import, call with ``kwargs``, and check the result is an ``nn.Module``."""
        function = self.resolve()
        kwargs = dict(self.kwargs)
        try:
            signature = inspect.signature(function).replace(
                return_annotation=inspect.Signature.empty)
        except (TypeError, ValueError):  # builtins and C extensions may have none
            signature = None
        if signature is not None:
            try:
                signature.bind(**kwargs)
            except TypeError as exc:
                raise ModelFactoryError(
                    f"model factory {self.target}{signature} cannot be called with "
                    f"{', '.join(f'{k}={v!r}' for k, v in kwargs.items()) or 'no arguments'}: "
                    f"{exc} (--factory-arg key=value sets an argument)") from exc
        try:
            model = function(**kwargs)
        except Exception as exc:
            raise ModelFactoryError(
                f"model factory {self.describe()} raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(model, nn.Module):
            raise ModelFactoryError(
                f"model factory {self.describe()} returned a {type(model).__name__}, not a "
                "torch.nn.Module")
        return model
