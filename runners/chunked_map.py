"""Mapped items grouped into chunks, one Prefect task run per chunk, one future per item.

``ChunkedMap`` turns each ``map``/``imap`` item into an ``ItemFuture`` at once and queues
the item; a dispatcher thread forms chunks of consecutive items of one map when an engine
thread is free (so automatic sizing uses the latest measured durations) and starts each
chunk as one task run. The chunk's function (``Chunk.run_attempt``, on the engine thread
inside that task run) sends every item to the worker pool as its own job, so timeouts,
dead-worker attribution and log forwarding stay per item; each item's outcome settles its
own future. The chunk raises at the end if any item failed: the task run ends ``Failed``
and Prefect's retries rerun the function, which runs only the items not yet succeeded.

Per item, as with one task run per item: upstream futures in its arguments are resolved
(a failed upstream fails just that item), and with ``persist_result`` and a cache policy
its result is cached under its own key in the task's result store, so a retried flow run
reuses every item that succeeded before.
"""

from __future__ import annotations

import collections
import concurrent.futures
import copy
import inspect
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from contextvars import Context, copy_context
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.client.schemas.objects import RunInput, RunType, State
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import MappingLengthMismatch, MappingMissingIterable
from prefect.futures import PrefectConcurrentFuture, PrefectFuture
from prefect.logging.loggers import get_run_logger
from prefect.results import get_result_store
from prefect.states import Completed, Failed, Pending
from prefect.utilities.annotations import allow_failure, opaque, quote, unmapped
from prefect.utilities.callables import (
    collapse_variadic_parameters,
    explode_variadic_parameter,
    get_parameter_defaults,
    parameters_to_args_kwargs,
)
from prefect.utilities.collections import isiterable
from prefect.utilities.engine import (
    collect_task_run_inputs_sync,
    link_state_to_result,
    resolve_inputs_sync,
)

from runners.chunking import ChunkSizer
from runners.worker_context import TaskRunInfo, call_timed_in_task_run, portable_function

if TYPE_CHECKING:
    from prefect.results import ResultStore
    from prefect.tasks import Task

LogSink = Callable[[int, str], None]
SubmitJob = Callable[..., concurrent.futures.Future[Any]]
"""``WorkerPool.submit`` as the runner exposes it (raises if the runner is not running)."""

_UNASSIGNED = uuid.UUID(int=0)
_SETTLE_LOCK = threading.Lock()
_CALL_FORM = re.compile(r"^([^(]+)\((.*)\)$", re.DOTALL)


class ChunkFailedError(RuntimeError):
    """Some items of a chunk failed; each item's own error is on its future."""


class ItemFuture(PrefectConcurrentFuture[Any]):
    """The future of one mapped item: its own final state, in its chunk's task run.

    ``task_run_id`` is the chunk's, known once the item's chunk forms; reading it earlier
    waits for that (items are chunked in the order they were mapped, so a later item's
    upstream futures always get theirs first).
    """

    def __init__(self) -> None:
        super().__init__(task_run_id=_UNASSIGNED, wrapped_future=concurrent.futures.Future())
        self._assigned = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self._claimed = False

    @property
    def task_run_id(self) -> uuid.UUID:
        self._assigned.wait()
        return self._task_run_id

    @property
    def state(self) -> State[Any]:
        if self._final_state is not None:
            return self._final_state
        if self._wrapped_future.done():
            state: State[Any] = self._wrapped_future.result()
            return state
        return Pending()

    def assign(self, task_run_id: uuid.UUID) -> None:
        self._task_run_id = task_run_id
        self._assigned.set()

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        """The item's result, or its error (raised unless ``raise_on_failure`` is False).

        Read from the future itself: ``State.result`` would cross to Prefect's event-loop
        thread for every item.
        """
        try:
            self._final_state = self._wrapped_future.result(timeout=timeout)
        except concurrent.futures.TimeoutError as exc:
            raise TimeoutError(f"item did not complete within {timeout} seconds") from exc
        if self._error is None:
            return self._value
        if raise_on_failure:
            raise self._error
        return self._error

    def settle(self, state: State[Any], value: Any = None, error: BaseException | None = None) -> bool:
        """Give the item its final state and value or error (once); False if it had them."""
        with _SETTLE_LOCK:  # an engine thread and the shutting-down dispatcher may race
            if self._claimed:
                return False
            self._claimed = True
        self._value, self._error = value, error
        self._wrapped_future.set_result(state)
        return True

    @property
    def settled(self) -> bool:
        return self._wrapped_future.done()


