"""``python -m spikebridge`` (and ``torchrun ... -m spikebridge``): the command-line interface."""

import sys

from .cli import main

sys.exit(main())
