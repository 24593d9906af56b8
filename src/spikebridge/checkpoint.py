"""Checkpoints: crash-consistent, hash-verified snapshot directories (docs/reliability.md).

A checkpoint directory ``D`` written by training looks like::

    D/current -> snapshots/epoch-0003-1a2b3c4d      symlink, replaced atomically: THE commit point
    D/snapshots/epoch-0003-1a2b3c4d/
        model.safetensors  train_state.pt  config.json  manifest.json
    D/model.safetensors -> current/model.safetensors   convenience links (also config.json,
                                                       train_state.pt, manifest.json)
    D/.spikebridge.lock                                only while a writer runs (pid + host)

``manifest.json`` records the epoch and the SHA-256 and size of every other file of the snapshot,
so weights, config and training state form one signed unit. A commit writes a complete snapshot
into a fresh temporary directory (each file fsynced, then the directory), renames it into
``snapshots/`` and then publishes it with ONE ``os.replace`` of the ``current`` symlink (followed
by an fsync of ``D``). Whenever a process dies, ``current`` names either the previous complete
snapshot or the new one; older snapshots and leftovers of interrupted commits are removed after a
successful commit and at the start of the next write or load.

A read-only *flat* layout is accepted too: ``manifest.json`` next to the files it lists (the
shipped model, or a checkpoint copied with its symlinks dereferenced). Directories without a
manifest (spikebridge 0.1, hand-made) or whose hashes do not match are rejected unless the caller
allows unverified checkpoints (``allow_unverified=True`` or ``SPIKEBRIDGE_ALLOW_UNVERIFIED=1``).

Weights are safetensors (never pickle); the training state is a plain tensor/number dict loaded
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import secrets
import socket
import stat
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from ._version import __version__
from .activations import ActivationSpec
from .shipped import SHIPPED_WEIGHTS_ROOT, is_shipped_path

__all__ = [
    "ALLOW_UNVERIFIED_ENV",
    "CONFIG_FILE",
    "CURRENT_LINK",
    "LOCK_FILE",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "SNAPSHOTS_DIR",
    "TRAIN_STATE_FILE",
    "CheckpointError",
    "CheckpointLockedError",
    "CheckpointWriteError",
    "CheckpointWriter",
    "LoadedCheckpoint",
    "StaleLockWarning",
    "UnverifiedCheckpointWarning",
    "atomic_write_bytes",
    "atomic_write_json",
    "build_model",
    "check_output_dir",
    "check_output_file",
    "load_checkpoint",
    "load_config",
    "load_train_state",
    "read_checkpoint",
    "resolve_current",
    "save_checkpoint",
    "write_manifest",
]

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAIN_STATE_FILE = "train_state.pt"
MANIFEST_FILE = "manifest.json"
CURRENT_LINK = "current"
SNAPSHOTS_DIR = "snapshots"
LOCK_FILE = ".spikebridge.lock"
MANIFEST_FORMAT = "spikebridge-checkpoint/1"
ALLOW_UNVERIFIED_ENV = "SPIKEBRIDGE_ALLOW_UNVERIFIED"

_PAYLOAD_FILES = (MODEL_FILE, TRAIN_STATE_FILE, CONFIG_FILE)  # written in this order
_LINKED_FILES = (MODEL_FILE, TRAIN_STATE_FILE, CONFIG_FILE, MANIFEST_FILE)
_TMP_PREFIXES = (".current.tmp-", ".link.tmp-")
_ALLOW_HINT = (f"pass allow_unverified=True (CLI --allow-unverified, or set "
               f"{ALLOW_UNVERIFIED_ENV}=1) to load it anyway")


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete, corrupt, inconsistent or not writable."""


class CheckpointWriteError(CheckpointError):
    """Writing a checkpoint failed (disk full, I/O error): the run failed, not its input; the
    previous checkpoint is intact (exit code 1 on the command line)."""


