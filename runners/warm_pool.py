"""A worker pool started ahead of the flow that will use it.

A ``MultiprocessingTaskRunner`` starts its workers when a flow enters it, which is after
Prefect's API has answered and the flow run exists. A command knows sooner how many
processes it will use: ``prestarted`` starts that pool at once (a ``poolflow`` command does
it while its API server starts, so the two start-ups overlap), and the next runner entered
with the same settings adopts it instead of starting its own. A pool nobody adopted is shut
down when the block ends; an adopted one belongs to its runner like any other.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from poolflow.runners.worker_pool import WorkerPool

_lock = threading.Lock()
_parked: list[WorkerPool] = []


@contextlib.contextmanager
def prestarted(
    processes: int,
    *,
    maxtasksperchild: int | None = None,
    initializer: Callable[..., object] | None = None,
    initargs: Sequence[Any] = (),
    start_method: str | None = None,
) -> Iterator[WorkerPool]:
    """Start a pool now for a runner entered inside the block (arguments as ``WorkerPool``'s)."""
    pool = WorkerPool(
        processes,
        maxtasksperchild=maxtasksperchild,
        initializer=initializer,
        initargs=initargs,
        start_method=start_method,
    )
    pool.start()
    with _lock:
        _parked.append(pool)
    try:
        yield pool
    finally:
        with _lock:
            unused = pool in _parked
            if unused:
                _parked.remove(pool)
        if unused:
            pool.shutdown()


def adopt(wanted: tuple[object, ...]) -> WorkerPool | None:
    """A started pool whose ``settings()`` are ``wanted`` (``pool_settings`` of the
    ``WorkerPool`` arguments), taken off the shelf, or None."""
    with _lock:
        for pool in _parked:
            if pool.settings() == wanted:
                _parked.remove(pool)
                return pool
    return None
