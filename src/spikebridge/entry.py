"""The ``spikebridge`` console command's entry point: a Ctrl-C at any instant of our code is one
line on stderr and exit code 130 (docs/reliability.md, "Interrupts").

Two phases:

* **start-up** — torch and the command's modules are imported. An interrupt here must not
  become a ``KeyboardInterrupt`` raised inside torch's C++ initialisation (pybind11 then calls
  ``std::terminate`` and the process aborts) or inside the import system's callbacks ("Exception
  ignored in …"). Nothing has been written yet, so the handler prints the line and leaves at
  once.
* **work** — Python's own handler is back: the interrupt is a ``KeyboardInterrupt`` that the
  code being interrupted cleans up after (temporary files, locks) before
  :func:`spikebridge.cli.main` prints the line and returns 130.

Only the interpreter's own start, before any line of this package runs (a few milliseconds),
is beyond any Python program; a signal then ends the process with nothing printed or written.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

__all__ = ["run"]

_LINE = b"spikebridge: interrupted\n"


def _leave_at_once(_signum: int, _frame: object) -> None:
    os.write(2, _LINE)
    os._exit(130)


def run() -> int:
    """Run the ``spikebridge`` command; return its exit code."""
    signal.signal(signal.SIGINT, _leave_at_once)
    import torch  # noqa: F401 - the long C++ start-up, under the handler above

    from .cli import main

    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = main()
    except KeyboardInterrupt:
        print("spikebridge: interrupted", file=sys.stderr)
        code = 130
    # the command has finished (or stopped) and its files are committed or cleaned up: a
    # Ctrl-C during the interpreter's shutdown must not turn that into a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if code == 130:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(130)
    return code
