"""``python -m poolflow``: the same as the ``poolflow`` script."""

from poolflow.cli import script

script()