class CheckpointLockedError(CheckpointError):
    """Another live process holds the checkpoint directory's lock."""


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint was loaded although its hashes are missing or do not match (allowed)."""


class StaleLockWarning(UserWarning):
    """The lock of a process that no longer runs was taken over."""


# ---------------------------------------------------------------------------------------------
# file-system operations (every mutation a commit performs goes through ``_fs``; the
# fault-injection tests replace it to crash between any two operations)


class _FileOps:
    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def open_new(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)

    def open_dir(self, path: Path) -> int:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def rename(self, src: Path, dst: Path) -> None:
        os.rename(src, dst)

    def replace(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def symlink(self, target: str, path: Path) -> None:
        os.symlink(target, path)

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)


_fs = _FileOps()


def _write_new_file(path: Path, data: bytes) -> None:
    """Create ``path`` (must not exist), write ``data``, fsync, close."""
    fd = _fs.open_new(path)
    try:
        _fs.write(fd, data)
        _fs.fsync(fd)
    finally:
        _fs.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = _fs.open_dir(path)
    try:
        _fs.fsync(fd)
    finally:
        _fs.close(fd)


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        _fs.unlink(path)
        return
    for child in path.iterdir():
        _remove_tree(child)
    _fs.rmdir(path)


def _refuse_shipped(path: Path) -> None:
    if is_shipped_path(path):
        raise CheckpointError(
            f"refusing to write {path}: the shipped model directory {SHIPPED_WEIGHTS_ROOT} is "
            "read-only; choose another output path"
        )


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same directory, fsync, rename,
    fsync of the directory. Never writes into the shipped model directory."""
    path = Path(path)
    _refuse_shipped(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        _write_new_file(tmp, data)
        _fs.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            if os.path.lexists(tmp):
                _fs.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        _fsync_dir(path.parent)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, _json_bytes(obj))


# ---------------------------------------------------------------------------------------------
# manifest


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest_bytes(files: Mapping[str, bytes], epoch: int | None) -> bytes:

    return _json_bytes({
        "format": MANIFEST_FORMAT,
        "epoch": epoch,
        "files": {name: {"sha256": _sha256(data), "bytes": len(data)}
                  for name, data in files.items()},
        "written_by": f"spikebridge {__version__}",
    })


def write_manifest(directory: str | os.PathLike[str], epoch: int | None = None) -> Path:
    """Sign a flat checkpoint directory in place: write ``manifest.json`` with the SHA-256 of
    the ``model.safetensors``, ``config.json`` (and ``train_state.pt``) it holds.

    For migrating a checkpoint you trust (it vouches for the files as they are now); training
    writes manifests itself. ``epoch`` defaults to the config's ``epochs_completed``.
    """
    directory = Path(directory)
    files = {name: (directory / name).read_bytes() for name in _PAYLOAD_FILES
             if (directory / name).is_file()}
    for name in (MODEL_FILE, CONFIG_FILE):
        if name not in files:
            raise CheckpointError(f"cannot sign {directory}: {name} is missing")
    config = _parse_config(directory / CONFIG_FILE, files[CONFIG_FILE])
    if epoch is None:
        epoch = config.get("epochs_completed")
    _check_signable(directory, config, files, epoch)
    atomic_write_bytes(directory / MANIFEST_FILE, _manifest_bytes(files, epoch))
    return directory / MANIFEST_FILE


