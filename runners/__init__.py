"""Prefect task runners for poolflow. Nothing here knows about wiki files.

Attributes load lazily so that ``runners.choice.RUNNERS`` can be read without Prefect.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MultiprocessingTaskRunner": "runners.multiprocessing_runner",
    "WorkerPool": "runners.worker_pool",
    "WorkerDiedError": "runners.worker_pool",
    "JobTimeoutError": "runners.worker_pool",
    "JobCancelledError": "runners.worker_pool",
    "make_task_runner": "runners.choice",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'runners' has no attribute {name!r}")
