"""What poolflow's runner needs from Prefect where Prefect's releases differ.

The project supports the Prefect releases ``pyproject.toml`` declares; where a name or a
signature differs between them, the function here decides once, so that the rest of the
runner reads one way. Each function's docstring names what it relies on, and
``tests/test_prefect_compat.py`` fails, naming the installed Prefect, when that changes.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.results import ResultStore
    from prefect.tasks import Task

EPHEMERAL_SERVER_ENVIRONMENT = {"PREFECT__SERVER_EPHEMERAL": "1"}
"""Makes ``prefect.server.api.server.create_app`` start only the services a short-lived API
needs, as it does for Prefect's own temporary server, which sets this private variable."""


def process_pool_max_workers() -> int | None:
    """``PREFECT_TASKS_RUNNER_PROCESS_POOL_MAX_WORKERS``: the default worker count of Prefect's
    ``ProcessPoolTaskRunner`` (``settings.tasks.runner.process_pool_max_workers``), or None."""
    from prefect.settings import get_current_settings

    runner_settings = get_current_settings().tasks.runner
    value = getattr(runner_settings, "process_pool_max_workers", None)
    return int(value) if value else None


def flush_events() -> None:
    """Wait until the events this process emitted have left it.

    Relies on ``QueueService._instances`` (Prefect's private registry of running services,
    ``prefect._internal.concurrency.services``): only a process that emitted an event has
    an ``EventsWorker`` there, so the others neither start one nor wait.
    """
    events = sys.modules.get("prefect.events.worker")
    if events is None:
        return
    worker_class = events.EventsWorker
    with worker_class._instance_lock:
        workers = [w for w in worker_class._instances.values() if isinstance(w, worker_class)]
    for worker in workers:
        worker.wait_until_empty()


@functools.cache
def complete_run_context_models() -> None:
    """Resolve the forward references of Prefect's run-context models, once per process.

    A worker that only unpickled a task run has ``prefect.context`` without ``prefect.flows``
    and ``prefect.tasks``; ``TaskRunContext`` and ``FlowRunContext`` then refuse to build.
    Relies on their references ``Flow``, ``Task`` and ``ResultRecordMetadata`` (the last from
    the private ``prefect._internal.result_records``), which Prefect's own
    ``hydrated_context`` resolves the same way.
    """
    from prefect._internal.result_records import ResultRecordMetadata
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.flows import Flow
    from prefect.tasks import Task

    names = {"Flow": Flow, "Task": Task, "ResultRecordMetadata": ResultRecordMetadata}
    FlowRunContext.model_rebuild(_types_namespace=names)
    TaskRunContext.model_rebuild(_types_namespace=names)


def task_result_store(task: Task[Any, Any]) -> ResultStore:
    """The result store Prefect's task engine uses for a run of ``task`` (its storage,
    serializer and ``result_storage_key``), built synchronously in any context.

    Relies on ``ResultStore.update_for_task`` taking the private ``_sync=True`` of Prefect's
    ``async_dispatch``/``sync_compatible`` decorators, which forces the synchronous form: without
    it, a caller inside an async task's run context would get a coroutine. Raises, naming the
    installed Prefect, if a store is not what comes back.
    """
    import prefect
    from prefect.results import ResultStore, get_result_store

    store = get_result_store().update_for_task(task, _sync=True)  # type: ignore[call-arg]
    if not isinstance(store, ResultStore):
        raise RuntimeError(
            f"Prefect {prefect.__version__}: ResultStore.update_for_task(task, _sync=True) returned "
            f"{type(store).__name__}; poolflow.runners.prefect_compat.task_result_store needs updating"
        )
    return store


def honour_recorder_flush_interval() -> None:
    """Make Prefect's task-run recorder flush at its ``flush_interval`` setting, fractions included.

    Relies on ``prefect.server.services.task_run_recorder.consumer(write_batch_size,
    flush_every, ...)``, which the recorder service calls with ``int(flush_interval)``; it is
    replaced by one that passes the setting as it is. If that function or its parameters are
    gone, this raises at once, naming the installed Prefect, so that the API server fails to
    start rather than its recorder failing later (every run would then wait for task runs
    that are never stored).
    """
    import prefect
    from prefect.server.services import task_run_recorder
    from prefect.settings import get_current_settings

    truncating: Callable[..., Any] | None = getattr(task_run_recorder, "consumer", None)
    parameters = inspect.signature(truncating).parameters if callable(truncating) else {}
    if truncating is None or not {"write_batch_size", "flush_every"} <= set(parameters):
        raise RuntimeError(
            f"Prefect {prefect.__version__} changed task_run_recorder.consumer(write_batch_size, "
            "flush_every, ...); poolflow.runners.prefect_compat.honour_recorder_flush_interval "
            "needs updating"
        )

    def consumer(write_batch_size: int, flush_every: float, **options: Any) -> Any:
        seconds = get_current_settings().server.services.task_run_recorder.flush_interval
        return truncating(write_batch_size=write_batch_size, flush_every=seconds, **options)

    task_run_recorder.consumer = consumer  # type: ignore[assignment]


LOCK_CONFLICT_RETRY_AFTER = "0.05"
"""Seconds a client waits before it repeats a request that lost a race for SQLite's write lock."""
_LOCK_CONFLICTS = frozenset({"SQLITE_BUSY", "SQLITE_BUSY_SNAPSHOT"})


def retry_lock_conflicts_soon(app: Any) -> None:
    """Have Prefect's API app answer a lost race for SQLite's write lock with a short ``Retry-After``.

    A transaction that read first fails at once when it then writes while another connection
    holds the write lock (``SQLITE_BUSY``: SQLite does not wait for a lock a reader upgrades
    to) or has committed since the read (``SQLITE_BUSY_SNAPSHOT``); started again, it goes
    through. Prefect answers these, as any retryable database error, with a 503, and its
    client then waits its own backoff (2 s, then 4 s, …) unless the answer names a
    ``Retry-After``. Such races come when another writer is busy for milliseconds (the API's
    services as it starts, against the flow run's creation): this answer has clients retry
    after ``LOCK_CONFLICT_RETRY_AFTER``: Prefect's own answer with that header. Every other error
    keeps Prefect's answer as it is.

    Relies on ``create_app`` mounting the API app under the route name ``api`` with its handler
    for ``Exception``; if either is gone, this raises, naming the installed Prefect, so the
    server fails to start rather than answering differently.
    """
    import prefect
    from sqlalchemy.exc import OperationalError
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Mount

    mounted: list[Any] = [r.app for r in app.routes if isinstance(r, Mount) and r.name == "api"]
    handlers = getattr(mounted[0], "exception_handlers", {}) if mounted else {}
    prefects: Callable[[Request, Exception], Any] | None = handlers.get(Exception)
    if prefects is None:
        raise RuntimeError(
            f"Prefect {prefect.__version__} no longer mounts its API app as 'api' with a handler "
            "for Exception; poolflow.runners.prefect_compat.retry_lock_conflicts_soon needs updating"
        )

    async def lock_conflict(request: Request, exc: Exception) -> Response:
        response: Response = await prefects(request, exc)  # Prefect's own answer, logged as it logs it
        if getattr(getattr(exc, "orig", None), "sqlite_errorname", None) in _LOCK_CONFLICTS:
            response.headers["Retry-After"] = LOCK_CONFLICT_RETRY_AFTER
        return response

    mounted[0].add_exception_handler(OperationalError, lock_conflict)