def _check_signable(directory: Path, config: dict, files: Mapping[str, bytes],
                    epoch: int | None) -> None:
    """Refuse to sign a config that contradicts its weights or itself: a recorded
    ``weights_sha256`` that is not the weights', an activation that differs from the one its
    ``training`` settings name, thresholds that are not the weights' θ, weights that do not fit
    the architecture, epochs that disagree. A signature vouches for the unit; it must be one."""
    problems = []
    weights = files[MODEL_FILE]
    recorded = config.get("weights_sha256")
    if recorded is not None and recorded != _sha256(weights):
        problems.append(f"its weights_sha256 ({str(recorded)[:12]}…) is not the SHA-256 of "
                        f"{MODEL_FILE} ({_sha256(weights)[:12]}…)")
    training = config.get("training")
    if isinstance(training, dict) and isinstance(training.get("activation"), dict):
        try:
            declared = ActivationSpec.from_dict(config["activation"]).to_dict()
            trained = ActivationSpec.from_dict(training["activation"]).to_dict()
        except (TypeError, ValueError) as exc:
            problems.append(f"its activation cannot be read ({exc})")
        else:
            differing = sorted(k for k in set(declared) | set(trained)
                               if declared.get(k) != trained.get(k))
            if differing:
                problems.append(
                    "activation and training.activation disagree on "
                    + ", ".join(f"{k} ({declared.get(k)!r} vs {trained.get(k)!r})"
                                for k in differing))
    done = config.get("epochs_completed")
    if epoch is not None and done is not None and done != epoch:
        problems.append(f"epochs_completed = {done} but the manifest would commit epoch {epoch}")
    try:
        state = load_safetensors_bytes(weights)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot sign {directory}: {MODEL_FILE} is not a valid "
                              f"safetensors file ({exc})") from exc
    thresholds = config.get("thresholds")
    if isinstance(thresholds, dict):
        for name, theta in thresholds.items():
            stored = state.get(f"{name}.theta")
            if stored is not None and isinstance(theta, int | float) and stored.numel() == 1 \
                    and abs(float(stored) - theta) > 1e-6 * max(1.0, abs(theta)):
                problems.append(f"thresholds[{name!r}] = {theta} but the weights hold "
                                f"θ = {float(stored):.6g}")
    if not problems:
        try:
            with torch.device("meta"):
                model = build_model(config)
            _check_weights_fit(model, LoadedCheckpoint(directory, directory, config, epoch,
                                                       state, None, False))
        except CheckpointError as exc:
            problems.append(str(exc))
    if problems:
        raise CheckpointError(f"refusing to sign {directory}: its {CONFIG_FILE} contradicts "
                              f"{'its weights or itself' if len(problems) > 1 else 'itself'}: "
                              + "; ".join(problems))


def _parse_manifest(path: Path, data: bytes) -> dict:
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path} is not valid JSON ({exc}); the checkpoint is corrupt"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise CheckpointError(
            f"{path} is not a spikebridge manifest (format {found!r}, expected {MANIFEST_FORMAT!r})"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise CheckpointError(f"{path} lacks its 'files' table; the checkpoint is corrupt")
    for name, entry in files.items():
        if name not in _PAYLOAD_FILES:
            raise CheckpointError(f"{path} lists an unexpected file {name!r}")
        if (not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int)
                or not isinstance(entry.get("sha256"), str) or len(entry["sha256"]) != 64):
            raise CheckpointError(f"{path}: malformed entry for {name}")
    for name in (MODEL_FILE, CONFIG_FILE):
        if name not in files:
            raise CheckpointError(f"{path} does not list {name}; the checkpoint is incomplete")
    epoch = manifest.get("epoch")
    if epoch is not None and (not isinstance(epoch, int) or epoch < 0):
        raise CheckpointError(f"{path}: malformed epoch {epoch!r}")
    return manifest


def _parse_config(path: Path, data: bytes) -> dict:
    try:
        config = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path} is not valid JSON ({exc}); the checkpoint is corrupt"
        ) from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} is not a JSON object; the checkpoint is corrupt")
    missing = [k for k in _CONFIG_FIELDS if k not in config]
    if missing:
        raise CheckpointError(f"{path} lacks the field(s) {', '.join(missing)}")
    wrong = [f"{k} must be {what}" for k, (kind, what) in _CONFIG_FIELDS.items()
             if not isinstance(config[k], kind) or isinstance(config[k], bool)
             or (kind is int and config[k] < 1)]
    if wrong:
        raise CheckpointError(f"{path}: {'; '.join(wrong)}; the checkpoint is corrupt")
    return config


_CONFIG_FIELDS = {  # field: (type, description) every checkpoint's config.json must have
    "architecture": (str, "a model name"), "num_classes": (int, "an integer >= 1"),
    "in_channels": (int, "an integer >= 1"), "activation": (dict, "an object"),
}


