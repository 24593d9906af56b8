"""The on-disk layout of a checkpoint directory (docs/reliability.md): its file names, the
manifest and config formats, the ``current`` link, and which entries are leftovers.

Only reads: nothing here writes, deletes or locks (that is :mod:`spikebridge.checkpoint`'s
writer, which removes what :func:`_garbage` lists while holding the lock).
:mod:`spikebridge.checkpoint` re-exports the public names.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from ._version import __version__
from .atomic_io import json_bytes
from .checkpoint_errors import CheckpointError

__all__ = ["CONFIG_FILE", "CURRENT_LINK", "LOCK_FILE", "MANIFEST_FILE", "MANIFEST_FORMAT",
           "MODEL_FILE", "SNAPSHOTS_DIR", "TRAIN_STATE_FILE", "resolve_current"]

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAIN_STATE_FILE = "train_state.pt"
MANIFEST_FILE = "manifest.json"
CURRENT_LINK = "current"
SNAPSHOTS_DIR = "snapshots"
LOCK_FILE = ".spikebridge.lock"
MANIFEST_FORMAT = "spikebridge-checkpoint/1"

_PAYLOAD_FILES = (MODEL_FILE, TRAIN_STATE_FILE, CONFIG_FILE)  # written in this order
_LINKED_FILES = (MODEL_FILE, TRAIN_STATE_FILE, CONFIG_FILE, MANIFEST_FILE)
_TMP_PREFIXES = (".current.tmp-", ".link.tmp-")


# ---------------------------------------------------------------------------------------------
# manifest and config


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest_bytes(files: Mapping[str, bytes], epoch: int | None) -> bytes:
    return json_bytes({
        "format": MANIFEST_FORMAT,
        "epoch": epoch,
        "files": {name: {"sha256": _sha256(data), "bytes": len(data)}
                  for name, data in files.items()},
        "written_by": f"spikebridge {__version__}",
    })


def _json_of(path: Path, data: bytes) -> Any:
    """``data`` (the bytes of ``path``) as JSON; anything else is a corrupt checkpoint."""
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path} is not valid JSON ({exc}); the checkpoint is corrupt"
        ) from exc


def _parse_manifest(path: Path, data: bytes) -> dict:
    manifest = _json_of(path, data)
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
    config = _json_of(path, data)
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
# the current link, leftovers


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

