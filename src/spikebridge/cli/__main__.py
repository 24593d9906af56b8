"""``python -m spikebridge.cli``: the ``spikebridge`` command."""

import sys

from .app import main

sys.exit(main())
