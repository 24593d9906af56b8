"""The lock of a checkpoint directory, ``D/.spikebridge.lock`` (docs/reliability.md): one writer
at a time, and a crashed writer's lock taken over instead of blocking the directory forever.

``flock`` gives the mutual exclusion (the kernel releases it when its owner dies, however it
dies); the file records the owner's pid, host, start time and command for the messages. Where
the file system has no ``flock`` (some NFS), a live pid on this host is the test instead.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import sys
import time
import warnings
from pathlib import Path

from .checkpoint_errors import (
    CheckpointError,
    CheckpointLockedError,
    CheckpointWriteError,
    StaleLockWarning,
)
from .checkpoint_layout import LOCK_FILE

__all__ = ["DirectoryLock"]


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


class DirectoryLock:
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

