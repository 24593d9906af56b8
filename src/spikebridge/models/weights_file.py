"""A user's weights file (``--init-weights``): read it safely, load it into a model strictly.

Two formats: ``.safetensors``, and what ``torch.save(model.state_dict(), path)`` writes, read
with ``torch.load(weights_only=True)`` — tensors, numbers and containers only; a pickled model
object or any other code is refused, never unpickled. Many training scripts save
``{"state_dict": ..., "epoch": ...}`` or ``{"model": ..., "optimizer": ...}``: the
``"state_dict"`` (else ``"model"``) entry is then the state dict. Keys saved from a
``DataParallel`` / ``DistributedDataParallel`` wrapper (every one prefixed ``module.``) are
matched without the prefix.

:func:`load_weights` compares every key and shape with the model first and names all that do
not fit in one :class:`WeightsFileError` (a ``ValueError``): missing, unexpected, other shape.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from torch import nn

__all__ = ["WeightsFile", "WeightsFileError", "load_weights", "read_weights_file"]

_WRAPPER_KEYS = ("state_dict", "model")  # checked in this order
_DATA_PARALLEL_PREFIX = "module."
_LISTED = 5  # names shown per kind of mismatch


class WeightsFileError(ValueError):
    """A weights file that cannot be read, holds no state dict, or does not fit the model."""


@dataclass(frozen=True)
class WeightsFile:
    """The state dict of a weights file, where it came from and its SHA-256."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    sha256: str

    def record(self) -> dict[str, str]:
        """What a checkpoint's ``config.json`` records about its initial weights."""
        return {"file": str(self.path), "sha256": self.sha256}


def _is_safetensors(path: Path, data: bytes) -> bool:
    if path.suffix == ".safetensors":
        return True
    # a safetensors file: an 8-byte little-endian header length, then the JSON header
    return len(data) > 9 and data[8:9] == b"{" and int.from_bytes(data[:8], "little") < len(data)


def _unwrap(path: Path, loaded: object) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping) and not all(isinstance(v, torch.Tensor)
                                               for v in loaded.values()):
        for key in _WRAPPER_KEYS:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping):
        raise WeightsFileError(f"{path} holds a {type(loaded).__name__}, not a state dict "
                               "(parameter names -> tensors); save one with "
                               "torch.save(model.state_dict(), path)")
    others = sorted(str(k) for k, v in loaded.items() if not isinstance(v, torch.Tensor))
    if others or not loaded:
        what = (f"entries that are not tensors: {', '.join(others[:_LISTED])}"
                + (f" (and {len(others) - _LISTED} more)" if len(others) > _LISTED else "")
                if others else "no tensors at all")
        raise WeightsFileError(
            f"{path} is not a state dict: it has {what}; expected parameter names -> tensors, "
            f"or a dict with a {' or '.join(repr(k) for k in _WRAPPER_KEYS)} entry holding them")
    return {str(k): v for k, v in loaded.items()}


def read_weights_file(path: str | os.PathLike[str]) -> WeightsFile:
    """The state dict in ``path`` (module docstring), read without unpickling code."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WeightsFileError(f"weights file {path} does not exist") from None
    except IsADirectoryError:
        raise WeightsFileError(f"weights file {path} is a directory; name the .safetensors or "
                               ".pt file (a spikebridge checkpoint directory is given with "
                               "--model DIR)") from None
    except OSError as exc:
        raise WeightsFileError(f"cannot read weights file {path}: {exc.strerror}") from exc
    if _is_safetensors(path, data):
        try:
            loaded: object = load_safetensors_bytes(data)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise WeightsFileError(f"{path} is not a valid safetensors file ({exc}); the file "
                                   "is corrupt or truncated") from exc
    else:
        try:
            loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise WeightsFileError(
                f"{path} cannot be read as a state dict (torch.load with weights_only=True: "
                f"{type(exc).__name__}: {first}); it is corrupt, or holds pickled objects other "
                "than tensors (a whole model saved with torch.save(model) is refused: save "
                "model.state_dict(), or a .safetensors file)") from exc
    return WeightsFile(path, _unwrap(path, loaded), hashlib.sha256(data).hexdigest())


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f" (and {len(names) - _LISTED} more)" if len(names) > _LISTED else "")


def load_weights(model: nn.Module, path: str | os.PathLike[str], *,
                 what: str | None = None) -> WeightsFile:
    """Load the weights file ``path`` into ``model`` (strictly: every parameter and buffer,
    nothing else, every shape equal); ``what`` names the model in the error. Returns the file
    read (its path and SHA-256 are recorded in checkpoints)."""
    weights = read_weights_file(path)
    state = weights.state_dict
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if (set(state) != set(expected) and all(k.startswith(_DATA_PARALLEL_PREFIX) for k in state)
            and not any(k.startswith(_DATA_PARALLEL_PREFIX) for k in expected)):
        state = {k[len(_DATA_PARALLEL_PREFIX):]: v for k, v in state.items()}
    missing = [n for n in expected if n not in state]
    unexpected = [n for n in state if n not in expected]
    shapes = [f"{n} (file {list(state[n].shape)}, model {list(shape)})"
              for n, shape in expected.items() if n in state and tuple(state[n].shape) != shape]
    problems = [f"{len(names)} {kind}: {_listed(names)}" for kind, names in (
        ("missing from the file", missing), ("in the file but not in the model", unexpected),
        ("of another shape", shapes)) if names]
    if problems:
        name = what or type(model).__name__
        raise WeightsFileError(f"{path} does not fit {name}: " + "; ".join(problems)
                               + f" ({len(expected)} tensors expected, {len(state)} in the file)")
    model.load_state_dict(state, strict=True)
    return WeightsFile(weights.path, state, weights.sha256)
