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

The code is split by concept; this module is the one to import (it re-exports every public name):
:mod:`spikebridge.checkpoint_layout` (file names, manifest and config formats, the ``current``
link, leftovers), :mod:`spikebridge.checkpoint_reader` (reading and verifying),
:mod:`spikebridge.directory_lock` (the lock), :mod:`spikebridge.atomic_io` (crash-consistent
file writes), :mod:`spikebridge.checkpoint_errors` (exceptions and warnings) and
:mod:`spikebridge.checkpoint_model` (the model a config describes: a registered one or a
factory's). Writing — :class:`CheckpointWriter`, the atomic-write and signing helpers, the
output-path checks — stays here, because every file-system mutation it makes goes through
this module's ``_fs`` (below).
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from . import atomic_io
from .activations import ActivationSpec
from .atomic_io import FileOps as _FileOps
from .atomic_io import fsync_dir, json_bytes, remove_tree, write_new_file
from .checkpoint_errors import (
    CheckpointError,
    CheckpointLockedError,
    CheckpointWriteError,
    StaleLockWarning,
    UnverifiedCheckpointWarning,
)
from .checkpoint_layout import (
    _LINKED_FILES,
    _PAYLOAD_FILES,
    CONFIG_FILE,
    CURRENT_LINK,
    LOCK_FILE,
    MANIFEST_FILE,
    MANIFEST_FORMAT,  # noqa: F401 - a public constant of this module before the split
    MODEL_FILE,
    SNAPSHOTS_DIR,
    TRAIN_STATE_FILE,
    _garbage,
    _is_ours,
    _link_name,
    _manifest_bytes,
    _parse_config,
    _peek_epoch,
    _sha256,
    resolve_current,
)
from .checkpoint_model import build_model
from .checkpoint_reader import (
    ALLOW_UNVERIFIED_ENV,
    LoadedCheckpoint,
    _check_weights_fit,
    load_checkpoint,
    load_config,
    load_train_state,
    read_checkpoint,
)
from .directory_lock import DirectoryLock
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

# ---------------------------------------------------------------------------------------------
# file-system operations: every mutation a commit (or an atomic write) performs goes through
# ``_fs``, looked up in this module at each call and passed to the atomic_io helpers; the
# fault-injection tests replace it (``monkeypatch.setattr(checkpoint, "_fs", ...)``, with a
# subclass of ``_FileOps``) to crash between any two operations

_fs = _FileOps()


def _refuse_shipped(path: Path) -> None:
    if is_shipped_path(path):
        raise CheckpointError(
            f"refusing to write {path}: the shipped model directory {SHIPPED_WEIGHTS_ROOT} is "
            "read-only; choose another output path"
        )


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same directory, fsync, rename,
    fsync of the directory. Never writes into the shipped model directory."""
    _refuse_shipped(Path(path))
    atomic_io.atomic_write_bytes(path, data, _fs)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, json_bytes(obj))


# ---------------------------------------------------------------------------------------------
# signing


def write_manifest(directory: str | os.PathLike[str], epoch: int | None = None, *,
                   trust_factory: bool = False) -> Path:
    """Sign a flat checkpoint directory in place: write ``manifest.json`` with the SHA-256 of
    the ``model.safetensors``, ``config.json`` (and ``train_state.pt``) it holds.

    For migrating a checkpoint you trust (it vouches for the files as they are now); training
    writes manifests itself. ``epoch`` defaults to the config's ``epochs_completed``. The
    weights are checked against the architecture first; for a factory model that imports and
    calls the factory, so it needs ``trust_factory=True`` (:func:`load_checkpoint`).
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
    _check_signable(directory, config, files, epoch, trust_factory)
    atomic_write_bytes(directory / MANIFEST_FILE, _manifest_bytes(files, epoch))
    return directory / MANIFEST_FILE


def _check_signable(directory: Path, config: dict, files: Mapping[str, bytes],
                    epoch: int | None, trust_factory: bool = False) -> None:
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
                model = build_model(config, trust_factory=trust_factory)
            _check_weights_fit(model, LoadedCheckpoint(directory, directory, config, epoch,
                                                       state, None, False))
        except CheckpointError as exc:
            problems.append(str(exc))
    if problems:
        raise CheckpointError(f"refusing to sign {directory}: its {CONFIG_FILE} contradicts "
                              f"{'its weights or itself' if len(problems) > 1 else 'itself'}: "
                              + "; ".join(problems))


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


def _collect_garbage(directory: Path, strict: bool = True) -> None:
    for path in _garbage(directory, strict):
        with contextlib.suppress(OSError):
            remove_tree(path, _fs)


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
        self._lock: DirectoryLock | None = None
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
        lock = DirectoryLock(self.directory)
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
        files[CONFIG_FILE] = json_bytes(config)
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
                fsync_dir(d, _fs)
            _fs.mkdir(tmp)
            for file_name, data in files.items():  # manifest.json last
                write_new_file(tmp / file_name, data, _fs)
            fsync_dir(tmp, _fs)
            _fs.rename(tmp, final)
            fsync_dir(snapshots, _fs)
            _fs.symlink(f"{SNAPSHOTS_DIR}/{name}", link_tmp)
            _fs.replace(link_tmp, d / CURRENT_LINK)  # ---- the commit point ----
        except BaseException:
            with contextlib.suppress(OSError):  # best effort; the next writer/loader retries
                if os.path.lexists(link_tmp):
                    _fs.unlink(link_tmp)
                for path in (tmp, final):
                    if os.path.lexists(path) and _link_name(d) != path.name:
                        remove_tree(path, _fs)
            raise
        return name

    def _after_commit(self, name: str, files: Mapping[str, bytes]) -> None:
        """Durability of the commit, convenience links, garbage collection: all best effort (the
        new checkpoint is already committed; whatever is left over is removed next time)."""
        d = self.directory
        try:
            fsync_dir(d, _fs)
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
                fsync_dir(d, _fs)
        except OSError as exc:
            warnings.warn(f"checkpoint committed to {d}, but tidying up failed ({exc})",
                          RuntimeWarning, stacklevel=3)
        _collect_garbage(d)


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
