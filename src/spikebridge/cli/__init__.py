"""The ``spikebridge`` command: train | convert | check | export | evaluate | compare | analyse |
demo | reproduce | info.

One module per command (``add_parser`` + ``run``), each only parsing its flags and calling the
experiment layer (:mod:`spikebridge.experiments`); :mod:`.arguments` holds the shared option
groups, :mod:`.runs` what the commands share between parsing and the experiments,
:mod:`.messages` the one-line failures, :mod:`.app` the parser and :func:`main`.
"""

from __future__ import annotations

from .app import DESCRIPTION, build_parser, main
from .messages import describe_failure

_describe_failure = describe_failure  # the name tests and scripts used before 0.2

__all__ = ["DESCRIPTION", "build_parser", "describe_failure", "main"]