# ---------------------------------------------------------------------------------------------
# reading


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
    directory: str | os.PathLike[str], device: str | torch.device = "cpu", *,
    allow_unverified: bool | None = None,
) -> tuple[nn.Module, dict]:
    """Rebuild the model from the verified ``config.json`` and load its verified weights (eval
    mode). ``directory`` is the user-facing checkpoint directory (or the shipped model's)."""
    ckpt = read_checkpoint(directory, allow_unverified=allow_unverified)
    if ckpt.config.get("kind") == "spikebridge-snn":
        raise CheckpointError(f"{directory} holds a converted SNN, not an ANN checkpoint; load "
                              "it with spikebridge.load_snn (CLI: --snn DIR)")
    # Built on the meta device first: a config that declares absurd sizes (a 100000×100000
    # input_size) costs nothing until its parameter shapes are matched against the weights file,
    # whose size bounds every allocation that follows.
    with torch.device("meta"):
        model = build_model(ckpt.config)
    _check_weights_fit(model, ckpt)
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


# ---------------------------------------------------------------------------------------------
# locking


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_text(owner: dict) -> str:
    if not owner:
        return "owner unknown"
    since = owner.get("started")
    return (f"pid {owner.get('pid')} on {owner.get('host')}"
            + (f", since {since}" if since else ""))


class _DirLock:
    """``D/.spikebridge.lock``: ``flock`` for mutual exclusion (released by the kernel when the
    owner dies) plus the owner's pid, host and start time for messages; a lock file whose owner
    no longer holds it is stale and taken over with a :class:`StaleLockWarning`."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.path, self.fd = directory, directory / LOCK_FILE, None

    def _read_owner(self, fd: int) -> dict:
        try:
            owner = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return owner if isinstance(owner, dict) else {}
        except (OSError, ValueError):
            return {}

    def _locked(self, owner: dict, extra: str = "") -> CheckpointLockedError:
        return CheckpointLockedError(
            f"{self.directory} is locked by another spikebridge run ({_owner_text(owner)}){extra}; "
            "wait for it to finish or choose another output directory"
        )

    def _open(self) -> int:
        """The lock file's descriptor: created with ``O_EXCL``, or the existing one opened —
        both with ``O_NOFOLLOW``, so a link planted at the lock's name is refused and the file
        it points to is never written."""
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                fd = os.open(self.path, flags)
        except OSError as exc:
            if exc.errno == errno.ELOOP or os.path.islink(self.path):
                raise CheckpointError(
                    f"{self.path} is a symbolic link; spikebridge never writes its lock through "
                    "a link (it could overwrite the file it points to); remove the link and run "
                    "again"
                ) from None
            raise CheckpointError(f"cannot create the lock file {self.path}: "
                                  f"{exc.strerror}") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise CheckpointError(f"{self.path} is not a regular file; remove it and run again")
        return fd

    def acquire(self, *, quiet: bool = False) -> None:
        import fcntl

        me = socket.gethostname()
        for _attempt in range(20):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                flocked = True
            except BlockingIOError:
                owner = self._read_owner(fd)
                os.close(fd)
                raise self._locked(owner) from None
            except OSError as exc:  # no flock on this file system (some NFS): pid check only
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    raise
                flocked = False
            try:  # a releasing owner unlinks the file: make sure we locked the current one
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            owner = self._read_owner(fd)
            if owner and not (owner.get("pid") == os.getpid() and owner.get("host") == me):
                if not flocked:
                    if owner.get("host") != me:
                        os.close(fd)
                        raise self._locked(owner, " (another host: cannot tell whether it still "
                                                  f"runs; delete {self.path} if it does not)")
                    if isinstance(owner.get("pid"), int) and _pid_alive(owner["pid"]):
                        os.close(fd)
                        raise self._locked(owner)
                if not quiet:
                    warnings.warn(
                        f"taking over the stale lock {self.path}: its owner "
                        f"({_owner_text(owner)}) no longer runs", StaleLockWarning, stacklevel=3,
                    )
            record = {"pid": os.getpid(), "host": me,
                      "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      "command": " ".join(sys.argv)[:300]}
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(record).encode(), 0)
            except OSError as exc:  # disk full: leave no lock file behind
                with contextlib.suppress(OSError):
                    if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                        os.unlink(self.path)
                os.close(fd)
                raise CheckpointWriteError(f"cannot write the lock file {self.path}: "
                                           f"{exc.strerror or exc}") from exc
            with contextlib.suppress(OSError):
                os.fsync(fd)
            self.fd = fd
            return
        raise CheckpointLockedError(f"could not lock {self.path}: it keeps being replaced")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None


# ---------------------------------------------------------------------------------------------
# writing


def check_output_dir(directory: str | os.PathLike[str]) -> None:
    """Refuse, with a one-line :class:`CheckpointError`, an output directory that cannot be
    written: inside the shipped model directory, an existing file, under a file, read-only."""
    directory = Path(directory)
    if is_shipped_path(directory):
        raise CheckpointError(
            f"{directory} is inside the shipped model directory {SHIPPED_WEIGHTS_ROOT}, which is "
            "read-only; choose another output directory"
        )
    if os.path.lexists(directory):
        if not directory.exists():
            raise CheckpointError(f"{directory} is a broken symbolic link; choose another "
                                  "output directory")
        if not directory.is_dir():
            raise CheckpointError(f"{directory} exists and is a file, not a directory; choose "
                                  "another output directory")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise CheckpointError(f"{directory} is not writable (read-only directory or file "
                                  "system); choose another output directory")
        return
    parent = directory.absolute().parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise CheckpointError(f"cannot create {directory}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CheckpointError(f"cannot create {directory}: {parent} is not writable (read-only "
                              "directory or file system)")


def check_output_file(path: str | os.PathLike[str]) -> None:
    """Refuse, with a one-line :class:`CheckpointError`, an output file that cannot be written:
    an existing directory, inside the shipped model directory, under a file, read-only."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; give a file name (e.g. {path}/result.json)")
    if os.path.lexists(path) and not os.access(path, os.W_OK):
        raise CheckpointError(f"{path} exists and is not writable; choose another file")
    check_output_dir(path.parent)


