"""``MultiprocessingTaskRunner``: Prefect task runs orchestrated here, executed in a warm pool.

Prefect's ``ProcessPoolTaskRunner`` starts a Prefect engine (settings, client, events)
inside a worker for every task. This runner keeps the engine in the flow process, on a
small thread pool, and ships only the task's function call to a ``WorkerPool`` of
long-lived processes. The engine sees an ordinary function that blocks until the worker
answers, so states, retries, caching, result persistence, ``wait_for`` and futures-as-
arguments all behave as with Prefect's own runners, at the cost of one pickle round trip.

Failures that Prefect's runner cannot attribute — a worker killed mid-task, a CPU-bound
task past its ``timeout_seconds`` — fail (or retry) just that task run here.
"""

from __future__ import annotations

import collections
import copy
import functools
import gc
import inspect
import logging
import os
import threading
import uuid
from collections import ChainMap
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import CancelledError, Future
from contextvars import copy_context
from typing import TYPE_CHECKING, Any

from prefect.client.schemas.objects import RunInput
from prefect.context import FlowRunContext, TaskRunContext
from prefect.futures import PrefectConcurrentFuture, PrefectFuture, PrefectFutureList
from prefect.logging.loggers import get_run_logger
from prefect.task_runners import TaskRunner
from typing_extensions import Self

from poolflow.runners.async_ctrl_c import interrupt_waiting_loop
from poolflow.runners.cancellation import CancellationWatcher
from poolflow.runners.chunked_map import Batch, Chunk, ChunkDispatcher, per_chunk_warning
from poolflow.runners.chunking import ChunkSize, make_sizer
from poolflow.runners.engine_threads import EngineThreads
from poolflow.runners.interrupt_line import CANCELLED_LINE, one_line_for
from poolflow.runners.item_cache import persists_results
from poolflow.runners.main_guard import check_main_guard
from poolflow.runners.mapped_items import Item, expand_map, item_names
from poolflow.runners.prefect_compat import process_pool_max_workers
from poolflow.runners.recording import wait_until_recorded
from poolflow.runners.worker_context import TaskRunInfo, call_in_task_run, portable_function
from poolflow.runners.worker_pool import (
    DEFAULT_START_METHOD,
    WorkerPool,
    log_sink_in_context,
    pool_sources,
    start_fork_server,
)

if TYPE_CHECKING:
    from prefect.tasks import Task

# Prefect's own runners' words for a submit before the runner is entered.
NOT_STARTED = "Task runner is not started"
# Extra engine threads beyond the worker count keep workers fed while the engine records
# states for tasks that just finished.
_EXTRA_ENGINE_THREADS = 2
# Seconds a failing or interrupted runner waits for its engine threads to record how their
# task runs ended, once the pool is stopped; an engine sleeping through a retry delay is left.
_ENDING_GRACE = 3.0