@dataclass
class Item:
    """One mapped call: its parameters (maybe holding futures) and its names."""

    index: int
    parameters: dict[str, Any]
    name: str  # like a task run's name, e.g. "parse(AA/wiki_00)": job labels and errors
    label: str  # the short form in a chunk's name, e.g. "AA/wiki_00"
    future: ItemFuture = field(default_factory=ItemFuture)
    error: BaseException | None = None


def expand_map(
    task: Task[Any, Any], parameters: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, set[RunInput]]]:
    """``map``'s parameters as one parameter dict per item, and the map's upstream runs.

    The rules of Prefect's ``TaskRunner.map``: top-level futures are resolved to find the
    iterables (and recorded as dependencies), ``unmapped`` and non-iterable values go to
    every item, ``allow_failure``/``quote``/``opaque`` wrap each item's value again, and
    defaults and ``**kwargs`` are filled in. The function's signature is read once, not
    once per item.
    """
    dependencies: dict[str, set[RunInput]] = {
        key: set(collect_task_run_inputs_sync(v, max_depth=0)) for key, v in parameters.items()
    }
    parameters = explode_variadic_parameter(task.fn, resolve_inputs_sync(parameters, max_depth=0))
    mapped: dict[str, list[Any]] = {}
    static: dict[str, Any] = {}
    annotations: dict[str, Any] = {}
    for key, value in parameters.items():
        if isinstance(value, (allow_failure, opaque, quote)):
            annotations[key] = value
            value = value.unwrap()
        if isinstance(value, unmapped):
            static[key] = value.value
        elif isiterable(value):
            mapped[key] = list(value)
        else:
            static[key] = value
    if not mapped:
        raise MappingMissingIterable(f"map needs at least one iterable parameter; got {parameters}")
    lengths = {key: len(values) for key, values in mapped.items()}
    if len(set(lengths.values())) > 1:
        raise MappingLengthMismatch(f"mapped parameters differ in length: {lengths}")
    common = {**get_parameter_defaults(task.fn), **static}
    keys = set(common) | set(mapped)
    collapse = bool(keys - set(inspect.signature(task.fn).parameters))
    calls = []
    for index in range(next(iter(lengths.values()))):
        call = {**common, **{key: values[index] for key, values in mapped.items()}}
        for key, annotation in annotations.items():
            call[key] = annotation.rewrap(call[key])
        calls.append(collapse_variadic_parameters(task.fn, call) if collapse else call)
    return calls, dependencies


def item_names(task: Task[Any, Any], index: int, parameters: dict[str, Any]) -> tuple[str, str]:
    """(name, label) of an item: its ``task_run_name`` rendered, else its index in the map.

    ``parse({item})`` gives ("parse(AA/wiki_00)", "AA/wiki_00"); no template ("parse[3]", "3").
    """
    template = task.task_run_name
    try:
        if isinstance(template, str):
            name = template.format(**parameters)
            return name, _split_name(name, task.name)[1]
        if callable(template):
            wants_parameters = "parameters" in inspect.signature(template).parameters
            name = str(template(parameters=parameters) if wants_parameters else template())  # type: ignore[call-arg]
            return name, _split_name(name, task.name)[1]
    except Exception:  # a template that needs the task-run context or other parameters
        pass
    return f"{task.name}[{index}]", str(index)


def _split_name(name: str, default_stem: str) -> tuple[str, str]:
    """("parse", "AA/wiki_00") for "parse(AA/wiki_00)"; (``default_stem``, name) for other forms."""
    match = _CALL_FORM.match(name)
    return (match[1], match[2]) if match else (default_stem, name)


def chunk_name(task: Task[Any, Any], items: list[Item]) -> str:
    """``parse(AA/wiki_00)`` for one item; ``parse(AA/wiki_00 … AA/wiki_07, 8 items)`` for more."""
    if len(items) == 1:
        return items[0].name
    stem = _split_name(items[0].name, task.name)[0]
    return f"{stem}({items[0].label} … {items[-1].label}, {len(items)} items)"


