"""A chunk: consecutive items of one map, run as one Prefect task run, settled per item.

The runner's ``map``/``imap`` turn every item into an ``ItemFuture`` at once
(``poolflow.runners.mapped_items``) and queue it; the ``ChunkDispatcher`` thread forms a chunk
when an engine thread is free (so automatic sizing uses the latest measured durations) and
starts it as one task run. The chunk's function (``Chunk.run_attempt``, on the engine thread
inside that task run) sends every item to the worker pool as its own job, so timeouts,
dead-worker attribution and log forwarding stay per item; each item's outcome settles its own
future. The chunk raises at the end if any item failed: the task run ends ``Failed`` and
Prefect's retries rerun the function, which runs only the items not yet succeeded.

Per item, as with one task run per item: upstream futures in its arguments are resolved
(a failed upstream fails just that item), and with ``persist_result`` and a cache policy
its result is cached under its own key in the task's result store, so a retried flow run
reuses every item that succeeded before (``poolflow.runners.item_cache``).
"""

from __future__ import annotations

import collections
import concurrent.futures
import copy
import inspect
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable
from contextvars import Context, copy_context
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import RunInput, RunType, State, TaskRun
from prefect.context import FlowRunContext, TaskRunContext
from prefect.futures import PrefectFuture
from prefect.logging.loggers import get_run_logger
from prefect.states import Completed, Failed
from prefect.utilities.asyncutils import run_coro_as_sync
from prefect.utilities.callables import parameters_to_args_kwargs
from prefect.utilities.engine import (
    collect_task_run_inputs_sync,
    link_state_to_result,
    resolve_inputs_sync,
)

from poolflow.runners.chunking import ChunkSizer
from poolflow.runners.item_cache import ItemCache
from poolflow.runners.mapped_items import UNASSIGNED, Item, split_name
from poolflow.runners.worker import Shared
from poolflow.runners.worker_context import ChunkJobs, TaskRunInfo, call_chunk_item, portable_function
from poolflow.runners.worker_pool import LogSink, log_sink_in_context

if TYPE_CHECKING:
    from prefect.tasks import Task

SubmitJob = Callable[..., concurrent.futures.Future[Any]]
"""``WorkerPool.submit`` as the runner exposes it (raises if the runner is not running)."""


class ChunkFailedError(RuntimeError):
    """Some items of a chunk failed; each item's own error is on its future."""


def chunk_name(task: Task[Any, Any], items: list[Item]) -> str:
    """``parse(AA/wiki_00)`` for one item; ``parse(AA/wiki_00 … AA/wiki_07, 8 items)`` for more."""
    if len(items) == 1:
        return items[0].name
    stem = split_name(items[0].name, task.name)[0]
    return f"{stem}({items[0].label} … {items[-1].label}, {len(items)} items)"


def per_chunk_warning(task: Task[Any, Any]) -> str | None:
    """One line for a map of ``task`` whose options Prefect applies per task run, so per chunk
    here: tags (and the concurrency limits that count them) and state hooks; else None."""
    hooks = {
        "on_completion": task.on_completion_hooks,
        "on_failure": task.on_failure_hooks,
        "on_running": getattr(task, "on_running_hooks", None),
    }
    options = [f"tags {sorted(task.tags)}"] if task.tags else []
    options += [name for name, attached in hooks.items() if attached]
    if not options:
        return None
    return (
        f"{task.name}.map runs in chunks of several items: {', '.join(options)} apply per chunk "
        "(tag concurrency limits count one slot per chunk); use MultiprocessingTaskRunner(chunksize=1) "
        "for one task run per item"
    )