class MultiprocessingTaskRunner(TaskRunner[PrefectConcurrentFuture[Any]]):
    """Run a flow's tasks in a pool of ``processes`` long-lived worker processes.

    Args:
        processes: worker processes (default: Prefect's setting
            ``PREFECT_TASKS_RUNNER_PROCESS_POOL_MAX_WORKERS``, as for its process runner,
            else the CPU count).
        maxtasksperchild: replace a worker after this many tasks (default: never).
        start_method: ``forkserver`` (default on POSIX) or ``spawn``. ``fork`` is refused
            (``ValueError`` on entering the runner): the flow process runs Prefect's threads.
        initializer, initargs: called once in every new worker.
        record_timeout: at exit, seconds to wait for the API to store more task runs
            before giving up (0: do not wait).
        max_pending: task runs submitted but not finished at most; ``submit`` blocks
            beyond it, and ``imap`` reads at most this many items ahead of its results.
        chunksize: consecutive items of ``map``/``imap`` per Prefect task run: ``"auto"``
            (default) sizes chunks from measured item durations (``poolflow.runners.chunking``);
            an int fixes it; ``1`` runs one task run per item. Futures, results, errors,
            retries and timeouts stay per item (``poolflow.runners.chunked_map``).
    """

    def __init__(
        self,
        processes: int | None = None,
        *,
        maxtasksperchild: int | None = None,
        start_method: str | None = DEFAULT_START_METHOD,
        initializer: Callable[..., object] | None = None,
        initargs: Sequence[Any] = (),
        record_timeout: float = 30.0,
        max_pending: int = 1000,
        chunksize: ChunkSize = "auto",
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if processes is not None and processes < 1:
            raise ValueError("processes must be at least 1")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        self.processes = processes or process_pool_max_workers() or os.cpu_count() or 1
        make_sizer(chunksize, self.processes)  # rejects a bad setting now, not at the first map
        self.chunksize = chunksize
        self.maxtasksperchild = maxtasksperchild
        self.start_method = start_method
        self.initializer = initializer
        self.initargs = tuple(initargs)
        self.record_timeout = record_timeout
        self._new_run_state()
        start_fork_server(start_method)

    def _new_run_state(self) -> None:
        """No pool, threads or bookkeeping of task runs: a runner as made, and as unpickled."""
        self._pool: WorkerPool | None = None
        self._engines: EngineThreads | None = None
        self._dispatcher: ChunkDispatcher | None = None
        self._watcher: CancellationWatcher | None = None
        self._restore_ctrl_c: Callable[[], None] | None = None
        self._froze = False  # this runner froze the process's objects and unfreezes them at its exit
        self._pool_tasks: dict[int, tuple[Task[Any, Any], Task[Any, Any]]] = {}
        self._ran = bytearray()  # finished task runs still to be confirmed as recorded, 16 bytes each
        self._pending = 0
        self.peak_pending = 0
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(self.max_pending)

    def _options(self) -> dict[str, Any]:
        """The constructor arguments this runner was configured with."""
        return {
            "processes": self.processes,
            "maxtasksperchild": self.maxtasksperchild,
            "start_method": self.start_method,
            "initializer": self.initializer,
            "initargs": self.initargs,
            "record_timeout": self.record_timeout,
            "max_pending": self.max_pending,
            "chunksize": self.chunksize,
        }

    def duplicate(self) -> Self:
        """An equal runner (the flow engine duplicates the flow's runner for every flow run).

        A subclass's constructor may take fewer options than this one: it gets those it
        accepts, and the others are set on the new runner as this one has them.
        """
        options = self._options()
        parameters = inspect.signature(type(self).__init__).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            accepted = set(options)
        else:
            accepted = {p.name for p in parameters if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
        twin = type(self)(**{name: value for name, value in options.items() if name in accepted})
        for name, value in options.items():
            if name not in accepted:
                setattr(twin, name, value)
        return twin

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MultiprocessingTaskRunner) and self._options() == other._options()

    def __hash__(self) -> int:
        return hash(tuple(self._options().values()))

    def __getstate__(self) -> dict[str, Any]:
        # Flows are pickled when deployments dispatch them; only the configuration travels
        # (``__setstate__`` makes a new run state), so the live parts that cannot pickle stay.
        state = self.__dict__.copy()
        for live in ("_pool", "_engines", "_dispatcher", "_watcher", "_restore_ctrl_c", "_lock", "_slots"):
            state.pop(live, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._new_run_state()

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> Self:
        check_main_guard()  # before any worker imports the script
        super().__enter__()
        options: dict[str, Any] = {
            "maxtasksperchild": self.maxtasksperchild,
            "initializer": self.initializer,
            "initargs": self.initargs,
            "start_method": self.start_method,
        }
        pool = next(filter(None, (source(self.processes, options) for source in pool_sources)), None)
        if pool is None:
            pool = WorkerPool(self.processes, **options)
            pool.start()
        self._pool = pool
        self._engines = EngineThreads(self.processes + _EXTRA_ENGINE_THREADS, "poolflow-engine")
        self._dispatcher = ChunkDispatcher(self._start_chunk, self.processes + _EXTRA_ENGINE_THREADS)
        self._ran = bytearray()
        self.peak_pending = 0
        self._watch_flow_run()
        self._restore_ctrl_c = interrupt_waiting_loop()
        self._froze = _freeze_existing_objects()
        return self

    def _watch_flow_run(self) -> None:
        """Start watching the current flow run for a cancel from the UI or API, once.

        Called on entering and on each submission: Prefect enters a flow's own task runner
        before the flow run's context exists, so there the watch starts with the first task run.
        """
        flow_run = getattr(FlowRunContext.get(), "flow_run", None)
        with self._lock:
            if flow_run is None or self._watcher is not None:
                return
            watcher = self._watcher = CancellationWatcher(flow_run.id, self.cancel_all)
        watcher.start()

    def cancel_all(self) -> None:
        """Stop every task run now: kill the workers; pending and new ones fail at once.

        Prefect's flow engine calls this (where a runner has it) when a worker or runner that
        started the flow run signals it to cancel; the cancellation watcher calls it when the
        run was cancelled from the UI or API and nobody signals the process (a script's run,
        or a runner started inside a flow, which the engine does not know).
        """
        if self._pool is not None:
            self._pool.shutdown(kill=True)

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        pool, engines, dispatcher = self._pool, self._engines, self._dispatcher
        if isinstance(exc_value, KeyboardInterrupt):
            one_line_for(exc_value)
        try:
            if dispatcher is not None:
                # Queued items start before the engines stop, unless the flow is failing.
                dispatcher.close(cancel=exc_type is not None)
            if pool is not None and exc_type is not None:
                # Failing: stop the work now; engine threads then record their task runs
                # as failed instead of waiting for results. Interrupted (Ctrl-C, SIGTERM,
                # SystemExit): they record them as crashed by that interrupt, as Prefect
                # records the flow run, instead of one failure traceback per task run.
                interrupt = None if isinstance(exc_value, Exception) else exc_value
                pool.shutdown(kill=True, because=interrupt)
            if engines is not None:
                left = engines.shutdown(None if exc_type is None else _ENDING_GRACE)
                if left:
                    _flow_or_module_logger().warning(
                        "%d task runs did not record their end within %g s of the flow run's end "
                        "(e.g. one waiting for a retry); they stay in their last state",
                        len(left),
                        _ENDING_GRACE,
                    )
            if pool is not None and exc_type is None:
                pool.shutdown()
            with self._lock:  # no task run starts any more: the watch can end
                ran, self._ran = self._ran, bytearray()
                watcher, self._watcher = self._watcher, None
            if watcher is not None:
                watcher.stop()
            wait_until_recorded(_task_run_ids(ran), self.record_timeout)
            if watcher is not None:
                watcher.conclude()
            if watcher is not None and watcher.cancelled:
                # The flow call raises a stopped task run's error once the engine is done.
                one_line_for(CancelledError, CANCELLED_LINE)
        finally:
            if self._watcher is not None:  # the exit failed before the watch ended
                self._watcher.stop()
                self._watcher = None
            if self._restore_ctrl_c is not None:
                self._restore_ctrl_c()
                self._restore_ctrl_c = None
            if self._froze:
                gc.unfreeze()
                self._froze = False
            self._pool = None
            self._engines = None
            self._dispatcher = None
            self._pool_tasks = {}
            super().__exit__(exc_type, exc_value, traceback)

    # ----------------------------------------------------------------- submission

    def submit(
        self,
        task: Task[Any, Any],
        parameters: dict[str, Any],
        wait_for: Iterable[PrefectFuture[Any]] | None = None,
        dependencies: dict[str, set[RunInput]] | None = None,
    ) -> PrefectConcurrentFuture[Any]:
        """Start ``task`` with ``parameters``: its engine on a thread, its body in a worker."""
        return self._start(self._pool_task(task), parameters, wait_for, dependencies, tracked=True)

    def _start(
        self,
        engine_task: Task[Any, Any],
        parameters: dict[str, Any],
        wait_for: Iterable[PrefectFuture[Any]] | None,
        dependencies: dict[str, set[RunInput]] | None,
        *,
        tracked: bool,
        task_run_id: uuid.UUID | None = None,
    ) -> PrefectConcurrentFuture[Any]:
        """Submit one task run of ``engine_task`` (a task whose function calls the pool).

        ``tracked=False`` keeps its result out of the flow's lineage maps.
        """
        if not self._started or self._engines is None:
            raise RuntimeError(NOT_STARTED)
        from prefect.task_engine import run_task_sync

        if self._watcher is None:
            self._watch_flow_run()
        self._slots.acquire()  # back-pressure: released when an engine run finishes
        with self._lock:
            self._pending += 1
            self.peak_pending = max(self.peak_pending, self._pending)
        task_run_id = task_run_id or uuid.uuid4()
        engine = run_task_sync if tracked else functools.partial(_run_untracked, run_task_sync)
        engine_future = self._engines.submit(
            copy_context().run,
            engine,
            task=engine_task,
            task_run_id=task_run_id,
            parameters=parameters,
            wait_for=wait_for,
            return_type="state",
            dependencies=dependencies,
        )
        engine_future.add_done_callback(functools.partial(self._engine_done, task_run_id))
        return PrefectConcurrentFuture(task_run_id=task_run_id, wrapped_future=engine_future)

    def map(
        self,
        task: Task[Any, Any],
        parameters: dict[str, Any],
        wait_for: Iterable[PrefectFuture[Any]] | None = None,
    ) -> PrefectFutureList[PrefectConcurrentFuture[Any]]:
        """Prefect's ``map`` (same expansion, ``unmapped``, ``allow_failure``), in chunks.

        Returns one future per item, in input order, at once; the items run as chunks of
        consecutive items, one task run each (see ``poolflow.runners.chunked_map``).
        """
        if self.chunksize == 1:
            return super().map(task, parameters, wait_for)
        if not self._started:
            raise RuntimeError(NOT_STARTED)
        calls, dependencies = expand_map(task, parameters)
        batch = self._batch(task, tracked=True, wait_for=wait_for, dependencies=dependencies)
        items = [Item(index, call, *item_names(task, index, call)) for index, call in enumerate(calls)]
        self._queue(batch, items)
        return PrefectFutureList([item.future for item in items])  # type: ignore[abstract]

    def imap(
        self, task: Task[Any, Any], parameter_sets: Iterable[dict[str, Any]], raise_on_failure: bool = True
    ) -> Iterator[Any]:
        """Like ``Pool.imap``: the task over each parameter dict, results in input order.

        At most ``max_pending`` items are read ahead of the results and each result is
        dropped once yielded, so mapping 100,000 items holds ``max_pending`` futures, not
        100,000. The task runs (chunks, as in ``map``) are untracked (``_run_untracked``):
        Prefect does not keep a state per result for the rest of the flow run, and a yielded
        result passed to another task is not drawn as its dependency.
        """
        window: collections.deque[PrefectConcurrentFuture[Any]] = collections.deque()
        batch = None if self.chunksize == 1 else self._batch(task, tracked=False)
        for index, parameters in enumerate(parameter_sets):
            if len(window) >= self.max_pending:
                yield window.popleft().result(raise_on_failure=raise_on_failure)
            if batch is None:
                window.append(self._start(self._pool_task(task), parameters, None, None, tracked=False))
            else:
                item = Item(index, parameters, *item_names(task, index, parameters))
                self._queue(batch, [item])
                window.append(item.future)
        while window:
            yield window.popleft().result(raise_on_failure=raise_on_failure)

    def _batch(
        self,
        task: Task[Any, Any],
        *,
        tracked: bool,
        wait_for: Iterable[PrefectFuture[Any]] | None = None,
        dependencies: dict[str, set[RunInput]] | None = None,
    ) -> Batch:
        """The bookkeeping of one ``map`` or ``imap`` call, sized by this runner's chunksize."""
        self._check_runnable(task)
        warning = per_chunk_warning(task)
        if warning is not None:
            _flow_or_module_logger().warning(warning)
        sizer = make_sizer(self.chunksize, self.processes)
        wait = list(wait_for) if wait_for else None
        return Batch(task, sizer, tracked, wait, dependencies, persists_results(task))

    def _queue(self, batch: Batch, items: list[Item]) -> None:
        if self._dispatcher is None:
            raise RuntimeError(NOT_STARTED)
        self._dispatcher.add(batch, items)

    def _start_chunk(self, batch: Batch, items: list[Item]) -> Chunk:
        """Start one chunk's task run (called by the dispatcher thread, in the map's context)."""
        chunk = Chunk(batch, items, self._submit_job)
        future = self._start(
            chunk.engine_task(),
            chunk.parameters(),
            batch.wait_for,
            chunk.dependencies(),
            tracked=batch.tracked,
            task_run_id=chunk.task_run_id,
        )
        future.wrapped_future.add_done_callback(functools.partial(self._chunk_done, chunk))
        return chunk

    def _chunk_done(self, chunk: Chunk, engine_future: Future[Any]) -> None:
        chunk.finish(engine_future)
        if self._dispatcher is not None:
            self._dispatcher.chunk_done()

    def _submit_job(self, fn: Callable[..., Any], args: tuple[Any, ...], **options: Any) -> Future[Any]:
        """Queue one item's call in the pool (``WorkerPool.submit``'s keyword options)."""
        if self._pool is None:
            raise RuntimeError("The task runner is not running")
        return self._pool.submit(fn, args, None, **options)

    @staticmethod
    def _check_runnable(task: Task[Any, Any]) -> None:
        if task.isgenerator:
            raise TypeError(f"generator task {task.name!r} cannot run in MultiprocessingTaskRunner")

    def _engine_done(self, task_run_id: uuid.UUID, engine_future: Future[Any]) -> None:
        with self._lock:
            self._pending -= 1
            if not engine_future.cancelled():
                self._ran += task_run_id.bytes
        self._slots.release()

    def _pool_task(self, task: Task[Any, Any]) -> Task[Any, Any]:
        """A copy of ``task`` whose function runs in the pool (made once per task)."""
        cached = self._pool_tasks.get(id(task))
        if cached is not None and cached[0] is task:
            return cached[1]
        self._check_runnable(task)
        remote = portable_function(task.fn)
        timeout = task.timeout_seconds

        @functools.wraps(task.fn)
        def run_in_pool(*args: Any, **kwargs: Any) -> Any:
            return self._call_in_pool(remote, timeout, args, kwargs)

        pool_task = copy.copy(task)
        pool_task.fn = run_in_pool
        pool_task.isasync = False
        # The pool enforces the timeout by killing the worker; Prefect's own timeout can
        # only interrupt Python code in the engine thread, which is just waiting here.
        pool_task.timeout_seconds = None
        self._pool_tasks[id(task)] = (task, pool_task)
        return pool_task

    def _call_in_pool(
        self, fn: Any, timeout: float | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Runs on an engine thread inside the task run: send the call, wait for its result."""
        if self._pool is None:
            raise RuntimeError("The task runner is not running")
        context = TaskRunContext.get()
        if context is None:
            raise RuntimeError("pool calls must happen inside a task run")
        task_run = context.task_run
        info = TaskRunInfo.of(context)
        log_sink = log_sink_in_context(get_run_logger(context))
        future = self._pool.submit(
            call_in_task_run,
            (fn, info, args, kwargs),
            label=task_run.name,
            timeout=timeout,
            log_sink=log_sink,
            log_prints=context.log_prints,
        )
        try:
            return future.result()
        except BaseException:
            # The engine thread was interrupted (cancellation, shutdown): stop the job too.
            future.cancel()
            raise


def _run_untracked(engine: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Call ``engine(**kwargs)`` without leaving per-result bookkeeping in the flow run's context.

    Prefect links every task result to its final state in the flow run context
    (``run_results``, keyed by ``id(result)``) and records the assets each task run passes
    downstream (``task_run_assets``), so that a result handed to another task shows up as a
    dependency. Those entries live as long as the flow run, about 5 KB per task run: half a
    gigabyte for 100,000 streamed items. Here the engine gets a copy of the flow run context
    whose two maps read through to the flow run's (the run's inputs keep their lineage) but
    keep their writes, which are dropped when the call returns.
    """
    flow_context = FlowRunContext.get()
    if flow_context is None:
        return engine(**kwargs)
    scratch = flow_context.model_copy(
        update={
            "run_results": ChainMap({}, flow_context.run_results),
            "task_run_assets": ChainMap({}, flow_context.task_run_assets),
        }
    )
    with scratch:
        return engine(**kwargs)


def _freeze_existing_objects() -> bool:
    """Leave the objects that exist now out of the cyclic collector's scans; True if it did.

    A flow process holds hundreds of thousands of long-lived objects (Prefect's modules,
    classes, schemas) when its runner starts, and a map allocates enough (futures, states,
    items) to set off a full collection: a tenth of a second with the GIL held, in which no
    thread of the flow process hands a worker its next job. ``gc.freeze`` spares them the
    scan; the runner's exit puts them back in the oldest generation (``gc.unfreeze``), where
    any garbage among them is collected as before. A process whose collector is off, or
    that froze objects itself, is left as it is.
    """
    if not gc.isenabled() or gc.get_freeze_count():
        return False
    gc.freeze()
    return True


def _task_run_ids(packed: bytearray) -> Iterator[uuid.UUID]:
    """The task-run ids stored 16 bytes each in ``packed``."""
    for start in range(0, len(packed), 16):
        yield uuid.UUID(bytes=bytes(packed[start : start + 16]))


def _flow_or_module_logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    """The flow run's logger (its lines reach the API), or this module's outside a flow run."""
    context = FlowRunContext.get()
    return get_run_logger(context) if context is not None else logging.getLogger(__name__)