class ItemCache:
    """Per-item results under the task's cache policy, in the task's result store."""

    def __init__(self, task: Task[Any, Any], policy: CachePolicy, store: ResultStore) -> None:
        self.task, self.policy, self.store = task, policy, store

    @classmethod
    def for_task(cls, task: Task[Any, Any]) -> ItemCache | None:
        """A cache when ``task`` persists results under a cache policy, else None."""
        policy = task.cache_policy
        if not task.persist_result or not isinstance(policy, CachePolicy) or policy is NO_CACHE:
            return None
        store = get_result_store().update_for_task(task, _sync=True)  # type: ignore[call-arg]
        return cls(task, policy, cast("ResultStore", store))

    def key(self, context: TaskRunContext, inputs: dict[str, Any]) -> str | None:
        """The item's cache key, computed as Prefect would for a task run of the item alone."""
        flow_context = FlowRunContext.get()
        item_context = context.model_copy(update={"task": self.task, "parameters": inputs})
        flow_parameters = flow_context.parameters if flow_context is not None else {}
        return self.policy.compute_key(
            task_ctx=item_context, inputs=inputs, flow_parameters=flow_parameters or {}
        )

    def read(self, key: str) -> tuple[bool, Any]:
        """(True, result) for a stored, unexpired result under ``key``; (False, None) otherwise."""
        if not self.store.exists(key):
            return False, None
        record = self.store.read(key)
        expiration = record.metadata.expiration
        if expiration is not None:
            from prefect.types._datetime import now

            if expiration < now("UTC"):
                return False, None
        return True, record.result

    def write(self, key: str, value: Any) -> None:
        self.store.write(value, key=key)


