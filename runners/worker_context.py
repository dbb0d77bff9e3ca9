"""What a task function sees of Prefect inside a worker process.

The task run itself is orchestrated in the parent; the worker only calls the function.
Inside the call the task sees Prefect's own contexts as on Prefect's process runner:

    parent (engine thread of the task run)           worker (per job)
    TaskRunInfo.of(context) ── pickled with the job ──▶ call_in_task_run
      task run model, current tags, flow snapshot         SettingsContext   (the flow's settings)
                                                          FlowRunContext    (built once per flow run)
                                                          tags(...)         (TagsContext)
                                                          TaskRunContext    (the real task run)

A chunk's items (``call_chunk_item``) share one ``TaskRunInfo``, pickled once per chunk
attempt with the function in ``ChunkJobs`` and sent to each worker once (the pool's
``Shared``); each job names its item.

The flow snapshot (the flow process's settings with the API URL its client really uses,
the flow run, the flow's name) is pickled once per flow run in the parent and rebuilt once
per flow run in each worker. So ``prefect.runtime``, ``get_run_logger()``, artifacts,
events, variables and ``get_client()`` reach the flow's API, and a worker never starts a
temporary API server of its own (ephemeral mode is off there: without an API the call
fails with Prefect's own error). Tasks submitted or mapped inside a task run in the
worker, on a thread pool of that worker: they never wait for a slot of the pool their
parent occupies, so a saturated pool cannot deadlock; a task called directly runs inline.

All of it is built only if the function's module already imported Prefect, so plain
functions never pay for importing it.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import inspect
import pickle
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from poolflow.runners.prefect_compat import complete_run_context_models

if TYPE_CHECKING:
    from prefect.context import FlowRunContext, SettingsContext, TaskRunContext
    from prefect.task_runners import ThreadPoolTaskRunner

    from poolflow.runners.item_cache import RecordWriter


@dataclass(frozen=True)
class TaskRunInfo:
    """The task run a job belongs to, as the worker needs it to rebuild Prefect's contexts.

    Prefect's objects travel pickled inside, so a worker whose function never imported
    Prefect does not import it to read them.
    """

    task_run: bytes
    name: str
    task_name: str
    log_prints: bool
    tags: tuple[str, ...]
    flow_snapshot: bytes

    @classmethod
    def of(cls, context: TaskRunContext) -> TaskRunInfo:
        """The task run of ``context`` (an item of a chunk replaces ``name`` with ``named``)."""
        from prefect.context import TagsContext

        return cls(
            task_run=pickle.dumps(context.task_run),
            name=context.task_run.name,
            task_name=context.task.name,
            log_prints=context.log_prints,
            tags=tuple(sorted(TagsContext.get().current_tags)),
            flow_snapshot=_flow_snapshot(),
        )

    def named(self, name: str) -> TaskRunInfo:
        """The same task run under an item's name."""
        return replace(self, name=name)


_SNAPSHOTS_KEPT = 4
_TASK_RUNS_KEPT = 16
_snapshots: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
_snapshots_lock = threading.Lock()


def _flow_snapshot() -> bytes:
    """The pickled settings and flow run of the current flow run, made once per flow run.

    The chunks of a map start their task runs together: the lock makes one of them build the
    snapshot while the others wait for it, instead of each building its own.
    """
    from prefect.context import FlowRunContext, get_settings_context

    settings_context = get_settings_context()
    flow_context = FlowRunContext.get()
    flow_run = flow_context.flow_run if flow_context is not None else None
    api_url = str(flow_context.client.api_url) if flow_context is not None else None
    key = (id(settings_context.settings), getattr(flow_run, "id", None), api_url)
    with _snapshots_lock:
        snapshot = _snapshots.get(key)
        if snapshot is None:
            snapshot = _snapshots[key] = _pickle_flow_snapshot(settings_context, flow_context, api_url)
            while len(_snapshots) > _SNAPSHOTS_KEPT:
                _snapshots.popitem(last=False)
    return snapshot