def _link_name(directory: Path) -> str | None:
    """The snapshot name ``D/current`` names now (unchecked; ``None`` if it is no link)."""
    try:
        return PurePosixPath(os.readlink(directory / CURRENT_LINK)).name
    except OSError:
        return None


def resolve_current(directory: str | os.PathLike[str]) -> str | None:
    """The name of the snapshot ``D/current`` commits, resolved strictly inside ``D``.

    ``current`` must be a symbolic link whose target is exactly ``snapshots/<name>`` — relative,
    one level, no ``..``, no hidden or temporary name — and ``snapshots`` itself must be a real
    directory, not a link. Only then is ``<name>`` returned; the snapshot may still be missing
    (a damaged checkpoint), which the reader reports. ``None``: ``current`` does not exist, or
    is a real directory (a copy made with its links dereferenced, read in place).

    Raises :class:`CheckpointError` in one line for anything else — an absolute target, one
    that leaves ``D`` or points at itself, a link chain, a regular file — so that neither a
    reader nor the garbage collector ever acts on a snapshot outside ``D/snapshots``.
    """
    directory = Path(directory)
    current = directory / CURRENT_LINK
    if not os.path.lexists(current):
        return None
    if not current.is_symlink():
        if current.is_dir():
            return None
        raise CheckpointError(
            f"{current} is a regular file, not the link to a snapshot that spikebridge "
            "maintains; the checkpoint was damaged (restore it from a copy, or train into a "
            "new directory)"
        )
    try:
        target = os.readlink(current)
    except OSError as exc:
        raise CheckpointError(f"cannot read the link {current}: {exc.strerror}") from exc
    parts = PurePosixPath(target).parts
    valid = (not os.path.isabs(target) and len(parts) == 2 and parts[0] == SNAPSHOTS_DIR
             and parts[1] not in (".", "..") and not parts[1].startswith("."))
    if not valid:
        raise CheckpointError(
            f"{current} points to {target!r}, not to a snapshot inside {directory / SNAPSHOTS_DIR}"
            " (spikebridge writes it as snapshots/<name>); the link was changed by hand or by "
            "another tool, so nothing was read or deleted — point it back at one of "
            f"{directory / SNAPSHOTS_DIR}'s snapshots"
        )
    snapshots = directory / SNAPSHOTS_DIR
    if snapshots.is_symlink():
        raise CheckpointError(f"{snapshots} is a symbolic link; spikebridge only reads and "
                              "cleans snapshots that lie inside the checkpoint directory")
    if (snapshots / parts[1]).is_symlink():
        raise CheckpointError(f"{snapshots / parts[1]} is a symbolic link, not a snapshot "
                              "directory; the checkpoint was changed after it was written")
    return parts[1]