class Chunk:
    """Consecutive items of one map, run as one task run (possibly over several attempts)."""

    def __init__(
        self,
        task: Task[Any, Any],
        items: list[Item],
        *,
        sizer: ChunkSizer,
        submit_job: SubmitJob,
        cancel_job: Callable[[concurrent.futures.Future[Any]], None],
        tracked: bool,
    ) -> None:
        self.task = task
        self.items = items
        self.sizer = sizer
        self.submit_job = submit_job
        self.cancel_job = cancel_job
        self.tracked = tracked
        self.task_run_id = uuid.uuid4()
        self.name = chunk_name(task, items)
        self.remote = portable_function(task.fn)
        for item in items:
            item.future.assign(self.task_run_id)

    def engine_task(self) -> Task[Any, Any]:
        """A copy of the task whose function runs this chunk's items; parameters: their labels."""
        chunk = self

        def run_chunk(items: list[str]) -> None:
            chunk.run_attempt()

        run_chunk.__name__ = run_chunk.__qualname__ = getattr(self.task.fn, "__name__", "chunk")
        chunk_task = copy.copy(self.task)
        chunk_task.fn = run_chunk
        chunk_task.isasync = False
        # Prefect formats a string ``task_run_name`` with the parameters: escape braces.
        chunk_task.task_run_name = self.name.replace("{", "{{").replace("}", "}}")
        # Items are cached one by one (ItemCache); the chunk's own result is nothing.
        chunk_task.cache_policy = NO_CACHE
        chunk_task.persist_result = False
        chunk_task.result_storage_key = None
        # The pool enforces each item's timeout by killing its worker.
        chunk_task.timeout_seconds = None
        return chunk_task

    def parameters(self) -> dict[str, Any]:
        return {"items": [item.label for item in self.items]}

    def dependencies(self, shared: dict[str, set[RunInput]] | None) -> dict[str, set[RunInput]]:
        """The map's dependencies plus the upstream runs in each item's own arguments.

        Prefect accepts inputs only under the task run's parameter names, and the chunk's
        only parameter is ``items``: every upstream run is listed there.
        """
        inputs: set[RunInput] = set().union(*(shared or {}).values())
        seen: set[int] = set()
        for item in self.items:
            for value in item.parameters.values():
                if id(value) not in seen:
                    seen.add(id(value))
                    inputs |= collect_task_run_inputs_sync(value)
        return {"items": inputs}

    # ------------------------------------------------------------- in the task run

    def run_attempt(self) -> None:
        """Run the items not yet succeeded; raise if any of them failed."""
        context = TaskRunContext.get()
        if context is None:
            raise RuntimeError("a chunk must run inside its task run")
        logger = get_run_logger(context)
        cache = ItemCache.for_task(self.task)
        jobs: dict[concurrent.futures.Future[Any], tuple[Item, str | None]] = {}
        todo = [item for item in self.items if not item.future.settled]
        cached = 0
        resolve = _Resolver()
        for item in todo:
            item.error = None
            try:
                inputs = resolve(item.parameters)
                key = cache.key(context, inputs) if cache is not None else None
                if key is not None and cache is not None:
                    hit, value = cache.read(key)
                    if hit:
                        cached += 1
                        self._succeeded(item, value, cached=True)
                        continue
                jobs[self._submit(context, item, inputs)] = (item, key)
            except Exception as exc:
                item.error = exc
        try:
            for job in concurrent.futures.as_completed(jobs):
                item, key = jobs[job]
                self._settle_job(item, key, job, cache, logger)
        except BaseException:
            # The engine thread was interrupted (cancellation, shutdown): stop the jobs too.
            for job in jobs:
                self.cancel_job(job)
            raise
        failed = [item for item in todo if item.error is not None]
        logger.info("items: %d ran, %d failed, %d reused from cache", len(jobs), len(failed), cached)
        if failed:
            raise self._failure(failed)

    def _submit(self, context: TaskRunContext, item: Item, inputs: dict[str, Any]) -> Any:
        args, kwargs = parameters_to_args_kwargs(self.task.fn, inputs)
        task_run = context.task_run
        info = TaskRunInfo(
            task_run_id=str(task_run.id),
            task_run_name=item.name,
            flow_run_id=str(task_run.flow_run_id) if task_run.flow_run_id else None,
            task_name=self.task.name,
            log_prints=context.log_prints,
        )
        return self.submit_job(
            call_timed_in_task_run,
            (self.remote, info, args, kwargs),
            label=item.name,
            timeout=self.task.timeout_seconds,
            log_sink=_item_log_sink(get_run_logger(context), item.label),
            log_prints=context.log_prints,
        )

    def _settle_job(
        self,
        item: Item,
        key: str | None,
        job: concurrent.futures.Future[Any],
        cache: ItemCache | None,
        logger: Any,
    ) -> None:
        try:
            seconds, value = job.result()
        except Exception as exc:
            item.error = exc
            return
        self.sizer.record(seconds)
        if key is not None and cache is not None:
            try:
                cache.write(key, value)
            except Exception as exc:  # the item still succeeded; only reuse is lost
                logger.warning("[%s] result not cached: %s", item.label, exc)
        self._succeeded(item, value, cached=False)

    def _succeeded(self, item: Item, value: Any, *, cached: bool) -> None:
        state: State[Any] = Completed(data=value, name="Cached" if cached else "Completed")
        state.state_details.task_run_id = self.task_run_id
        if self.tracked and FlowRunContext.get() is not None:
            link_state_to_result(state, value, RunType.TASK_RUN)
        item.future.settle(state, value=value)

    def _failure(self, failed: list[Item]) -> BaseException:
        if len(self.items) == 1 and failed[0].error is not None:
            return failed[0].error  # a one-item chunk fails like a task run of its own
        shown = "; ".join(f"{item.name}: {type(item.error).__name__}: {item.error}" for item in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        return ChunkFailedError(f"{len(failed)} of {len(self.items)} items failed: {shown}{more}")

    # ------------------------------------------------------------- after the task run

    def finish(self, engine_future: concurrent.futures.Future[Any]) -> None:
        """The task run is final: items still unsettled take their last error (or the run's)."""
        fallback: BaseException | None = None
        for item in self.items:
            if item.future.settled:
                continue
            error = item.error
            if error is None:
                fallback = fallback or _run_error(self.name, engine_future)
                error = fallback
            name = "TimedOut" if isinstance(error, TimeoutError) else "Failed"
            state: State[Any] = Failed(data=error, name=name, message=f"{type(error).__name__}: {error}")
            state.state_details.task_run_id = self.task_run_id
            item.future.settle(state, error=error)


_PLAIN = (int, float, str, bytes, bool, type(None))


class _Resolver:
    """Prefect's resolution of futures, states and annotations in parameters, per value.

    Plain scalars need none; a value shared by many items (``unmapped``) is resolved once
    per chunk attempt (its error, e.g. a failed upstream, is raised for each item).
    """

    def __init__(self) -> None:
        self._done: dict[tuple[str, int], tuple[Any, BaseException | None]] = {}

    def __call__(self, parameters: dict[str, Any]) -> dict[str, Any]:
        resolved = {}
        for key, value in parameters.items():
            if isinstance(value, _PLAIN):
                resolved[key] = value
                continue
            known = self._done.get((key, id(value)))
            if known is None:
                try:
                    known = (resolve_inputs_sync({key: value})[key], None)
                except Exception as exc:
                    known = (None, exc)
                self._done[(key, id(value))] = known
            if known[1] is not None:
                raise known[1]
            resolved[key] = known[0]
        return resolved


def _run_error(name: str, engine_future: concurrent.futures.Future[Any]) -> BaseException:
    """Why a chunk's task run ended without running an item (cancelled, upstream failed)."""
    if engine_future.cancelled():
        return concurrent.futures.CancelledError(f"{name} was cancelled before it ran")
    error = engine_future.exception()
    if error is not None:
        return error
    state: State[Any] = engine_future.result()
    outcome = state.result(raise_on_failure=False) if state.is_failed() or state.is_crashed() else None
    if isinstance(outcome, BaseException):
        return outcome
    return RuntimeError(f"{name} ended {state.name} without running this item: {state.message}")


def _item_log_sink(logger: Any, label: str) -> LogSink:
    """Emits a worker's log lines through ``logger`` in this context, prefixed with the item."""
    context = copy_context()

    def log_sink(level: int, message: str) -> None:
        context.run(logger.log, level, f"[{label}] {message}")

    return log_sink


@dataclass(eq=False)
class Batch:
    """The items of one ``map`` (or the stream of one ``imap``) and how to run them."""

    task: Task[Any, Any]
    sizer: ChunkSizer
    tracked: bool
    wait_for: list[PrefectFuture[Any]] | None
    dependencies: dict[str, set[RunInput]] | None
    context: Context = field(default_factory=copy_context)
    queue: collections.deque[Item] = field(default_factory=collections.deque)


class ChunkDispatcher:
    """Forms chunks from queued items whenever fewer than ``max_in_flight`` chunks run.

    One thread; batches are served in the order they were queued, so chunks (and task-run
    ids) come in mapping order.
    """

    def __init__(self, start_chunk: Callable[[Batch, list[Item]], Chunk], max_in_flight: int) -> None:
        self.start_chunk = start_chunk
        self.max_in_flight = max_in_flight
        self._batches: collections.deque[Batch] = collections.deque()
        self._in_flight = 0
        self._closing = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="poolflow-chunks", daemon=True)
        self._thread.start()

    def add(self, batch: Batch, items: Iterable[Item]) -> None:
        """Queue ``items`` of ``batch`` (a batch may be added to again, as ``imap`` does)."""
        with self._condition:
            if self._closing:
                raise RuntimeError("The task runner is shutting down")
            batch.queue.extend(items)
            if batch not in self._batches:
                self._batches.append(batch)
            self._condition.notify_all()

    def chunk_done(self) -> None:
        with self._condition:
            self._in_flight -= 1
            self._condition.notify_all()

    def close(self, *, cancel: bool) -> None:
        """Stop: start every queued item first, or (``cancel``) fail the queued items."""
        with self._condition:
            self._closing = True
            if cancel:
                for batch in self._batches:
                    for item in batch.queue:
                        item.future.assign(_UNASSIGNED)
                        error = concurrent.futures.CancelledError(f"{item.name} was cancelled before it ran")
                        item.future.settle(Failed(data=error, message=str(error)), error=error)
                    batch.queue.clear()
                self._batches.clear()
            self._condition.notify_all()
        self._thread.join()

    def _next(self) -> tuple[Batch, list[Item]] | None:
        """The next chunk to start, waiting for a free engine slot and queued items."""
        with self._condition:
            while True:
                while self._batches and not self._batches[0].queue:
                    self._batches.popleft()
                if self._batches and self._in_flight < self.max_in_flight:
                    batch = self._batches[0]
                    size = batch.sizer.next_size(len(batch.queue))
                    items = [batch.queue.popleft() for _ in range(min(size, len(batch.queue)))]
                    self._in_flight += 1
                    return batch, items
                if self._closing and not self._batches:
                    return None
                self._condition.wait()

    def _run(self) -> None:
        while (work := self._next()) is not None:
            batch, items = work
            try:
                batch.context.run(self.start_chunk, batch, items)
            except BaseException as exc:  # the runner stopped: these items will not run
                self.chunk_done()
                for item in items:
                    item.future.assign(_UNASSIGNED)
                    item.future.settle(Failed(data=exc, message=f"{type(exc).__name__}: {exc}"), error=exc)
