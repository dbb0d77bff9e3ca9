"""poolflow: Prefect 3 flows whose CPU work runs on a warm local process pool.

The one import root of the project: ``poolflow.runners`` (task runners), ``poolflow.tasks``
(plain functions), ``poolflow.flows`` (Prefect flows), ``poolflow.deployments`` and the
``poolflow`` command (``poolflow.cli``), which composes them.

Exported here for Prefect users: the runner, ``from poolflow import MultiprocessingTaskRunner``,
and ``prefect_api()``, a block whose flows use the command's fast API server.
Exports load lazily, so ``import poolflow`` costs nothing until a name is used; the type checker
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
    from poolflow.script_api import prefect_api as prefect_api

_EXPORTS = {
    "MultiprocessingTaskRunner": "poolflow.runners.multiprocessing_runner",
    "WorkerDiedError": "poolflow.runners.worker_pool",
    "JobTimeoutError": "poolflow.runners.worker_pool",
    "JobCancelledError": "poolflow.runners.worker_pool",
    "prefect_api": "poolflow.script_api",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'poolflow' has no attribute {name!r}")
