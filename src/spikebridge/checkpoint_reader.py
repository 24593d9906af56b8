"""Reading checkpoints (docs/reliability.md): the committed snapshot of a directory, every file
checked against the manifest's SHA-256, consistently even while a writer commits a new one.

:mod:`spikebridge.checkpoint` re-exports the public names.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from torch import nn

from .checkpoint_errors import CheckpointError, UnverifiedCheckpointWarning
from .checkpoint_layout import (
    CONFIG_FILE,
    CURRENT_LINK,
    MANIFEST_FILE,
    MODEL_FILE,
    SNAPSHOTS_DIR,
    TRAIN_STATE_FILE,
    _link_name,
    _parse_config,
    _parse_manifest,
    _sha256,
    resolve_current,
)
from .checkpoint_model import build_model

__all__ = ["ALLOW_UNVERIFIED_ENV", "LoadedCheckpoint", "load_checkpoint", "load_config",
           "load_train_state", "read_checkpoint"]

ALLOW_UNVERIFIED_ENV = "SPIKEBRIDGE_ALLOW_UNVERIFIED"
_ALLOW_HINT = (f"pass allow_unverified=True (CLI --allow-unverified, or set "
               f"{ALLOW_UNVERIFIED_ENV}=1) to load it anyway")


def _allowed(allow_unverified: bool | None) -> bool:
    if allow_unverified is not None:
        return bool(allow_unverified)
    return os.environ.get(ALLOW_UNVERIFIED_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class _Raced(Exception):
    """The snapshot being read was replaced and garbage-collected by a writer: read again."""


class _Source:
    """The committed files of one checkpoint: where they lie and the hashes they must have."""

    def __init__(self, directory: Path, allow: bool) -> None:
        self.directory, self.allow = directory, allow
        self.problems: list[str] = []
        if not directory.exists():
            raise CheckpointError(f"checkpoint directory {directory} does not exist")
        if not directory.is_dir():
            raise CheckpointError(f"{directory} is not a directory (a checkpoint is a directory "
                                  "written by `spikebridge train`)")
        current = directory / CURRENT_LINK
        self.linked = os.path.lexists(current)
        self.manifest: dict | None = None
        self.target: str | None = None
        if self.linked:
            name = resolve_current(directory)  # strictly inside D, or a one-line refusal
            self.target = name
            self.root = directory / SNAPSHOTS_DIR / name if name is not None else current
            if not self.root.is_dir():
                self._check_race()
                raise CheckpointError(
                    f"{current} points to {os.readlink(current)!r}, which does not exist; the "
                    "checkpoint was damaged after it was written (no snapshot was deleted; "
                    f"`ls {directory / SNAPSHOTS_DIR}` shows what is left)"
                )
            self.manifest_path = self.root / MANIFEST_FILE
            self.manifest = _parse_manifest(self.manifest_path, self._read_raw(MANIFEST_FILE))
        elif (directory / MANIFEST_FILE).is_file():
            self.root, self.manifest_path = directory, directory / MANIFEST_FILE
            self.manifest = _parse_manifest(self.manifest_path, self._read_raw(MANIFEST_FILE))
        elif (directory / CONFIG_FILE).is_file() or (directory / MODEL_FILE).is_file():
            self.root, self.manifest_path = directory, directory / MANIFEST_FILE
            if not (directory / CONFIG_FILE).is_file():
                raise CheckpointError(f"{directory / CONFIG_FILE} is missing")
            self.complain(
                f"{directory} has no {MANIFEST_FILE}: no hash vouches for its {CONFIG_FILE} "
                "(a checkpoint written by spikebridge 0.1 or assembled by hand), so an edited "
                "config or mismatched weights cannot be detected"
            )
        else:
            raise CheckpointError(
                f"{directory} holds no checkpoint ({CONFIG_FILE} is missing; a checkpoint "
                f"directory holds {MODEL_FILE} + {CONFIG_FILE} + {MANIFEST_FILE}, written by "
                "`spikebridge train`)"
            )
        self.epoch: int | None = self.manifest.get("epoch") if self.manifest else None

    def complain(self, message: str) -> None:
        self.problems.append(message)
        if self.allow:
            warnings.warn(f"{message}; loading it anyway (unverified checkpoints are allowed)",
                          UnverifiedCheckpointWarning, stacklevel=4)
        else:
            raise CheckpointError(f"{message}; {_ALLOW_HINT}")

    def _check_race(self) -> None:
        if self.linked and self.target is not None and _link_name(self.directory) != self.target:
            raise _Raced

    def _read_raw(self, name: str) -> bytes:
        path = self.root / name
        try:
            return path.read_bytes()
        except FileNotFoundError:
            self._check_race()
            where = f" (listed in {self.manifest_path})" if self.manifest else ""
            raise CheckpointError(f"{path} is missing{where}") from None

    def read(self, name: str, optional: bool = False) -> bytes | None:
        """The bytes of ``name``, verified against the manifest (``None`` if optional + absent)."""
        if self.manifest is None:  # unverified legacy directory
            if optional and not (self.root / name).is_file():
                return None
            return self._read_raw(name)
        entry = self.manifest["files"].get(name)
        if entry is None:
            if optional:
                return None
            raise CheckpointError(f"{self.manifest_path} does not list {name}")
        data = self._read_raw(name)
        if _sha256(data) != entry["sha256"]:
            path = self.directory / name  # the user-facing name (a link into the snapshot)
            if name == CONFIG_FILE:
                what = (f"{path} was edited after the checkpoint was written: its SHA-256 no "
                        f"longer matches {self.directory / MANIFEST_FILE}, so the model it "
                        "describes (architecture, activation levels, thresholds, normalisation) "
                        "may not be the one the weights were trained as")
            elif name == MODEL_FILE:
                what = (f"{path} does not match its SHA-256 in {MANIFEST_FILE} "
                        f"({len(data)} bytes, {entry['bytes']} expected): the weights are "
                        "corrupt (truncated or altered) or were replaced after training")
            else:
                what = (f"{path} does not match its SHA-256 in {MANIFEST_FILE}: the "
                        "training state is corrupt or was replaced")
            self.complain(what)
        return data


@dataclass
class LoadedCheckpoint:
    """What :func:`read_checkpoint` returns: one committed snapshot, read consistently."""

    directory: Path  # the user-facing checkpoint directory
    source: Path  # the directory the files were read from (a snapshot, or ``directory``)
    config: dict
    epoch: int | None  # epochs completed, as committed (manifest; config/train state agree)
    state_dict: dict[str, torch.Tensor] | None
    train_state: dict | None
    verified: bool  # every file matched the manifest's SHA-256


def _read_once(directory: Path, allow: bool, weights: bool, train_state: bool) -> LoadedCheckpoint:
    src = _Source(directory, allow)
    config_path = src.root / CONFIG_FILE
    config = _parse_config(config_path, src.read(CONFIG_FILE))
    epochs_in_config = config.get("epochs_completed")
    epoch = src.epoch if src.epoch is not None else epochs_in_config
    if src.epoch is not None and epochs_in_config is not None and epochs_in_config != src.epoch:
        raise CheckpointError(
            f"{directory} is inconsistent: {MANIFEST_FILE} commits epoch {src.epoch} but "
            f"{CONFIG_FILE} says epochs_completed = {epochs_in_config}"
        )
    state = None
    if weights:
        data = src.read(MODEL_FILE)
        if src.manifest is None and config.get("weights_sha256") not in (None, _sha256(data)):
            src.complain(f"{src.root / MODEL_FILE} does not match the SHA-256 recorded in "
                         f"{CONFIG_FILE}: the weights are corrupt or belong to another run")
        try:
            state = load_safetensors_bytes(data)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"{src.root / MODEL_FILE} is not a valid safetensors file: {exc}"
            ) from exc
    resume_state = None
    if train_state:
        data = src.read(TRAIN_STATE_FILE, optional=True)
        if data is not None:
            path = src.root / TRAIN_STATE_FILE
            try:
                resume_state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
                raise CheckpointError(f"{path} is corrupt ({exc})") from exc
            if not isinstance(resume_state, dict) or "epoch" not in resume_state:
                raise CheckpointError(f"{path} is not a spikebridge training state")
            if epoch is not None and int(resume_state["epoch"]) != epoch:
                raise CheckpointError(
                    f"{directory} is inconsistent: its weights and config are from epoch {epoch} "
                    f"but {TRAIN_STATE_FILE} is from epoch {int(resume_state['epoch'])} (a run "
                    "killed between two file writes); resuming would repeat or skip an epoch"
                )
            epoch = int(resume_state["epoch"]) if epoch is None else epoch
    verified = src.manifest is not None and not src.problems
    return LoadedCheckpoint(directory, src.root, config, epoch, state, resume_state, verified)


def read_checkpoint(
    directory: str | os.PathLike[str], *, weights: bool = True, train_state: bool = False,
    allow_unverified: bool | None = None,
) -> LoadedCheckpoint:
    """Read the committed snapshot of ``directory``: config, weights (``weights=True``) and the
    training state (``train_state=True``; ``None`` if the checkpoint has none), every file
    checked against the manifest's SHA-256, the epoch taken from the committed unit.

    Raises :class:`CheckpointError` with the reason (missing, corrupt, edited, unsigned) unless
    ``allow_unverified`` (default: the ``SPIKEBRIDGE_ALLOW_UNVERIFIED`` environment variable)
    permits loading without or despite hashes, in which case an
    :class:`UnverifiedCheckpointWarning` is emitted instead.
    """
    directory = Path(directory)
    allow = _allowed(allow_unverified)
    for _attempt in range(8):
        try:
            return _read_once(directory, allow, weights, train_state)
        except _Raced:
            continue
    raise CheckpointError(f"{directory} kept changing while it was read; try again")


def load_config(
    directory: str | os.PathLike[str], *, allow_unverified: bool | None = None
) -> dict:
    """Read and verify ``config.json`` of a checkpoint directory."""
    return read_checkpoint(directory, weights=False, allow_unverified=allow_unverified).config


def load_checkpoint(
    directory: str | os.PathLike[str], device: str | torch.device = "cpu", *,
    allow_unverified: bool | None = None, trust_factory: bool = False,
) -> tuple[nn.Module, dict]:
    """Rebuild the model from the verified ``config.json`` and load its verified weights (eval
    mode). ``directory`` is the user-facing checkpoint directory (or the shipped model's).

    A checkpoint of a user's own model (``spikebridge train --model-factory``) is rebuilt by
    importing and calling its factory — code outside the checkpoint — so it loads only with
    ``trust_factory=True`` (CLI ``--trust-factory``); otherwise
    :class:`~spikebridge.checkpoint_model.UntrustedFactoryError`."""
    ckpt = read_checkpoint(directory, allow_unverified=allow_unverified)
    if ckpt.config.get("kind") == "spikebridge-snn":
        raise CheckpointError(f"{directory} holds a converted SNN, not an ANN checkpoint; load "
                              "it with spikebridge.load_snn (CLI: --snn DIR)")
    # Built on the meta device first: a config that declares absurd sizes (a 100000×100000
    # input_size) costs nothing until its parameter shapes are matched against the weights file,
    # whose size bounds every allocation that follows.
    with torch.device("meta"):
        model = build_model(ckpt.config, trust_factory=trust_factory)
    _check_weights_fit(model, ckpt)
    if ckpt.config.get("model_factory") is not None:
        # a user's module may hold what no state dict carries (buffers registered with
        # persistent=False, plain tensor attributes): build it for real, now that the weights
        # file has bounded its size
        model = build_model(ckpt.config, trust_factory=True)
    else:
        model = model.to_empty(device="cpu")
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{ckpt.source / MODEL_FILE} does not fit architecture "
            f"{ckpt.config['architecture']!r}: {exc}"
        ) from exc
    model.input_shape = _config_input_shape(ckpt.config)
    return model.to(device).eval(), ckpt.config


def _check_weights_fit(model: nn.Module, ckpt: LoadedCheckpoint) -> None:
    """Every parameter and buffer of ``model`` (on the meta device) has a tensor of its shape in
    the checkpoint, and nothing else is there."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    stored = {name: tuple(t.shape) for name, t in ckpt.state_dict.items()}
    problems = [f"{n} is missing" for n in expected if n not in stored]
    problems += [f"{n} is unexpected" for n in stored if n not in expected]
    problems += [f"{n} has shape {list(stored[n])}, the config's architecture needs "
                 f"{list(shape)}" for n, shape in expected.items()
                 if n in stored and stored[n] != shape]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(
            f"{ckpt.source / MODEL_FILE} does not fit architecture "
            f"{ckpt.config['architecture']!r} as config.json describes it: "
            f"{'; '.join(problems[:3])}{more}"
        )


def _config_input_shape(config: dict) -> tuple[int, ...] | None:
    """(C, H, W) of the images a checkpoint was trained on, when its config records them."""
    size = config.get("input_size")
    if not isinstance(size, list) or len(size) != 2:
        return None
    try:
        return (int(config["in_channels"]), int(size[0]), int(size[1]))
    except (TypeError, ValueError):
        return None


def load_train_state(
    directory: str | os.PathLike[str], *, allow_unverified: bool | None = None
) -> dict:
    """The verified resume state (``weights_only=True``: no arbitrary unpickling)."""
    ckpt = read_checkpoint(directory, weights=False, train_state=True,
                           allow_unverified=allow_unverified)
    if ckpt.train_state is None:
        raise CheckpointError(f"cannot resume: the checkpoint in {directory} has no "
                              f"{TRAIN_STATE_FILE}")
    return ckpt.train_state

