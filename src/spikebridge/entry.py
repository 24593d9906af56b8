"""The ``spikebridge`` console command's entry point: a Ctrl-C at any instant of our code is one
line on stderr and exit code 130 (docs/reliability.md, "Interrupts").

The command's parser and everything it imports load inside :func:`run`'s ``try``, so an
interrupt while torch is still being imported is caught like one during the work;
:func:`spikebridge.cli.main` catches the ones after. Only the interpreter's own start, before
any line of this package runs (a few milliseconds), cannot be covered by any Python program.
"""

from __future__ import annotations

import signal
import sys

__all__ = ["run"]


def run() -> int:
    """Run the ``spikebridge`` command; return its exit code."""
    try:
        from .cli import main

        code = main()
    except KeyboardInterrupt:
        print("spikebridge: interrupted", file=sys.stderr)
        return 130
    # the command has finished and written its results: a Ctrl-C during the interpreter's
    # shutdown must not turn a completed run into a traceback or a signal exit
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code
