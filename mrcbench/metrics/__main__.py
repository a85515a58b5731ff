"""``python -m mrcbench.metrics``: the ``mrcbench score`` command."""

import sys

from mrcbench.metrics.command import main

sys.exit(main())
