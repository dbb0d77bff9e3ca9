"""The garbage collector during start-up: off while long-lived objects are built, then frozen.

Importing Prefect (and, in the API server, building its app) creates hundreds of thousands
of objects that live as long as the process: modules, classes, pydantic schemas, SQLAlchemy
tables, routes. The cyclic collector runs every few hundred allocations and finds nothing to
free among them, a large share of the import time (compare ``python -X importtime`` of
``prefect.server.api.server`` with and without ``gc.disable()``). ``gc.freeze`` then moves
what was built out of every later collection, so the run does not re-scan it.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def building_long_lived_objects() -> Iterator[None]:
    """Run the block with the collector off, then freeze what exists and restore it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