def _pickle_flow_snapshot(
    settings_context: SettingsContext, flow_context: FlowRunContext | None, api_url: str | None
) -> bytes:
    """The flow process's settings (with the API URL its client really uses and ephemeral
    servers off) and its flow run, pickled: a worker unpickles them instead of building
    ``Settings`` from its environment and files, which costs each worker a tenth of a second."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE

    settings = _updated(settings_context.settings, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.accessor, False)
    if api_url is not None and api_url.rstrip("/") != (settings.api.url or "").rstrip("/"):
        # an ephemeral server's URL: Prefect derives its UI's URLs from it, so it rebuilds all
        settings = settings.copy_with_update(updates={PREFECT_API_URL: api_url.rstrip("/")})
    flow = flow_context.flow if flow_context is not None else None
    return pickle.dumps(
        (
            settings_context.profile,
            settings,
            flow_context.flow_run if flow_context is not None else None,
            getattr(flow, "name", None),
            getattr(flow, "version", None),
            flow_context.log_prints if flow_context is not None else False,
        )
    )


def _updated(model: Any, accessor: str, value: Any) -> Any:
    """``model`` with its setting at ``accessor`` (e.g. ``"server.ephemeral.enabled"``) set to
    ``value``, for a setting no other is derived from.

    Copies only the models along the path and validates nothing: Prefect's
    ``copy_with_update`` builds the whole ``Settings`` again from its sources, which takes
    tens of milliseconds before the first item of a flow run can be sent.
    """
    field, _, rest = accessor.partition(".")
    return model.model_copy(update={field: _updated(getattr(model, field), rest, value) if rest else value})


class _FlowContexts:
    """A flow run's settings and flow run context in a worker, with its nested-task runner."""

    def __init__(self, snapshot: bytes) -> None:
        from prefect.client.orchestration import get_client
        from prefect.context import FlowRunContext, SettingsContext
        from prefect.flows import Flow
        from prefect.results import ResultStore
        from prefect.task_runners import ThreadPoolTaskRunner

        complete_run_context_models()
        profile, settings, flow_run, flow_name, flow_version, log_prints = pickle.loads(snapshot)
        self.settings = SettingsContext(profile=profile, settings=settings)
        self.flow_run: FlowRunContext | None = None
        self.task_runner: ThreadPoolTaskRunner[Any] | None = None
        with self.settings:
            self.client = get_client(sync_client=True)
            self.result_store = ResultStore()
            if flow_run is None:
                return
            self.task_runner = ThreadPoolTaskRunner()
            self.task_runner.__enter__()
            self.flow_run = FlowRunContext(
                flow=Flow(fn=_flow_stand_in, name=flow_name, version=flow_version),
                flow_run=flow_run,
                client=self.client,
                task_runner=self.task_runner,
                result_store=self.result_store,
                parameters=flow_run.parameters,
                log_prints=log_prints,
                detached=True,
            )

    def close(self) -> None:
        """Stop the nested-task runner (its threads end once their runs do)."""
        if self.task_runner is not None:
            self.task_runner.__exit__(None, None, None)


def _flow_stand_in() -> None:
    """The function of the stand-in ``Flow`` a worker's flow run context names (never called)."""


_flow_contexts: OrderedDict[bytes, _FlowContexts] = OrderedDict()


def _contexts_of(snapshot: bytes) -> _FlowContexts:
    """This worker's contexts for the flow run behind ``snapshot`` (a warm pool serves many)."""
    contexts = _flow_contexts.get(snapshot)
    if contexts is None:
        contexts = _flow_contexts[snapshot] = _FlowContexts(snapshot)
        while len(_flow_contexts) > _SNAPSHOTS_KEPT:
            _flow_contexts.popitem(last=False)[1].close()
    return contexts


@lru_cache(maxsize=256)
def _task_object(module: str, qualname: str, name: str, fn: Callable[..., Any]) -> Any:
    """A ``Task`` for ``fn`` named ``name`` (what the task run context names as its task)."""
    from prefect.tasks import Task

    return Task(fn=fn, name=name)


