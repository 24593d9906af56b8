"""Failures and warnings as one line each: ``spikebridge CMD: error: ...`` and the exit code.
"""

from __future__ import annotations

import errno
import sys


def one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def describe_failure(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for an exception that ends a command.

    2: the input was wrong (options, files, data, model) and the message says what to change;
    1: the run itself failed (disk full, out of memory, diverged training, an internal error).
    """
    from ..checkpoint import CheckpointError, CheckpointWriteError
    from ..data import DatasetNotFoundError, IdxFormatError
    from ..distributed import WorkerDiedError

    if isinstance(exc, CheckpointWriteError | WorkerDiedError):
        return 1, one_line(str(exc))
    if isinstance(exc, CheckpointError | DatasetNotFoundError | IdxFormatError | ValueError):
        return 2, one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            return 1, (f"no space left on the device{where}; nothing was half-written (files "
                       "are committed atomically), free some space and run again")
        return 1, f"{exc.strerror or one_line(str(exc))}{where}"
    if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc) or (
            "out of memory" in str(exc).lower()):
        return 1, ("out of memory: " + one_line(str(exc))[:200]
                   + "; lower --batch-size (or --limit)")
    if isinstance(exc, FloatingPointError):
        return 1, one_line(str(exc))
    return 1, (f"{type(exc).__name__}: {one_line(str(exc))[:300]} — an internal error; rerun "
               "with --debug for the traceback and please report it")


def one_line_warnings(command: str):
    """A ``warnings.showwarning`` printing ``spikebridge CMD: warning: ...`` lines (no source
    line echoed)."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        print(f"spikebridge {command}: warning: {one_line(str(message))}",
              file=file or sys.stderr, flush=True)

    return show
