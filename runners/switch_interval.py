"""Python's thread switch interval, shortened while a worker pool runs in this process.

A pool's manager thread hands every worker its next job (``poolflow.runners.worker_pool``). When another
thread of the flow process holds the GIL (Prefect's engine recording a task run, a chunk
settling its items), the manager waits for it, and CPython makes a thread that holds the GIL
give it up only after ``sys.getswitchinterval()``: 5 ms by default, as long as a short item
runs. Meanwhile the worker idles. A 0.5 ms interval lets the manager in promptly; the cost
is more frequent GIL hand-offs between the flow's threads, which are mostly waiting (the
measurements: bench/README.md).

The first running pool sets it (never lengthening a shorter setting); the last one to stop
puts back what it found.
"""

from __future__ import annotations

import sys
import threading

WHILE_POOLS_RUN = 0.0005  # seconds

_lock = threading.Lock()
_running = 0
_previous = 0.0


def pool_started() -> None:
    """A pool started: shorten the interval if it is the first."""
    global _running, _previous
    with _lock:
        if _running == 0:
            _previous = sys.getswitchinterval()
            sys.setswitchinterval(min(_previous, WHILE_POOLS_RUN))
        _running += 1


def pool_stopped() -> None:
    """A pool stopped: restore the interval if it was the last."""
    global _running
    with _lock:
        _running -= 1
        if _running == 0:
            sys.setswitchinterval(_previous)