def _parameters(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by parameter name, as ``prefect.runtime.task_run.parameters`` shows
    them: bound by Prefect's own ``get_call_parameters``; the keywords alone if they do not bind."""
    from prefect.exceptions import ParameterBindError
    from prefect.utilities.callables import get_call_parameters

    try:
        return get_call_parameters(fn, args, kwargs, apply_defaults=False)
    except (ParameterBindError, ValueError):
        return kwargs


class _TaskRunContexts:
    """Prefect's contexts for the jobs of one task run in a worker, built once: the items of
    a chunk share them, each job only renames the task run and sets its parameters."""

    def __init__(self, fn: Callable[..., Any], info: TaskRunInfo) -> None:
        from prefect.context import TagsContext, TaskRunContext

        flow = _contexts_of(info.flow_snapshot)
        module, qualname = getattr(fn, "__module__", ""), getattr(fn, "__qualname__", "")
        self.task_run = pickle.loads(info.task_run)
        self.run_context = TaskRunContext(
            task=_task_object(module, qualname, info.task_name, fn),
            task_run=self.task_run,
            log_prints=info.log_prints,
            parameters={},
            result_store=flow.result_store,
            client=flow.client,
        )
        entered = [flow.settings.model_copy(), TagsContext(current_tags=set(info.tags)), self.run_context]
        if flow.flow_run is not None:
            entered.insert(1, flow.flow_run.model_copy())
        self.context = contextvars.Context()  # holds the entered contexts; never exited
        for model in entered:
            self.context.run(model.__enter__)

    def call(self, fn: Callable[..., Any], name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call ``fn`` as the item ``name`` of this task run."""
        self.task_run.name = name
        self.run_context.parameters = _parameters(fn, args, kwargs)
        return self.context.run(_call, fn, args, kwargs)


_task_run_contexts: OrderedDict[bytes, _TaskRunContexts] = OrderedDict()


def _contexts_for(fn: Callable[..., Any], info: TaskRunInfo) -> _TaskRunContexts:
    """This worker's contexts for the task run of ``info``, built on its first job here."""
    contexts = _task_run_contexts.get(info.task_run)
    if contexts is None:
        contexts = _task_run_contexts[info.task_run] = _TaskRunContexts(fn, info)
        while len(_task_run_contexts) > _TASK_RUNS_KEPT:
            _task_run_contexts.popitem(last=False)
    return contexts


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
    """Call ``fn`` inside Prefect's contexts for ``info`` when Prefect is loaded."""
    if "prefect.context" not in sys.modules:
        return _call(fn, args, kwargs)
    from poolflow.runners.prefect_compat import flush_events

    try:
        return _contexts_for(fn, info).call(fn, info.name, args, kwargs)
    finally:
        flush_events()  # what the task emitted reaches the API before its run ends


@dataclass(frozen=True)
class ChunkJobs:
    """What every item of one chunk attempt sends to the pool alike: the task's function, the
    task run and the writer of the items' result records (travels as the pool's ``Shared``)."""

    fn: Any  # the task's function, or a ``TaskFunctionRef`` that unpickles as it
    info: TaskRunInfo
    writer: RecordWriter | None


def call_chunk_item(
    jobs: ChunkJobs, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], key: str | None
) -> tuple[float, Any, str | None]:
    """Call a chunk's function as its item ``name``, in Prefect's contexts; return (seconds
    the call took here, its result, why writing the result's record under ``key`` failed).

    Chunk sizing learns from this duration; timing in the worker leaves out the time an
    item waited in the pool's queue. The record is written here, so the flow process neither
    serializes nor writes it; if that fails, the call still succeeded.
    """
    started = time.perf_counter()
    result = call_in_task_run(jobs.fn, jobs.info.named(name), args, kwargs)
    seconds = time.perf_counter() - started
    problem = None
    if key is not None and jobs.writer is not None:
        try:
            jobs.writer.write(key, result)
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
    return seconds, result, problem
