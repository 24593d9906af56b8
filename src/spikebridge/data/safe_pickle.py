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

Admitted callables can still be misused, so they are checked as they are called
(:class:`RestrictedUnpickler` lists the rules): no array or buffer may hold more bytes than the
file (``numpy.ndarray((400000, 3072), uint8)`` in 240 bytes is :class:`OversizedArrayError`),
array and dtype states are checked where numpy does not check them (an object array's state
listing fewer objects than its shape crashes the process), and only plain dtypes are admitted.
Every refusal is a :class:`RefusedPickleError` naming the file.
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

__all__ = [
    "OversizedArrayError",
    "RefusedPickleError",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "safe_load",
]

_LATIN1_NAMES = frozenset({"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1"})


class RefusedPickleError(pickle.UnpicklingError):
    """The restricted unpickler refused the pickle (the message names the file and why): it
    names a global that is not admitted (:class:`UnsafePickleError`), asks for more memory than
    the file can carry (:class:`OversizedArrayError`), or builds numpy objects in a way numpy
    itself does not check (an array state that does not match its shape, a dtype changed after
    use, a structured dtype)."""


class UnsafePickleError(RefusedPickleError):
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


class OversizedArrayError(RefusedPickleError):
    """A pickle asks for an array (or buffer) holding more bytes than the file it comes from."""


_SLACK_BYTES = 4096  # headers and small arrays of a pickle far smaller than its payload
_OBJECT = np.dtype(object)


def _array_count(shape: Any) -> int:
    dims = (shape,) if isinstance(shape, int | np.integer) else tuple(shape)
    count = 1
    for dim in dims:
        count *= max(int(dim), 0)
    return count


def _shown(shape: Any) -> Any:
    try:
        return tuple(int(d) for d in np.atleast_1d(shape).tolist())
    except (TypeError, ValueError):
        return shape


