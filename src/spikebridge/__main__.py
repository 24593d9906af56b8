"""``python -m spikebridge`` (and ``torchrun ... -m spikebridge``): the command-line interface."""

import sys

from .entry import run

sys.exit(run())
