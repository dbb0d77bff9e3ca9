"""Prefect task runners for poolflow. Nothing here knows about wiki files.

Attributes load lazily, so importing the package does not import Prefect; the type checker
reads the ``TYPE_CHECKING`` imports instead, so it sees the real types.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # "X as X" marks each name as re-exported
    from poolflow.runners.multiprocessing_runner import MultiprocessingTaskRunner as MultiprocessingTaskRunner
    from poolflow.runners.worker_pool import JobCancelledError as JobCancelledError
    from poolflow.runners.worker_pool import JobTimeoutError as JobTimeoutError
    from poolflow.runners.worker_pool import WorkerDiedError as WorkerDiedError
    from poolflow.runners.worker_pool import WorkerPool as WorkerPool

_EXPORTS = {
    "MultiprocessingTaskRunner": "poolflow.runners.multiprocessing_runner",
    "WorkerPool": "poolflow.runners.worker_pool",
    "WorkerDiedError": "poolflow.runners.worker_pool",
    "JobTimeoutError": "poolflow.runners.worker_pool",
    "JobCancelledError": "poolflow.runners.worker_pool",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'poolflow.runners' has no attribute {name!r}")
