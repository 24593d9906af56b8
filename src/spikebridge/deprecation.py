"""Names that moved to a higher layer, still answering at their old place for one release.

A module whose public name moved up (its new home imports it, so it cannot import its new home
without a circle) sets ``__getattr__ = moved_names(__name__, MOVED_IN_0_2)``: PEP 562's module
``__getattr__`` looks the name up in its new home on first use, with a ``DeprecationWarning``.
``tests/test_layering.py`` lists the modules allowed to do so (docs/architecture.md).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping

__all__ = ["moved_names"]


def moved_names(module: str, moved: Mapping[str, str], removed_in: str = "0.3"
                ) -> Callable[[str], object]:
    """A module ``__getattr__`` answering each name of ``moved`` (name → its new module) from
    its new module, warning that the old name goes in ``removed_in``; any other name is an
    ``AttributeError`` as usual."""

    def __getattr__(name: str) -> object:
        home = moved.get(name)
        if home is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(f"{module}.{name} moved to {home}.{name}; the old name goes in "
                      f"{removed_in}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(home), name)

    return __getattr__
