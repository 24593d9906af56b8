"""Checkpoints: ``model.safetensors`` + ``config.json`` in one directory (design.md).

* Weights are safetensors (never pickle). Training state for ``--resume`` is a plain
  tensor/number dict loaded with ``torch.load(weights_only=True)``.
* Every file is written atomically (temporary file in the same directory, fsync, rename), so a
  killed run never leaves a truncated file behind. ``config.json`` is written last and records
  the SHA-256 of the weights, so a weights file that does not belong to its config (a run killed
  between the two renames, a hand-copied file) is detected at load time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from .activations import ActivationSpec

__all__ = [
    "CONFIG_FILE",
    "MODEL_FILE",
    "TRAIN_STATE_FILE",
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_json",
    "build_model",
    "load_checkpoint",
    "load_config",
    "load_train_state",
    "save_checkpoint",
    "save_train_state",
]

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAIN_STATE_FILE = "train_state.pt"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete, corrupt or inconsistent."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same directory, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def _state_bytes(model: nn.Module) -> bytes:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return save_safetensors_bytes(state)


def save_checkpoint(directory: str | os.PathLike[str], model: nn.Module, config: dict) -> Path:
    """Write ``model.safetensors`` then ``config.json`` (with the weights' SHA-256)."""
    directory = Path(directory)
    data = _state_bytes(model)
    atomic_write_bytes(directory / MODEL_FILE, data)
    atomic_write_json(directory / CONFIG_FILE, {**config,
                                                "weights_sha256": hashlib.sha256(data).hexdigest()})
    return directory


def load_config(directory: str | os.PathLike[str]) -> dict:
    """Read and check ``config.json`` of a checkpoint directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: a checkpoint directory holds {MODEL_FILE} and {CONFIG_FILE} "
            "(written by `spikebridge train`)"
        )
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path} is not valid JSON ({exc}); the checkpoint is corrupt"
        ) from exc
    missing = [k for k in ("architecture", "num_classes", "in_channels", "activation")
               if k not in config]
    if missing:
        raise CheckpointError(f"{path} lacks the field(s) {', '.join(missing)}")
    return config


def build_model(config: dict) -> nn.Module:
    """An untrained model of the architecture a config describes."""
    from .models import create_model

    try:
        activation = ActivationSpec.from_dict(config["activation"])
        return create_model(
            config["architecture"], num_classes=int(config["num_classes"]),
            in_channels=int(config["in_channels"]), activation=activation,
            **config.get("model_kwargs", {}),
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"config.json describes a model we cannot build: {exc}") from exc


def load_checkpoint(
    directory: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """Rebuild the model from ``config.json`` and load ``model.safetensors`` into it (eval mode)."""
    directory = Path(directory)
    config = load_config(directory)
    path = directory / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    data = path.read_bytes()
    expected = config.get("weights_sha256")
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise CheckpointError(
            f"{path} does not match the SHA-256 recorded in {CONFIG_FILE}: the weights are "
            "corrupt or belong to another run"
        )
    try:
        state = load_safetensors_bytes(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file: {exc}") from exc
    model = build_model(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path} does not fit architecture {config['architecture']!r}: {exc}"
        ) from exc
    return model.to(device).eval(), config


def save_train_state(directory: str | os.PathLike[str], state: dict) -> None:
    """Optimizer/scheduler/epoch state for ``--resume`` (tensors and numbers only)."""
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(directory) / TRAIN_STATE_FILE, buffer.getvalue())


def load_train_state(directory: str | os.PathLike[str]) -> dict:
    """Load the resume state safely (``weights_only=True``: no arbitrary unpickling)."""
    path = Path(directory) / TRAIN_STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(f"cannot resume: {path} is corrupt ({exc})") from exc
