"""What a task function sees of Prefect inside a worker process.

The task run itself is orchestrated in the parent; the worker only calls the function.
So that ``get_run_logger()`` and ``prefect.runtime.task_run`` still work there, the call is
wrapped in a lightweight ``TaskRunContext`` — built only if the function's module already
imported Prefect, so plain functions never pay for importing it.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.context import TaskRunContext


@dataclass(frozen=True)
class TaskRunInfo:
    """The identity of the task run a job belongs to, as plain strings."""

    task_run_id: str
    task_run_name: str
    flow_run_id: str | None
    task_name: str
    log_prints: bool

    @classmethod
    def of(cls, context: TaskRunContext, name: str | None = None) -> TaskRunInfo:
        """The identity of ``context``'s task run; ``name`` replaces its name (an item of a chunk)."""
        task_run = context.task_run
        return cls(
            task_run_id=str(task_run.id),
            task_run_name=name or task_run.name,
            flow_run_id=str(task_run.flow_run_id) if task_run.flow_run_id else None,
            task_name=context.task.name,
            log_prints=context.log_prints,
        )


@dataclass(frozen=True)
class _TaskName:
    """Stands in for the ``Task`` object: loggers only read its name."""

    name: str


@lru_cache(maxsize=256)
def resolve_task_function(module: str, qualname: str) -> Callable[..., Any]:
    """Import ``module`` and return the function behind the ``Task`` at ``qualname``."""
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    function: Callable[..., Any] = target.fn
    return function


class TaskFunctionRef:
    """Pickles as a reference to a module-level ``@task``'s function.

    ``pickle`` refuses such functions (the module attribute is the Task, not the
    function) and cloudpickle would copy them by value on every call.
    """

    def __init__(self, module: str, qualname: str) -> None:
        self.module = module
        self.qualname = qualname

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, str]]:
        return (resolve_task_function, (self.module, self.qualname))


def portable_function(fn: Callable[..., Any]) -> Callable[..., Any] | TaskFunctionRef:
    """The cheapest picklable stand-in for a task's function ``fn``."""
    module_name = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    module = sys.modules.get(module_name or "")
    if module is None or module_name == "__main__" or "<locals>" in qualname:
        return fn  # cloudpickle copies it by value
    owner: Any = module
    for part in qualname.split("."):
        owner = getattr(owner, part, None)
    # The module attribute is the Task wrapping ``fn``: refer to it by name. Anything else
    # (``fn`` itself, importable as is, or an unrelated object) pickles ``fn`` directly.
    if owner is not fn and getattr(owner, "fn", None) is fn:
        return TaskFunctionRef(module_name or "", qualname)
    return fn


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call ``fn``; an async task's coroutine is run to completion on a fresh event loop."""
    result = fn(*args, **kwargs)
    if inspect.iscoroutine(result):
        return asyncio.run(result)
    return result


def call_in_task_run(
    fn: Callable[..., Any], info: TaskRunInfo, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Call ``fn`` inside a ``TaskRunContext`` for ``info`` when Prefect is loaded."""
    if "prefect.context" not in sys.modules:
        return _call(fn, args, kwargs)
    from uuid import UUID

    from prefect.client.schemas.objects import TaskRun
    from prefect.context import TaskRunContext

    task_run = TaskRun.model_construct(
        id=UUID(info.task_run_id),
        name=info.task_run_name,
        flow_run_id=UUID(info.flow_run_id) if info.flow_run_id else None,
        task_key=info.task_name,
    )
    context = TaskRunContext.model_construct(
        task=_TaskName(info.task_name),
        task_run=task_run,
        log_prints=info.log_prints,
        parameters=kwargs,
    )
    with context:
        return _call(fn, args, kwargs)


def call_timed_in_task_run(
    fn: Callable[..., Any], info: TaskRunInfo, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[float, Any]:
    """``call_in_task_run``, returning (seconds the call took in the worker, its result).

    Chunk sizing learns from this duration; timing in the worker leaves out the time an
    item waited in the pool's queue.
    """
    started = time.perf_counter()
    result = call_in_task_run(fn, info, args, kwargs)
    return time.perf_counter() - started, result
