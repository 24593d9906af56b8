"""A restricted unpickler for data files that are pickles of numpy arrays and plain containers.

``pickle.load`` runs whatever callable a pickle names (``os.system``, ``subprocess.Popen``, …),
so an untrusted file can execute code the moment it is read. The CIFAR "python version" files
are pickles, and they are routinely downloaded from mirrors or shared copies; this module loads
them without that risk.

:class:`RestrictedUnpickler` only resolves the globals such files contain:

* numpy array reconstruction: ``numpy.core.multiarray._reconstruct`` (also spelled
  ``numpy._core.multiarray`` by numpy ≥ 2), ``numpy.ndarray``, ``numpy.dtype``, and, for files
  re-saved with pickle protocol 5 or holding numpy scalars, ``numpy[._]core.numeric._frombuffer``
  and ``numpy[._]core.multiarray.scalar``;
* ``_codecs.encode`` with a Latin-1 encoding only (how Python 3 writes ``bytes`` at protocol ≤ 2);
* the plain containers ``list``, ``tuple``, ``dict``, ``set``, ``frozenset``, ``bytes`` and
  ``bytearray`` (under ``builtins`` or Python 2's ``__builtin__``).

Any other global is refused *before* it is imported or called, with an
:class:`UnsafePickleError` naming the file and the refused global. Strings, numbers, booleans
and ``None`` need no global and load as usual; persistent ids (``persistent_load``) are refused.
"""

from __future__ import annotations

import builtins
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

__all__ = ["OversizedArrayError", "RestrictedUnpickler", "UnsafePickleError", "safe_load"]

_LATIN1_NAMES = frozenset({"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1"})


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names a global (function or class) that the restricted unpickler does not admit.

    Attributes:
        source: the file (or other source) being read.
        module: module of the refused global.
        name: name of the refused global.
    """

    def __init__(self, source: str, module: str, name: str) -> None:
        self.source, self.module, self.name = source, module, name
        super().__init__(
            f"{source}: refused to load the global {module}.{name}: this pickle wants to call "
            f"something other than numpy array reconstruction and plain containers, so it is not "
            f"a plain data file (nothing from it was run)"
        )

    def __reduce__(self):  # keep the exception picklable despite the custom __init__
        return type(self), (self.source, self.module, self.name)


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to ``str -> bytes`` in Latin-1 (py3 ``bytes`` at proto ≤ 2)."""
    if not isinstance(obj, str) or encoding.lower() not in _LATIN1_NAMES or errors != "strict":
        raise pickle.UnpicklingError(
            f"_codecs.encode is only admitted for str -> bytes in latin1, got "
            f"{type(obj).__name__} with encoding {encoding!r}, errors {errors!r}"
        )
    return obj.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Callable[..., Any] | type]:
    allowed: dict[tuple[str, str], Callable[..., Any] | type] = {}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = _multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = _multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = _numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("_codecs", "encode")] = _latin1_encode
    for module in ("builtins", "__builtin__"):
        for name in ("list", "tuple", "dict", "set", "frozenset", "bytes", "bytearray"):
            allowed[(module, name)] = getattr(builtins, name)
    return allowed


_ALLOWED = _allowed_globals()


class OversizedArrayError(pickle.UnpicklingError):
    """A pickle asks for an array holding more bytes than the file it comes from."""


_SLACK_BYTES = 4096  # headers and small arrays of a pickle far smaller than its payload


def _array_bytes(shape: Any, dtype: Any) -> int:
    dims = (shape,) if isinstance(shape, int | np.integer) else tuple(shape)
    count = 1
    for dim in dims:
        count *= max(int(dim), 0)
    return count * np.dtype(dtype if dtype is not None else float).itemsize


class _BoundedArrays:
    """The array constructors a pickle may call, each refusing an array of more than
    ``max_bytes``: an honest data file carries its arrays' bytes, so an array larger than the
    file can only be a fabricated one (``numpy.ndarray((400000, 3072))`` in 240 bytes)."""

    def __init__(self, source: str, max_bytes: int) -> None:
        self.source, self.max_bytes = source, max_bytes

    def check(self, shape: Any, dtype: Any) -> None:
        try:
            nbytes = _array_bytes(shape, dtype)
        except (TypeError, ValueError) as exc:
            raise pickle.UnpicklingError(f"{self.source}: invalid array shape {shape!r} "
                                         f"({exc})") from None
        if nbytes > self.max_bytes:
            shown = tuple(np.atleast_1d(shape).tolist())
            raise OversizedArrayError(
                f"{self.source}: the pickle asks for an array of shape {shown} ({nbytes:,} "
                f"bytes), more than the {self.max_bytes - _SLACK_BYTES:,}-byte file can hold; "
                "it is not a plain data file"
            )

    def ndarray(self, shape: Any, dtype: Any = float, *args: Any, **kwargs: Any) -> np.ndarray:
        self.check(shape, dtype)
        return np.ndarray(shape, dtype, *args, **kwargs)

    def reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype == self.ndarray:  # bound methods compare equal, never identical
            subtype = np.ndarray
        self.check(shape, dtype if not isinstance(dtype, bytes) else "u1")
        return _multiarray._reconstruct(subtype, shape, dtype)

    def frombuffer(self, buffer: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
        self.check(shape, dtype)
        return _numeric._frombuffer(buffer, dtype, shape, order)


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that admits only numpy arrays and plain containers.

    Args:
        file: a binary file object to read from.
        source: how to name the data in error messages (usually the file path).
        encoding: how Python 2 ``str`` objects are decoded; ``"latin1"`` (the default) is the one
            that round-trips numpy array data from Python 2 pickles, ``"bytes"`` keeps them as
            ``bytes``.
        max_bytes: the size of the data the pickle comes from; no array it constructs may hold
            more (plus 4 KiB), else :class:`OversizedArrayError`. ``None``: unbounded.
    """

    def __init__(self, file: Any, *, source: str = "<pickle>", encoding: str = "latin1",
                 max_bytes: int | None = None) -> None:
        super().__init__(file, encoding=encoding)
        self.source = source
        self._arrays = (None if max_bytes is None
                        else _BoundedArrays(source, int(max_bytes) + _SLACK_BYTES))

    def find_class(self, module: str, name: str) -> Any:
        """Return the admitted global ``module.name``; raise :class:`UnsafePickleError` otherwise.

        Nothing is imported: the admitted objects were resolved when this module was imported.
        """
        try:
            found = _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(self.source, module, name) from None
        if self._arrays is not None:  # bounded array constructors
            if found is np.ndarray:
                return self._arrays.ndarray
            if found is _multiarray._reconstruct:
                return self._arrays.reconstruct
            if found is _numeric._frombuffer:
                return self._arrays.frombuffer
        return found

    def persistent_load(self, pid: Any) -> Any:
        """Refuse persistent ids (plain data files have none)."""
        raise pickle.UnpicklingError(f"{self.source}: persistent ids are not supported ({pid!r})")


def safe_load(path: str | os.PathLike[str], *, encoding: str = "latin1") -> Any:
    """Unpickle the file ``path`` with :class:`RestrictedUnpickler`.

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafePickleError: the pickle names a global that is not admitted (nothing was run).
        pickle.UnpicklingError, EOFError, ValueError, TypeError: the file is not a valid pickle
            (truncated, corrupt) or its numpy payload is inconsistent.
    """
    path = Path(path)
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        return RestrictedUnpickler(file, source=str(path), encoding=encoding,
                                   max_bytes=size).load()
