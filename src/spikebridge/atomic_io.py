"""Crash-consistent file writing (docs/reliability.md): whole files or nothing, never a torn one.

A file is written as a fresh temporary file in the target's directory (``O_EXCL``), fsynced,
renamed over the target and followed by an fsync of the directory, so a process killed at any
instant leaves either the old file or the new one (plus, at worst, a hidden temporary file).

Every file-system *mutation* goes through a :class:`FileOps` object that the caller passes
explicitly (``ops``): one method per system call. Fault-injection tests hand in a subclass that
crashes between any two calls; :mod:`spikebridge.checkpoint` passes its module global ``_fs``,
looked up at each call, which is what those tests replace. Reads and directory creation with
``parents=True`` are not crash points and use :mod:`os`/:mod:`pathlib` directly.

A leaf module: the standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

__all__ = ["FileOps", "atomic_write_bytes", "fsync_dir", "json_bytes", "remove_tree",
           "write_new_file"]


class FileOps:
    """The file-system mutations of a crash-consistent write, each one system call (looked up
    in :mod:`os` when called, so patching ``os.replace`` & co. also reaches them)."""

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


def write_new_file(path: Path, data: bytes, ops: FileOps) -> None:
    """Create ``path`` (must not exist), write ``data``, fsync, close."""
    fd = ops.open_new(path)
    try:
        ops.write(fd, data)
        ops.fsync(fd)
    finally:
        ops.close(fd)


def fsync_dir(path: Path, ops: FileOps) -> None:
    """Make the entries of directory ``path`` (creations, renames, unlinks) durable."""
    fd = ops.open_dir(path)
    try:
        ops.fsync(fd)
    finally:
        ops.close(fd)


def remove_tree(path: Path, ops: FileOps) -> None:
    """Delete ``path``: a file or link (never followed), or a directory with its contents."""
    if path.is_symlink() or not path.is_dir():
        ops.unlink(path)
        return
    for child in path.iterdir():
        remove_tree(child, ops)
    ops.rmdir(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, ops: FileOps) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same directory (created with its
    parents if need be), fsync, rename, fsync of the directory. On failure the temporary file is
    removed and ``path`` is as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        write_new_file(tmp, data, ops)
        ops.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            if os.path.lexists(tmp):
                ops.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        fsync_dir(path.parent, ops)


def json_bytes(obj: Any) -> bytes:
    """``obj`` as indented JSON text (keys in insertion order), newline-terminated, UTF-8."""
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()
