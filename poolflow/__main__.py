"""``python -m poolflow``: the same as the ``poolflow`` script."""

import sys

from poolflow.cli import main

sys.exit(main())