def _is_ours(name: str) -> bool:
    """Names a spikebridge checkpoint directory may hold (anything else is the user's)."""
    return (name in (*_LINKED_FILES, CURRENT_LINK, SNAPSHOTS_DIR, LOCK_FILE)
            or name.startswith(_TMP_PREFIXES)
            or any(name.startswith(f".{f}.") and name.endswith(".tmp") for f in _LINKED_FILES))


def _intact_epoch(snapshot: Path) -> int | None:
    """The epoch of a committed-looking snapshot — a real directory whose ``manifest.json``
    parses and whose every listed file is present with the listed size — else ``None``.
    (Sizes, not hashes: cheap enough for every write; a reader verifies the hashes.)"""
    if snapshot.is_symlink() or not snapshot.is_dir() or snapshot.name.startswith("."):
        return None
    try:
        manifest = _parse_manifest(snapshot / MANIFEST_FILE,
                                   (snapshot / MANIFEST_FILE).read_bytes())
        for name, entry in manifest["files"].items():
            if os.lstat(snapshot / name).st_size != entry["bytes"]:
                return None
    except (OSError, CheckpointError, TypeError, KeyError, AttributeError):
        return None
    epoch = manifest.get("epoch")
    return epoch if isinstance(epoch, int) else -1


def _newest_intact(snapshots: Path) -> str | None:
    """The name of the intact snapshot with the highest epoch (then the latest mtime)."""
    best: tuple[int, float, str] | None = None
    for path in snapshots.iterdir():
        epoch = _intact_epoch(path)
        if epoch is None:
            continue
        key = (epoch, path.lstat().st_mtime, path.name)
        best = key if best is None or key > best else best
    return None if best is None else best[2]


def _garbage(directory: Path, strict: bool = True) -> list[Path]:
    """Leftovers of interrupted or superseded commits, to delete while holding the lock.

    Never listed: the snapshot ``current`` resolves to (:func:`resolve_current`, which refuses
    a link that leaves the directory) and, whenever that one is missing or damaged, the newest
    intact snapshot, so a ``current`` that dangles never costs the last good epoch. Only a writer
    (:class:`CheckpointWriter`, under the lock) deletes anything; reading never does.
    """
    found = [p for p in directory.iterdir()
             if p.name.startswith(_TMP_PREFIXES)
             or any(p.name.startswith(f".{f}.") and p.name.endswith(".tmp")
                    for f in _LINKED_FILES)]
    snapshots = directory / SNAPSHOTS_DIR
    if snapshots.is_dir() and not snapshots.is_symlink():
        try:
            keep = {resolve_current(directory)}
        except CheckpointError:
            if strict:
                raise
            return found
        if None in keep or _intact_epoch(snapshots / str(next(iter(keep)))) is None:
            keep.add(_newest_intact(snapshots))  # current is damaged: keep the last good one
        found += [p for p in snapshots.iterdir() if p.name not in keep]
    return found


def _collect_garbage(directory: Path, strict: bool = True) -> None:
    for path in _garbage(directory, strict):
        with contextlib.suppress(OSError):
            _remove_tree(path)