class Chunk:
    """Consecutive items of one map, run as one task run (possibly over several attempts)."""

    def __init__(self, batch: Batch, items: list[Item], submit_job: SubmitJob) -> None:
        self.batch = batch
        self.task = batch.task
        self.items = items
        self.submit_job = submit_job
        self.task_run_id = uuid.uuid4()
        self.name = chunk_name(batch.task, items)
        self.reused = 0  # items served from the cache, over all attempts
        self.remote = portable_function(batch.task.fn)
        for item in items:
            item.future.assign(self.task_run_id)

    def engine_task(self) -> Task[Any, Any]:
        """A copy of the task whose function runs this chunk's items; parameters: their labels."""
        chunk = self

        def run_chunk(items: list[str]) -> State[None] | None:
            return chunk.run_attempt()

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
        if self.task.retry_condition_fn is not None:
            chunk_task.retry_condition_fn = self._retry_condition
        return chunk_task

    def parameters(self) -> dict[str, Any]:
        return {"items": [item.label for item in self.items]}

    def dependencies(self) -> dict[str, set[RunInput]]:
        """The map's dependencies plus the upstream runs in each item's own arguments.

        Prefect accepts inputs only under the task run's parameter names, and the chunk's
        only parameter is ``items``: every upstream run is listed there.
        """
        inputs: set[RunInput] = set().union(*(self.batch.dependencies or {}).values())
        seen: set[int] = set()
        for item in self.items:
            for value in item.parameters.values():
                if id(value) not in seen:
                    seen.add(id(value))
                    inputs |= collect_task_run_inputs_sync(value)
        return {"items": inputs}

    # ------------------------------------------------------------- in the task run

    def run_attempt(self) -> State[None] | None:
        """Run the items not yet succeeded; raise if any of them failed.

        Returns the chunk's final state when items came from the cache, so the API shows it:
        ``Cached`` when every item did (as Prefect names a task run it did not run), else
        ``Completed`` with a message counting them.
        """
        context = TaskRunContext.get()
        if context is None:
            raise RuntimeError("a chunk must run inside its task run")
        logger = get_run_logger(context)
        cache = ItemCache.for_task(self.task, context, self.batch.persist)
        jobs: dict[concurrent.futures.Future[Any], Item] = {}
        todo = [item for item in self.items if not item.future.settled]
        cached = 0
        resolve = _Resolver()
        info = TaskRunInfo.of(context)
        shared = Shared(ChunkJobs(self.remote, info, cache.writer if cache is not None else None))
        for item in todo:
            item.error = None
            try:
                inputs = resolve(item.parameters)
                key = cache.key(inputs) if cache is not None else None
                if key is not None and cache is not None:
                    hit, value = cache.read(key)
                    if hit:
                        cached += 1
                        self._succeeded(item, value, cached=True)
                        continue
                sink = log_sink_in_context(logger, f"[{item.label}] ")
                jobs[self._submit(shared, info.log_prints, item, inputs, sink, key)] = item
            except Exception as exc:
                item.error = exc
        try:
            for job in concurrent.futures.as_completed(jobs):
                self._settle_job(jobs[job], job, logger)
        except BaseException:
            # The engine thread was interrupted (cancellation, shutdown): stop the jobs too.
            for job in jobs:
                job.cancel()  # the pool drops a queued job and kills a running one's worker
            raise
        failed = [item for item in todo if item.error is not None]
        logger.info("items: %d ran, %d failed, %d reused from cache", len(jobs), len(failed), cached)
        self.reused += cached
        if failed:
            raise self._failure(failed)
        return self._reuse_state()

    def _submit(
        self,
        shared: Shared,
        log_prints: bool,
        item: Item,
        inputs: dict[str, Any],
        log_sink: LogSink,
        key: str | None,
    ) -> Any:
        """Queue ``item``'s call; its worker writes the result's record under ``key``, if any."""
        args, kwargs = parameters_to_args_kwargs(self.task.fn, inputs)
        return self.submit_job(
            call_chunk_item,
            (shared, item.name, args, kwargs, key),
            label=item.name,
            timeout=self.task.timeout_seconds,
            log_sink=log_sink,
            log_prints=log_prints,
        )

    def _settle_job(self, item: Item, job: concurrent.futures.Future[Any], logger: Any) -> None:
        try:
            seconds, value, problem = job.result()
        except Exception as exc:
            item.error = exc
            return
        self.batch.sizer.record(seconds)
        if problem is not None:  # the item still succeeded; only reuse is lost
            logger.warning("[%s] result not cached: %s", item.label, problem)
        self._succeeded(item, value, cached=False)

    def _succeeded(self, item: Item, value: Any, *, cached: bool) -> None:
        state: State[Any] = Completed(data=value, name="Cached" if cached else "Completed")
        state.state_details.task_run_id = self.task_run_id
        if self.batch.tracked and FlowRunContext.get() is not None:
            link_state_to_result(state, value, RunType.TASK_RUN)
        item.future.settle(state, value=value)

    def _reuse_state(self) -> State[None] | None:
        if not self.reused:
            return None
        total = len(self.items)
        if self.reused == total:
            return Completed(name="Cached", message=f"all {total} items reused from cache")
        return Completed(message=f"{self.reused} of {total} items reused from cache")

    def _failure(self, failed: list[Item]) -> BaseException:
        if len(self.items) == 1 and failed[0].error is not None:
            return failed[0].error  # a one-item chunk fails like a task run of its own
        shown = "; ".join(f"{item.name}: {type(item.error).__name__}: {item.error}" for item in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        return ChunkFailedError(f"{len(failed)} of {len(self.items)} items failed: {shown}{more}")

    def _retry_condition(self, task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
        """Prefect asks whether to retry the chunk: the task's own condition decides per failed
        item, seeing that item's own Failed state; an item it refuses fails now, the rest
        run again."""
        condition = self.task.retry_condition_fn
        assert condition is not None  # installed only for a task that has one
        again = False
        for item in self.items:
            if item.future.settled or item.error is None:
                continue
            item_state = _failed_state(item.error, self.task_run_id)
            verdict = condition(self.task, task_run, item_state)
            if inspect.isawaitable(verdict):
                verdict = run_coro_as_sync(_awaited(verdict))
            if verdict:
                again = True
            else:
                item.future.settle(item_state, error=item.error)
        return again

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
            item.future.settle(_failed_state(error, self.task_run_id), error=error)


def _failed_state(error: BaseException, task_run_id: uuid.UUID) -> State[Any]:
    """An item's final state for ``error``, as a task run of its own would end."""
    name = "TimedOut" if isinstance(error, TimeoutError) else "Failed"
    state: State[Any] = Failed(data=error, name=name, message=f"{type(error).__name__}: {error}")
    state.state_details.task_run_id = task_run_id
    return state


async def _awaited(verdict: Awaitable[Any]) -> Any:
    return await verdict


_PLAIN = (int, float, str, bytes, bool, type(None))


class _Resolver:
    """Prefect's resolution of futures, states and annotations in parameters, per value.

    Plain scalars need none; a value shared by many items (``unmapped``) is resolved once
    per chunk attempt (its error, e.g. a failed upstream, is raised for each item): Prefect
    walks every element of a collection, so a long unmapped list would be walked per item.
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


# ------------------------------------------------------------------ forming chunks


@dataclass(eq=False)
class Batch:
    """The items of one ``map`` (or the stream of one ``imap``) and how to run them."""

    task: Task[Any, Any]
    sizer: ChunkSizer
    tracked: bool
    wait_for: list[PrefectFuture[Any]] | None
    dependencies: dict[str, set[RunInput]] | None
    persist: bool  # ``item_cache.persists_results`` where the map was called
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
                        item.future.assign(UNASSIGNED)
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
                    item.future.assign(UNASSIGNED)
                    item.future.settle(Failed(data=exc, message=f"{type(exc).__name__}: {exc}"), error=exc)
