"""A fresh ``PREFECT_HOME`` for one benchmark, and the setting that makes a command start its own server."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from poolflow import kept_api

# A command that starts a server of its own and stops it at its end, as every command did
# before servers were kept between commands (``poolflow.kept_api``).
NEW_SERVER = {"POOLFLOW_API_IDLE": "0"}


def fresh_home(prefix: str = "poolflow-bench-home-") -> str:
    """A new Prefect home; when the benchmark ends, the API server its commands keep is stopped
    (so that it does not idle beside the benchmarks after it) and the home removed."""
    home = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, home, ignore_errors=True)  # exit handlers run last-in first
    atexit.register(kept_api.end, Path(home))
    return home