def _state_bytes(model: nn.Module | Mapping[str, torch.Tensor]) -> bytes:
    state = model.state_dict() if isinstance(model, nn.Module) else model
    return save_safetensors_bytes({k: v.detach().contiguous().cpu() for k, v in state.items()})


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class CheckpointWriter:
    """Owns a checkpoint directory for one run: checks the output path, takes the lock, applies
    the overwrite rules, and commits snapshots atomically (:meth:`commit`).

    * new or empty directory (or one holding only leftovers of a run killed before its first
      commit): always allowed;
    * a directory holding a checkpoint: needs ``resume=True`` (continue it) or
      ``overwrite=True`` (replace it; the old checkpoint stays valid until the first new commit);
    * a non-empty directory that is not a checkpoint: needs ``overwrite=True`` (other files are
      left alone);
    * the shipped model directory, a file, a path under a file, a read-only directory: refused.

    Use as a context manager; :meth:`close` releases the lock.
    """

    def __init__(self, directory: str | os.PathLike[str], *, resume: bool = False,
                 overwrite: bool = False) -> None:
        self.directory = Path(directory)
        self._lock: _DirLock | None = None
        if resume and overwrite:
            raise CheckpointError("--resume and --overwrite exclude each other: resume continues "
                                  "the checkpoint, overwrite replaces it")
        check_output_dir(self.directory)
        created = not os.path.lexists(self.directory)
        if created:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CheckpointError(f"cannot create {self.directory}: {exc.strerror}") from exc
        lock = _DirLock(self.directory)
        lock.acquire()
        try:
            self._check_contents(resume, overwrite)
            # --overwrite replaces whatever `current` names at its first commit, so a damaged
            # link does not stop it; the snapshots are then left alone until that commit
            _collect_garbage(self.directory, strict=not overwrite)
        except BaseException:
            lock.release()
            if created:
                with contextlib.suppress(OSError):
                    self.directory.rmdir()
            raise
        self._lock = lock

    def _check_contents(self, resume: bool, overwrite: bool) -> None:
        d = self.directory
        current = d / CURRENT_LINK
        if not overwrite:
            resolve_current(d)  # a link leaving D, or a regular file: refused in one line
        if os.path.lexists(current) and current.is_dir() and not current.is_symlink():
            raise CheckpointError(
                f"{current} is a directory, not the link spikebridge maintains (was the "
                "checkpoint copied with its links dereferenced?); write to a new directory"
            )
        names = [p.name for p in d.iterdir()]
        is_checkpoint = os.path.lexists(current) or any(
            os.path.lexists(d / n) for n in (MANIFEST_FILE, CONFIG_FILE, MODEL_FILE))
        foreign = [n for n in names if not _is_ours(n)]
        if resume and not is_checkpoint:
            raise CheckpointError(f"cannot resume: {d} holds no checkpoint (nothing was committed "
                                  "there yet); run without --resume")
        if resume or overwrite:
            return
        if is_checkpoint:
            epoch = _peek_epoch(d)
            what = f" (epoch {epoch})" if epoch is not None else ""
            raise CheckpointError(f"{d} already holds a checkpoint{what}; pass --resume to "
                                  "continue it or --overwrite to replace it")
        if foreign:
            raise CheckpointError(
                f"{d} is not empty and is not a spikebridge checkpoint (it holds "
                f"{', '.join(sorted(foreign)[:3])}{', ...' if len(foreign) > 3 else ''}); choose "
                "a new directory or pass --overwrite (other files are left alone)"
            )

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def commit(self, model: nn.Module | Mapping[str, torch.Tensor], config: dict,
               train_state: dict | None = None, *, epoch: int | None = None) -> Path:
        """Publish weights + config (+ training state) as the directory's checkpoint in one
        atomic step; return the snapshot directory. ``epoch`` defaults to
        ``config["epochs_completed"]`` and must agree with ``train_state["epoch"]``.

        Raises :class:`CheckpointError` if the snapshot could not be written (disk full, I/O
        error): the previous checkpoint is then intact and nothing of the attempt is left.
        """
        if self._lock is None:
            raise CheckpointError(f"the writer of {self.directory} is closed")
        if epoch is None:
            epoch = config.get("epochs_completed")
        if train_state is not None and epoch is not None and "epoch" in train_state \
                and int(train_state["epoch"]) != epoch:
            raise ValueError(f"train_state is from epoch {train_state['epoch']}, not {epoch}")
        if epoch is not None:
            config = {**config, "epochs_completed": epoch}
        config = {k: v for k, v in config.items() if k != "weights_sha256"}  # the manifest signs
        files = {MODEL_FILE: _state_bytes(model)}
        if train_state is not None:
            files[TRAIN_STATE_FILE] = _torch_bytes(train_state)
        files[CONFIG_FILE] = _json_bytes(config)
        files[MANIFEST_FILE] = _manifest_bytes(files, epoch)
        previous = _peek_epoch(self.directory)
        try:
            name = self._write_and_publish(files, epoch)
        except OSError as exc:
            kept = (f"the previous checkpoint (epoch {previous}) is intact" if previous is not None
                    else "no checkpoint was committed")
            raise CheckpointWriteError(
                f"could not write the checkpoint of epoch {epoch} to {self.directory}: "
                f"{exc.strerror or exc}; {kept}"
            ) from exc
        self._after_commit(name, files)
        return self.directory / SNAPSHOTS_DIR / name

    def _write_and_publish(self, files: Mapping[str, bytes], epoch: int | None) -> str:
        d = self.directory
        snapshots = d / SNAPSHOTS_DIR
        token = secrets.token_hex(4)
        name = f"epoch-{epoch:04d}-{token}" if epoch is not None else f"snapshot-{token}"
        tmp, final = snapshots / f".tmp-{name}", snapshots / name
        link_tmp = d / f".current.tmp-{token}"
        try:
            if not snapshots.is_dir():
                _fs.mkdir(snapshots)
                _fsync_dir(d)
            _fs.mkdir(tmp)
            for file_name, data in files.items():  # manifest.json last
                _write_new_file(tmp / file_name, data)
            _fsync_dir(tmp)
            _fs.rename(tmp, final)
            _fsync_dir(snapshots)
            _fs.symlink(f"{SNAPSHOTS_DIR}/{name}", link_tmp)
            _fs.replace(link_tmp, d / CURRENT_LINK)  # ---- the commit point ----
        except BaseException:
            with contextlib.suppress(OSError):  # best effort; the next writer/loader retries
                if os.path.lexists(link_tmp):
                    _fs.unlink(link_tmp)
                for path in (tmp, final):
                    if os.path.lexists(path) and _link_name(d) != path.name:
                        _remove_tree(path)
            raise
        return name

    def _after_commit(self, name: str, files: Mapping[str, bytes]) -> None:
        """Durability of the commit, convenience links, garbage collection: all best effort (the
        new checkpoint is already committed; whatever is left over is removed next time)."""
        d = self.directory
        try:
            _fsync_dir(d)
            changed = False
            for file_name in _LINKED_FILES:
                path, target = d / file_name, f"{CURRENT_LINK}/{file_name}"
                ours = path.is_symlink() and os.readlink(path) == target
                if file_name in files:
                    if not ours and not path.is_dir():
                        link_tmp = d / f".link.tmp-{secrets.token_hex(4)}"
                        _fs.symlink(target, link_tmp)
                        _fs.replace(link_tmp, path)
                        changed = True
                elif ours:
                    _fs.unlink(path)
                    changed = True
            if changed:
                _fsync_dir(d)
        except OSError as exc:
            warnings.warn(f"checkpoint committed to {d}, but tidying up failed ({exc})",
                          RuntimeWarning, stacklevel=3)
        _collect_garbage(d)


def _peek_epoch(directory: Path) -> int | None:
    """The committed epoch, read without verification (for messages only)."""
    for path in (directory / CURRENT_LINK / MANIFEST_FILE, directory / MANIFEST_FILE):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            epoch = json.loads(path.read_bytes()).get("epoch")
            if isinstance(epoch, int):
                return epoch
    with contextlib.suppress(OSError, ValueError, AttributeError):
        epoch = json.loads((directory / CONFIG_FILE).read_bytes()).get("epochs_completed")
        return epoch if isinstance(epoch, int) else None
    return None


def save_checkpoint(
    directory: str | os.PathLike[str], model: nn.Module | Mapping[str, torch.Tensor],
    config: dict, train_state: dict | None = None, *, epoch: int | None = None,
) -> Path:
    """One-shot save: lock ``directory``, commit weights + config (+ training state) atomically
    (replacing any checkpoint there), unlock. Returns ``directory``.

    Training holds one :class:`CheckpointWriter` for the whole run instead (it also enforces
    the no-silent-overwrite rules).
    """
    with CheckpointWriter(directory, overwrite=True) as writer:
        writer.commit(model, config, train_state, epoch=epoch)
    return Path(directory)