class RestrictedUnpickler(pickle._Unpickler):  # the Python unpickler: its BUILD is ours
    """An unpickler that admits only numpy arrays and plain containers.

    Besides refusing every other global (:class:`UnsafePickleError`), it checks what numpy does
    not check itself:

    * **Sizes** (when ``max_bytes`` is given): an honest data file carries its arrays' bytes,
      so no array or buffer the pickle builds through an admitted callable (``ndarray(shape,
      dtype)``, ``_reconstruct``, ``_frombuffer``, an array's state, ``bytes(n)``,
      ``bytearray(n)``, ``set(...)``, …) may hold more than ``max_bytes`` (+ 4 KiB), and all of
      them together no more than twice that (a Python 3 protocol-2 pickle copies an array's
      bytes twice: from a latin-1 string into ``bytes``, then into the array). Else
      :class:`OversizedArrayError`: ``numpy.ndarray((400000, 3072), uint8)`` in a 240-byte
      file, or the same small array built 100 000 times from memoised arguments.
    * **Array states** (``BUILD`` on an array): only on the array ``_reconstruct`` has just
      made, once; an object array's state must list exactly one object per element (numpy
      leaves the rest of the array uninitialised, and the process crashes on reading it).
    * **Dtypes**: only plain ones (numbers, bool, bytes/str, datetimes, ``object``); structured
      and sub-array dtypes are refused, and a dtype's state (``BUILD``) may be set only on the
      fresh dtype just made, once — numpy lets a state change the item size or the "holds
      objects" flag of a dtype that arrays already use.

    Args:
        file: a binary file object to read from.
        source: how to name the data in error messages (usually the file path).
        encoding: how Python 2 ``str`` objects are decoded; ``"latin1"`` (the default) is the one
            that round-trips numpy array data from Python 2 pickles, ``"bytes"`` keeps them as
            ``bytes``.
        max_bytes: the size of the data the pickle comes from (:func:`safe_load` passes the
            file's size); ``None``: sizes are not bounded (the other checks still apply).
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: Any, *, source: str = "<pickle>", encoding: str = "latin1",
                 max_bytes: int | None = None) -> None:
        super().__init__(file, encoding=encoding)
        self.source = source
        self.max_bytes = None if max_bytes is None else max(int(max_bytes), 0)
        self._spent = 0
        self._fresh: dict[int, Any] = {}  # arrays / dtypes whose state may still be set once
        wrapped: dict[Any, Callable[..., Any]] = {
            np.ndarray: self._ndarray,
            _multiarray._reconstruct: self._reconstruct,
            _numeric._frombuffer: self._frombuffer,
            _multiarray.scalar: self._scalar,
            np.dtype: self._dtype,
            _latin1_encode: self._encode,
        }
        for name in ("list", "tuple", "dict", "set", "frozenset", "bytes", "bytearray"):
            wrapped[getattr(builtins, name)] = self._container(getattr(builtins, name))
        self._callables = {key: wrapped[found] for key, found in _ALLOWED.items()}

    def find_class(self, module: str, name: str) -> Any:
        """Return the admitted global ``module.name`` (wrapped with the checks above); raise
        :class:`UnsafePickleError` otherwise.

        Nothing is imported: the admitted objects were resolved when this module was imported.
        """
        try:
            return self._callables[(module, name)]
        except KeyError:
            raise UnsafePickleError(self.source, module, name) from None

    def persistent_load(self, pid: Any) -> Any:
        """Refuse persistent ids (plain data files have none)."""
        raise pickle.UnpicklingError(f"{self.source}: persistent ids are not supported ({pid!r})")

    # -- checks ---------------------------------------------------------------------------------

    def _refuse(self, what: str) -> RefusedPickleError:
        return RefusedPickleError(f"{self.source}: {what}; it is not a plain data file")

    def _spend(self, nbytes: int, what: str) -> None:
        if self.max_bytes is None:
            return
        if nbytes > self.max_bytes + _SLACK_BYTES:
            raise OversizedArrayError(
                f"{self.source}: the pickle asks for {what} ({nbytes:,} bytes), more than the "
                f"{self.max_bytes:,}-byte file can hold; it is not a plain data file")
        self._spent += nbytes
        if self._spent > 2 * self.max_bytes + _SLACK_BYTES:
            raise OversizedArrayError(
                f"{self.source}: the arrays and buffers this pickle builds would hold "
                f"{self._spent:,} bytes in all (the last: {what}), more than twice the "
                f"{self.max_bytes:,}-byte file; it is not a plain data file")

    def _spend_array(self, shape: Any, dtype: np.dtype) -> None:
        try:
            count = _array_count(shape)
        except (TypeError, ValueError, OverflowError) as exc:
            raise self._refuse(f"invalid array shape {shape!r} ({exc})") from None
        self._spend(count * dtype.itemsize, f"an array of shape {_shown(shape)}")

    def _use(self, values: Any) -> None:
        """``values`` are passed to a callable: none of them may have its state set later."""
        for value in values:
            if self._fresh.get(id(value)) is value:
                del self._fresh[id(value)]
            elif isinstance(value, tuple | list):
                self._use(v for v in value if isinstance(v, np.ndarray | np.dtype))

    def _checked_dtype(self, dtype: Any) -> np.dtype:
        """``dtype`` as a dtype object, refused unless it is a plain one (see the class)."""
        if isinstance(dtype, bytes):  # _reconstruct's type code
            dtype = dtype.decode("latin1")
        try:
            found = np.dtype(dtype if dtype is not None else float)
            plain = np.dtype(found.str)
        except (TypeError, ValueError) as exc:
            raise self._refuse(f"invalid dtype {dtype!r} ({exc})") from None
        if (found.fields is not None or found.subdtype is not None or found != plain
                or (found.itemsize, found.flags, found.alignment, found.hasobject)
                != (plain.itemsize, plain.flags, plain.alignment, plain.hasobject)):
            raise self._refuse(f"the dtype {found} is not a plain numpy dtype (structured and "
                               "sub-array dtypes are not admitted)")
        self._use((found,))
        return found

    # -- the admitted callables, checked ----------------------------------------------------------

    def _ndarray(self, shape: Any, dtype: Any = float, *args: Any, **kwargs: Any) -> np.ndarray:
        checked = self._checked_dtype(dtype)
        self._use((*args, *kwargs.values()))
        self._spend_array(shape, checked)
        return np.ndarray(shape, checked, *args, **kwargs)

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not np.ndarray and subtype is not self._callables[("numpy", "ndarray")]:
            raise self._refuse(f"_reconstruct of {subtype!r}, not of numpy.ndarray")
        checked = self._checked_dtype(dtype)
        self._spend_array(shape, checked)
        array = _multiarray._reconstruct(np.ndarray, shape, checked)
        self._fresh[id(array)] = array
        return array

    def _frombuffer(self, buffer: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
        checked = self._checked_dtype(dtype)
        self._use((buffer,))
        self._spend_array(shape, checked)
        return _numeric._frombuffer(buffer, checked, shape, order)

    def _scalar(self, dtype: Any, *args: Any) -> Any:
        if not isinstance(dtype, np.dtype):
            raise self._refuse(f"a numpy scalar of {dtype!r}, not of a dtype")
        checked = self._checked_dtype(dtype)
        self._use(args)
        self._spend(checked.itemsize, f"a numpy {checked} scalar")
        return _multiarray.scalar(checked, *args)

    def _dtype(self, obj: Any, align: Any = False, copy: Any = False, **kwargs: Any) -> np.dtype:
        self._use((obj,))
        try:  # always a new object: its state may be set (BUILD) without touching shared dtypes
            made = np.dtype(obj, align=bool(align), copy=True, **kwargs)
        except (TypeError, ValueError) as exc:
            raise self._refuse(f"invalid dtype {obj!r} ({exc})") from None
        self._checked_dtype(made)
        self._fresh[id(made)] = made
        return made

    def _encode(self, *args: Any, **kwargs: Any) -> bytes:
        out = _latin1_encode(*args, **kwargs)
        self._spend(len(out), f"a bytes object of {len(out):,} bytes")
        return out

    def _container(self, kind: type) -> Callable[..., Any]:
        def make(*args: Any, **kwargs: Any) -> Any:
            self._use((*args, *kwargs.values()))
            first = args[0] if args else None
            if isinstance(first, int | np.integer) and kind in (bytes, bytearray):
                ahead = max(int(first), 0)  # bytes(n): n zero bytes, from a few in the file
            else:
                ahead = len(first) if hasattr(first, "__len__") else 0
            what = (f"a {kind.__name__} object" if kind in (bytes, bytearray)
                    else f"a {kind.__name__} of {{:,}} items")
            self._spend(ahead, what.format(ahead))
            out = kind(*args, **kwargs)
            if len(out) > ahead:
                self._spend(len(out) - ahead, what.format(len(out)))
            return out

        make.__name__ = kind.__name__
        return make

    # -- BUILD (setting an object's state) -------------------------------------------------------

    def _load_build(self) -> None:
        if len(self.stack) < 2:
            raise pickle.UnpicklingError(f"{self.source}: BUILD on an empty stack")
        state, inst = self.stack[-1], self.stack[-2]
        fresh = self._fresh.pop(id(inst), None) is inst
        if isinstance(inst, np.ndarray):
            if not fresh:
                raise self._refuse("it sets the state of an array that was not just "
                                   "reconstructed (or twice)")
            self._check_array_state(state)
        elif isinstance(inst, np.dtype):
            if not fresh:
                raise self._refuse(f"it sets the state of the dtype {inst} after it was used "
                                   "(or twice)")
        else:
            raise self._refuse(f"it sets the state of a {type(inst).__name__}, which plain data "
                               "never does")
        pickle._Unpickler.load_build(self)
        if isinstance(inst, np.dtype):
            self._checked_dtype(inst)  # the dtype is still unused: refusing it harms nothing

    dispatch[pickle.BUILD[0]] = _load_build

    def _check_array_state(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise self._refuse(f"an array state must be a tuple of 4 or 5 items, got "
                               f"{type(state).__name__}")
        shape, dtype, rawdata = state[-4], state[-3], state[-1]
        if not isinstance(dtype, np.dtype):
            raise self._refuse(f"an array state names {type(dtype).__name__}, not a dtype")
        checked = self._checked_dtype(dtype)
        if not isinstance(shape, tuple):
            raise self._refuse(f"an array state's shape must be a tuple, got {shape!r}")
        if checked.hasobject:
            count = _array_count(shape)
            if type(rawdata) is not list or len(rawdata) != count:
                got = len(rawdata) if type(rawdata) is list else type(rawdata).__name__
                raise self._refuse(f"an object array of shape {_shown(shape)} ({count:,} "
                                   f"elements) gets {got} objects")
            self._spend(count, f"an object array of shape {_shown(shape)}")
        else:
            self._spend_array(shape, checked)


def safe_load(path: str | os.PathLike[str], *, encoding: str = "latin1") -> Any:
    """Unpickle the file ``path`` with :class:`RestrictedUnpickler`.

    Arrays and buffers are bounded by the file's size (see :class:`RestrictedUnpickler`).

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafePickleError: the pickle names a global that is not admitted (nothing was run).
        OversizedArrayError: it asks for an array larger than the file can hold.
        RefusedPickleError: (the base of both) an array or dtype state numpy would not check.
        pickle.UnpicklingError, EOFError, ValueError, TypeError: the file is not a valid pickle
            (truncated, corrupt) or its numpy payload is inconsistent.
    """
    path = Path(path)
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        return RestrictedUnpickler(file, source=str(path), encoding=encoding,
                                   max_bytes=size).load()
