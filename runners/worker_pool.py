"""A process pool that knows which job each worker runs.

``multiprocessing.Pool`` cannot tell which task a dead worker was running, so a killed
worker leaves its task's result pending forever. This pool gives every worker its own pipe,
through which it runs one job at a time, in the order sent (so the job a worker died in is
the first it had not answered); a manager thread watches the pipes, the workers' exits and
the jobs' deadlines, so it can

- fail exactly the job of a worker that died (SIGKILL, segfault, ``os._exit``, OOM killer)
  and start a replacement worker;
- enforce a hard timeout by killing the worker of a job that runs too long;
- cancel a running job (``future.cancel()``) by killing its worker;
- keep each busy worker's next job waiting in its pipe, so a worker starts it as soon as
  it sends a result, not once the manager thread (which shares the flow process's GIL with
  Prefect's threads) has read that result;
- forward the log records and (optionally) prints of a running job to the parent.

Data flow, after CPython's ``concurrent.futures.process``::

    caller threads              |  manager thread (_manage)       |  worker processes
                                |                                 |  (poolflow.runners.worker)
    submit() --> pending queue -+-> _dispatch --- RunJob ---------+-> one pipe per worker,
    future.cancel(), shutdown() |                                 |   its run and next job
      --> flags under the lock  |                                 |
      --> wakeup pipe ----------+-> wakes; kills, stops, replaces |
                                |   workers                       |
    future.result() <-----------+-- settles the job's future <----+-- JobResult / JobProblem
    log sinks <-----------------+-- calls the job's log sink <----+-- JobStarted / JobLog
                                |   exits, deadlines <------------+-- deaths, timeouts

The manager thread owns the workers: only it sends to them, reads from them, kills, joins,
replaces and closes them. Callers queue jobs, set flags (cancelled job ids, shutting down,
kill) under the pool's lock and wake the manager; ``shutdown()`` then only waits for the
manager thread to finish. The messages are those of ``poolflow.runners.worker``.

Workers are started with ``forkserver`` (or ``spawn``), never ``fork``: replacements are
started from the manager thread, and forking a process that runs threads can leave the
child holding locks nobody will release (python/cpython#90622, #84559). On Linux a worker's
exit is watched, and the worker killed, through a pidfd rather than through multiprocessing's
sentinel: under ``forkserver`` that sentinel is a pipe from the fork server, which a SIGTERM
to the terminal's process group ends while the workers (which ignore it) work on.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextvars import copy_context
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from poolflow.runners.multiprocessing_compat import fork_the_fork_server, preload_in_fork_server
from poolflow.runners.worker import (
    FromWorker,
    JobLog,
    JobProblem,
    JobResult,
    JobStarted,
    RunJob,
    Share,
    Shared,
    Stop,
    WorkerReady,
    receive_report,
    send,
    worker_main,
)

LogSink = Callable[[int, str], None]
"""Receives (level, message) for log records a job emits in its worker."""

DEFAULT_START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
"""How workers start unless told otherwise: never ``fork`` (see the module docstring)."""

_EXIT_GRACE = 5.0
"""Seconds stopped workers get to exit on their own before they are killed."""
_RESTART_PAUSES = (0.1, 0.5, 2.0)
"""Seconds between the tries to start a worker whose fork server died under the start."""
_HANDED = 2
"""Jobs a worker holds at most: the one it runs and the next, waiting in its pipe."""
_AHEAD_BYTES = 16 * 1024
"""The largest call (with a shared value it needs) sent to a busy worker: a pipe holds it
without blocking the manager (a larger one waits until the worker is free, and reads it at once)."""
_SHARES_KEPT = 16
"""Shared values a worker keeps; sending another drops the one least recently sent to it."""
FORK_SERVER_PRELOAD = ("poolflow.runners.worker", "prefect.flows", "prefect.tasks", "prefect.context")
"""Imported once by the fork server, so that every worker starts with them: the worker loop,
and Prefect, which each worker would otherwise import itself, with the script that started
the flow or with its first task."""

logger = logging.getLogger(__name__)


class WorkerDiedError(RuntimeError):
    """The worker process running a job exited before returning its result."""


class JobTimeoutError(TimeoutError):
    """A job ran past its timeout and its worker was killed."""


class JobCancelledError(concurrent.futures.CancelledError):
    """A job was cancelled (by its caller or by pool shutdown) and did not finish."""


class RemoteTraceback(Exception):
    """Carries the worker-side traceback text as the ``__cause__`` of a job's exception."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def _pidfd(pid: int) -> int | None:
    """A pidfd for process ``pid`` (Linux 5.3+), or None where there are none."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:  # a kernel without pidfds, or a worker already exited and reaped
        return None  # either way its sentinel tells


def describe_exit(exitcode: int | None) -> str:
    """'exit code 3' or 'SIGKILL' for a process exit code."""
    if exitcode is None:
        return "unknown exit status"
    if exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def log_sink_in_context(logger: logging.Logger | logging.LoggerAdapter[Any], prefix: str = "") -> LogSink:
    """A log sink that emits each line, after ``prefix``, through ``logger`` in a copy of the
    caller's context: the manager thread calls it, and a task run's logger must see that task
    run's context (its settings, its API), not the manager thread's empty one."""
    context = copy_context()

    def log_sink(level: int, message: str) -> None:
        context.run(logger.log, level, prefix + message)

    return log_sink


class PoolFuture(concurrent.futures.Future[Any]):
    """The future of one pool job; ``cancel()`` stops the job even once it runs.

    A pool job counts as running from submission (its worker may pick it up at any
    moment), and the standard ``Future.cancel()`` refuses running futures. Here a cancelled
    job ends at once with ``JobCancelledError``: a queued job is dropped, a running one's
    worker is killed and replaced by the manager thread.
    """

    def __init__(self, label: str, stop_job: Callable[[], None]) -> None:
        super().__init__()
        self.label = label
        self._stop_job = stop_job
        self.set_running_or_notify_cancel()

    def cancel(self) -> bool:
        """Cancel the job; False only if it already finished (succeeded or failed)."""
        if not _settle(self, error=JobCancelledError(f"{self.label} was cancelled")):
            return self.cancelled()
        self._stop_job()
        return True

    def cancelled(self) -> bool:
        """True if the job was cancelled (by ``cancel()`` or pool shutdown) instead of finishing."""
        return self.done() and isinstance(self.exception(timeout=0), JobCancelledError)


@dataclass(eq=False)
class _Job:
    job_id: int
    payload: bytes
    label: str
    timeout: float | None
    log_sink: LogSink | None
    log_prints: bool
    future: PoolFuture
    share: Shared | None = None  # a value the call refers to, sent to each worker once
    deadline: float | None = None
    resent: bool = False  # a worker died starting with it, and it was queued again


@dataclass(eq=False)  # one worker is one process: compared by identity, as the manager looks them up
class _Worker:
    process: Any  # multiprocessing.context.Process of the chosen start method
    conn: Connection
    pid: int
    # Sent and not answered, in the order the worker runs them: the first runs (or is
    # about to), the next waits in the pipe.
    jobs: collections.deque[_Job] = field(default_factory=collections.deque)
    jobs_done: int = 0
    shares: collections.OrderedDict[int, None] = field(default_factory=collections.OrderedDict)  # keys kept
    ready: bool = False  # said WorkerReady: a job it dies in has run
    exit_fd: int | None = None  # a pidfd, readable once the worker has exited (Linux)

    @property
    def job(self) -> _Job | None:
        """The job the worker runs (or starts next), if any."""
        return self.jobs[0] if self.jobs else None

    @property
    def exited(self) -> Any:
        """What becomes readable when the worker exits."""
        return self.process.sentinel if self.exit_fd is None else self.exit_fd

    def wait_exit(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` seconds for the worker to exit, then collect its exit code."""
        if self.exit_fd is not None and not multiprocessing.connection.wait([self.exit_fd], timeout):
            return
        self.process.join(timeout)

    def kill(self) -> None:
        """SIGKILL the worker unless it has exited."""
        with contextlib.suppress(OSError, ValueError):
            if self.exit_fd is not None:
                signal.pidfd_send_signal(self.exit_fd, signal.SIGKILL)
            elif self.process.is_alive():
                self.process.kill()

    def close(self) -> None:
        self.conn.close()
        self.process.close()
        if self.exit_fd is not None:
            os.close(self.exit_fd)


class _Wakeup:
    """A self-pipe that interrupts the manager's wait; waking after ``close()`` does nothing."""

    def __init__(self) -> None:
        self.reader, self._writer = os.pipe()
        os.set_blocking(self.reader, False)
        os.set_blocking(self._writer, False)
        self._lock = threading.Lock()
        self._closed = False

    def wake(self) -> None:
        with self._lock:
            if not self._closed:
                with contextlib.suppress(BlockingIOError):  # full: the manager is awake anyway
                    os.write(self._writer, b"x")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.reader, 4096):
                pass

    def close(self) -> None:
        # Under the lock, so no caller writes to a descriptor number reused by then.
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.reader)
                os.close(self._writer)


def start_fork_server(start_method: str | None) -> None:
    """Start this process's fork server now, if workers of ``start_method`` come from one.

    A runner is usually made at a script's top level, before its flow run starts. While the
    process has a single thread (a script importing its modules), the fork server is a copy
    of it (``fork_the_fork_server``), with Prefect already imported; otherwise it is the
    interpreter ``multiprocessing`` starts, which imports Prefect (``FORK_SERVER_PRELOAD``)
    while the flow run starts. Only in a program's main process: a worker importing the
    script makes the runner too, but runs no flow (multiprocessing names a process it starts
    before importing the script in it).

    The fork server is started with SIGINT ignored (the disposition it inherits; the
    caller's handler is back as soon as it is spawned): it ignores SIGINT itself only once
    its imports are done, and a Ctrl-C to the terminal's process group while it imports
    would kill it, and with it every worker the flow run is about to start.
    """
    method = multiprocessing.get_context(start_method or DEFAULT_START_METHOD).get_start_method()
    main = multiprocessing.current_process().name == "MainProcess"
    if method != "forkserver" or not main or multiprocessing.parent_process() is not None:
        return
    if fork_the_fork_server(FORK_SERVER_PRELOAD):
        return
    preload_in_fork_server(FORK_SERVER_PRELOAD)
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        multiprocessing.forkserver.ensure_running()  # a handler this thread cannot set or restore
        return
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, handler)


PoolSource = Callable[[int, dict[str, Any]], "WorkerPool | None"]

pool_sources: list[PoolSource] = []
"""Asked in turn, before a runner starts a pool of its own, for a started pool of ``processes``
workers made with ``options`` (``WorkerPool``'s other arguments), which the runner then owns;
``poolflow.warm_start`` offers the pool a command starts while its API server starts."""


class WorkerPool:
    """Long-lived worker processes running pickled calls, one job per worker at a time.

    A busy worker also holds its next job, unless that call is large or no more jobs than
    workers are queued (the last ones then go to whichever worker is free first). A held
    job counts as started: a worker killed with it queues it again, it is not cancelled by
    a shutdown that lets running jobs finish, and a cancelled one's worker is killed as
    soon as it starts it.

    Arguments mirror ``multiprocessing.Pool``: ``processes`` (default: CPU count),
    ``maxtasksperchild``, ``initializer``/``initargs`` and the ``start_method`` context
    (default ``DEFAULT_START_METHOD``; ``fork`` is refused, see the module docstring).
    """

    def __init__(
        self,
        processes: int | None = None,
        *,
        maxtasksperchild: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Sequence[Any] = (),
        start_method: str | None = None,
    ) -> None:
        if processes is not None and processes < 1:
            raise ValueError("processes must be at least 1")
        if maxtasksperchild is not None and maxtasksperchild < 1:
            raise ValueError("maxtasksperchild must be at least 1")
        self.context: Any = multiprocessing.get_context(start_method or DEFAULT_START_METHOD)
        if self.context.get_start_method() == "fork":
            raise ValueError(
                "WorkerPool cannot fork its workers: it starts replacements (after deaths, timeouts, "
                "cancellations and maxtasksperchild) from its manager thread, and forking a process "
                "that runs threads can deadlock the child; use 'forkserver' or 'spawn'"
            )
        self.processes = processes or os.cpu_count() or 1
        self.maxtasksperchild = maxtasksperchild
        self.initializer = initializer
        self.initargs = tuple(initargs)
        self._lock = threading.Lock()
        # Shared with callers, guarded by ``_lock``.
        self._pending: collections.deque[_Job] = collections.deque()
        self._cancelled: set[int] = set()
        self._closing = False
        self._kill_running = False
        self._shutdown_cause: BaseException | None = None
        # Owned by the manager thread once it runs.
        self._workers: list[_Worker] = []
        self._job_ids = itertools.count(1)
        self._manager: threading.Thread | None = None
        self._wakeup = _Wakeup()
        self.worker_deaths = 0
        self.timeouts = 0

    # ----------------------------------------------------------------- public API

    def start(self) -> None:
        """Start the manager thread, which starts the workers and owns them from then on.

        Returns at once: a fork server's first start imports Prefect, which takes a second
        or two that the caller (a flow run starting) spends talking to its API meanwhile.
        Jobs submitted before the workers are up wait in the queue.
        """
        if self.context.get_start_method() == "forkserver":
            preload_in_fork_server(FORK_SERVER_PRELOAD)
        self._manager = threading.Thread(target=self._manage, name="poolflow-manager", daemon=True)
        self._manager.start()

    def submit(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        label: str = "",
        timeout: float | None = None,
        log_sink: LogSink | None = None,
        log_prints: bool = False,
    ) -> PoolFuture:
        """Queue ``fn(*args, **kwargs)``; the future gives its result or raises its error.

        Pickling happens here, in the caller's thread, so an unpicklable argument fails
        this one call at once. A ``Shared`` among ``args`` is sent first to the worker that
        runs the call, unless it has it.
        """
        share = next((arg for arg in args if isinstance(arg, Shared)), None)
        try:
            payload = cloudpickle.dumps((fn, tuple(args), kwargs or {}), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(f"arguments of {label or fn!r} cannot be pickled: {exc}") from exc
        job_id = next(self._job_ids)
        label = label or getattr(fn, "__name__", "job")
        future = PoolFuture(label, functools.partial(self._request_cancel, job_id))
        job = _Job(job_id, payload, label, timeout, log_sink, log_prints, future, share)
        with self._lock:
            # Checked under the lock: the manager's last sweep of pending jobs happens after
            # ``_closing`` is set, so a job appended here is always settled.
            # Shut down by an interrupt: a job submitted late stops as interrupted, like the
            # queued ones the shutdown cancelled, not as a failure.
            if self._closing:
                message = "the pool is shut down (flow run cancelled or ending)"
                raise self._shutdown_cause or JobCancelledError(message)
            self._pending.append(job)
        self._wakeup.wake()
        return future

    def shutdown(
        self, *, kill: bool = False, timeout: float = 10.0, because: BaseException | None = None
    ) -> None:
        """Stop the pool and its workers; safe from any thread.

        Queued jobs not yet sent to a worker are cancelled. With ``kill`` running jobs are
        cancelled and their workers killed; otherwise they may finish for up to ``timeout``
        seconds, then they are killed too. The manager thread does all of it; this call
        sets the flags, wakes it and waits for it. Calling again only waits (``kill=True``
        still kills running jobs). With ``because`` (the caller's interrupt, e.g. Ctrl-C)
        the jobs it cancels raise that instead of ``JobCancelledError``, so the threads
        waiting on them stop as interrupted rather than failed.
        """
        with self._lock:
            self._closing = True
            self._kill_running = self._kill_running or kill
            self._shutdown_cause = self._shutdown_cause or because
        self._wakeup.wake()
        manager = self._manager
        if manager is None:  # never started: no workers, no thread
            self._wakeup.close()
            return
        if manager is threading.current_thread():
            return  # from a log sink or done callback: the manager stops after this round
        manager.join(timeout)
        if manager.is_alive():  # running jobs did not finish in time
            with self._lock:
                self._kill_running = True
            self._wakeup.wake()
            manager.join(timeout)
        if manager.is_alive():
            logger.warning("the pool's manager thread did not stop within %g s", 2 * timeout)

    def worker_pids(self) -> list[int]:
        """PIDs of the live workers (for tests and diagnostics); empty until they are started."""
        return [worker.pid for worker in list(self._workers)]

    def _request_cancel(self, job_id: int) -> None:
        """Ask the manager to drop or kill job ``job_id``, whose future is already cancelled."""
        with self._lock:
            self._cancelled.add(job_id)
        self._wakeup.wake()

    # ----------------------------------------------------------------- manager thread

    def _spawn_worker(self) -> _Worker:
        """Start a worker. A start the fork server died under (a SIGTERM to the terminal's
        process group ends it, maybe while it forks) is tried again after a pause: by then
        ``multiprocessing`` sees the fork server gone and starts a new one."""
        for pause in _RESTART_PAUSES:
            try:
                return self._start_worker()
            except (EOFError, OSError):
                time.sleep(pause)
        return self._start_worker()

    def _start_worker(self) -> _Worker:
        parent_conn, child_conn = self.context.Pipe(duplex=True)
        process = self.context.Process(
            target=worker_main,
            args=(child_conn, self.initializer, self.initargs, self.maxtasksperchild, os.getpid()),
            name="poolflow-worker",
            daemon=True,
        )
        try:
            process.start()
        except BaseException:
            parent_conn.close()
            raise
        finally:
            child_conn.close()
        return _Worker(process, parent_conn, process.pid, exit_fd=_pidfd(process.pid))

    def _manage(self) -> None:
        try:
            for _ in range(self.processes):
                self._workers.append(self._spawn_worker())
            while self._take_requests() or any(w.jobs for w in self._workers):
                self._dispatch()
                self._wait_for_events()
                self._expire_deadlines()
        except BaseException as exc:  # never leave callers waiting on futures forever
            self._fail_everything(RuntimeError(f"poolflow pool manager failed: {exc!r}"))
            raise
        finally:
            self._stop_workers()
            self._wakeup.close()

    def _take_requests(self) -> bool:
        """Act on the cancellations and shutdown callers asked for; False once shutting down."""
        with self._lock:
            cancelled, self._cancelled = self._cancelled, set()
            closing, kill, cause = self._closing, self._kill_running, self._shutdown_cause
            if closing:
                dropped, self._pending = list(self._pending), collections.deque()
            elif cancelled:
                dropped = [j for j in self._pending if j.job_id in cancelled]
                self._pending = collections.deque(j for j in self._pending if j.job_id not in cancelled)
            else:
                dropped = []
        for job in dropped:  # the caller-cancelled ones are settled already
            _not_started(job, cause)
        for worker in list(self._workers):
            # A job done before its worker answered was cancelled: also one cancelled while
            # it waited in the pipe, which the worker runs once it answered the one before.
            running = worker.job
            if running is not None and (kill or running.future.done()):
                self._retire(worker)
                message = f"{running.label} was cancelled; its worker was stopped"
                _settle(running.future, error=cause or JobCancelledError(message))
        return not closing

    def _dispatch(self) -> None:
        """Hand queued jobs to free workers first, then a next one to each busy worker."""
        for busy in range(_HANDED):
            for worker in self._workers:
                if len(worker.jobs) == busy and not self._hand(worker):
                    return

    def _hand(self, worker: _Worker) -> bool:
        """Send ``worker`` the next queued job to run (or, if busy, to run next); False when
        there is none to send it."""
        if self._worn_out(worker):
            return True
        job = self._next_job(worker)
        if job is None:
            return False
        try:
            if job.share is not None:
                self._share(worker, job.share)
            send(worker.conn, RunJob(job.job_id, job.payload, job.log_prints, job.timeout is not None))
        except OSError:
            # The worker is already gone: the job goes back to the front of the queue
            # and the exit sentinel gets the worker replaced.
            with self._lock:
                self._pending.appendleft(job)
            return True
        worker.jobs.append(job)
        return True

    def _next_job(self, worker: _Worker) -> _Job | None:
        """The oldest queued job for ``worker``, skipping any cancelled since this round began;
        none once shutting down (a worker may ask between the shutdown request and the
        manager's next sweep of the queue, which cancels what is left in it).

        For a busy worker, only while more jobs than workers are queued (the last ones go to
        whichever worker is free first) and only ``_AHEAD_BYTES`` at most to send.
        """
        with self._lock:
            while self._pending and not self._closing:
                job = self._pending[0]
                too_late = len(self._pending) <= self.processes or _bytes_to_send(worker, job) > _AHEAD_BYTES
                if worker.jobs and too_late:
                    return None
                self._pending.popleft()
                if not job.future.done():
                    return job
        return None

    @staticmethod
    def _share(worker: _Worker, share: Shared) -> None:
        """Send ``worker`` the value of ``share`` unless it has it; past ``_SHARES_KEPT`` values,
        it drops the one least recently sent (the jobs already sent to it run first)."""
        if share.key in worker.shares:
            worker.shares.move_to_end(share.key)
            return
        drop = worker.shares.popitem(last=False)[0] if len(worker.shares) >= _SHARES_KEPT else None
        send(worker.conn, Share(share.key, share.blob, drop))
        worker.shares[share.key] = None

    def _worn_out(self, worker: _Worker) -> bool:
        """A worker handed ``maxtasksperchild`` jobs exits after them and gets no more."""
        limit = self.maxtasksperchild
        return limit is not None and worker.jobs_done + len(worker.jobs) >= limit

    def _wait_for_events(self) -> None:
        deadlines = [w.job.deadline for w in self._workers if w.job and w.job.deadline]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        waitables: list[Any] = [self._wakeup.reader]
        for worker in self._workers:
            waitables += [worker.conn, worker.exited]
        ready = set(multiprocessing.connection.wait(waitables, timeout))
        if self._wakeup.reader in ready:
            self._wakeup.drain()
        # Read every pipe before looking at exits: a worker that sent its result and then
        # exited (maxtasksperchild) must not be taken for a dead one.
        for worker in list(self._workers):
            if worker.conn in ready and not self._read_messages(worker):
                self._reap(worker)
        for worker in list(self._workers):
            if worker in self._workers and worker.exited in ready:
                self._reap(worker)

    def _read_messages(self, worker: _Worker) -> bool:
        """Handle every message waiting on ``worker``'s pipe; False once the pipe is closed."""
        try:
            while worker.conn.poll():
                self._handle_message(worker, receive_report(worker.conn))
        except (EOFError, OSError):
            return False
        return True

    def _handle_message(self, worker: _Worker, message: FromWorker) -> None:
        if isinstance(message, WorkerReady):
            worker.ready = True
            return
        job = worker.job
        if job is None or message.job_id != job.job_id:
            return  # a log line from a thread that the worker's previous job left running
        match message:
            case JobStarted():
                if job.timeout is not None:
                    job.deadline = time.monotonic() + job.timeout
            case JobLog(level=level, message=text):
                if job.log_sink is not None:
                    job.log_sink(level, text)
            case JobResult() | JobProblem():
                worker.jobs.popleft()
                worker.jobs_done += 1
                # Workers get their next jobs before this one's future is settled: settling
                # runs the caller's callbacks (a chunk records the item), which no worker
                # need wait for.
                self._dispatch()
                _settle_outcome(job, message)

    def _reap(self, worker: _Worker) -> None:
        """Handle a worker that exited: fail its job, if any, and start a replacement."""
        self._read_messages(worker)  # a result sent just before exiting still counts
        worker.wait_exit(1)
        job = worker.job
        exitcode = worker.process.exitcode
        self._retire(worker)
        if job is None:
            return
        self.worker_deaths += 1
        reason = describe_exit(exitcode)
        if worker.ready:
            message = f"worker {worker.pid} died with {reason} while running {job.label}"
        elif not job.resent:
            # It never ran the job (e.g. Ctrl-C to the group while it imported the script):
            # the job goes first to the replacement, once; a worker that cannot start fails it.
            job.resent = True
            with self._lock:
                if not self._closing:
                    self._pending.appendleft(job)
                    return
                cause = self._shutdown_cause
            _not_started(job, cause)
            return
        else:
            message = f"worker {worker.pid} died with {reason} while starting, before running {job.label}"
        _settle(job.future, error=WorkerDiedError(message))

    def _expire_deadlines(self) -> None:
        now = time.monotonic()
        for worker in list(self._workers):
            job = worker.job
            if job and job.deadline is not None and now >= job.deadline:
                self._retire(worker)
                self.timeouts += 1
                message = (
                    f"{job.label} exceeded its timeout of {job.timeout:g} s; worker {worker.pid} was killed"
                )
                _settle(job.future, error=JobTimeoutError(message))

    def _retire(self, worker: _Worker) -> None:
        """Kill ``worker``, queue the jobs it had not started again, and put a fresh worker in
        its place (none while shutting down). The caller settles the job it was running."""
        worker.kill()
        worker.wait_exit(5)
        waiting = list(worker.jobs)[1:]
        index = self._workers.index(worker)
        with self._lock:
            closing, cause = self._closing, self._shutdown_cause
            if not closing:
                self._pending.extendleft(reversed(waiting))
        if closing:
            del self._workers[index]
            for job in waiting:
                _not_started(job, cause)
        else:
            self._workers[index] = self._spawn_worker()
        worker.close()

    def _fail_everything(self, error: BaseException) -> None:
        """The manager itself failed: no job may wait for it any more."""
        with self._lock:
            self._closing = True
            pending, self._pending = list(self._pending), collections.deque()
        for job in pending:
            _settle(job.future, error=error)
        for worker in self._workers:
            worker.kill()
            for job in worker.jobs:
                _settle(job.future, error=error)

    def _stop_workers(self) -> None:
        """Tell the workers to exit, give them ``_EXIT_GRACE`` seconds, kill the rest."""
        for worker in self._workers:
            with contextlib.suppress(OSError):
                send(worker.conn, Stop())
        deadline = time.monotonic() + _EXIT_GRACE
        for worker in self._workers:
            worker.wait_exit(max(0.0, deadline - time.monotonic()))
            worker.kill()
            worker.wait_exit(None)
            worker.close()
        self._workers = []


def _settle(
    future: concurrent.futures.Future[Any], *, result: Any = None, error: BaseException | None = None
) -> bool:
    """Complete ``future`` unless it is already done (a race with cancel or shutdown); True if it did."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        return False
    return True


def _bytes_to_send(worker: _Worker, job: _Job) -> int:
    """What handing ``job`` to ``worker`` writes to its pipe: the call, and its shared value
    if the worker lacks it."""
    share = job.share
    return len(job.payload) + (len(share.blob) if share is not None and share.key not in worker.shares else 0)


def _not_started(job: _Job, cause: BaseException | None) -> None:
    """Fail ``job``, which the shutting-down pool will not start, with the shutdown's cause
    (the caller's interrupt) or ``JobCancelledError``."""
    _settle(job.future, error=cause or JobCancelledError(f"the pool shut down before {job.label} started"))


def _settle_outcome(job: _Job, outcome: JobResult | JobProblem) -> None:
    """Complete ``job``'s future with the result or the error its worker sent."""
    try:
        value = pickle.loads(outcome.value if isinstance(outcome, JobResult) else outcome.error)
    except Exception as exc:
        _settle(job.future, error=TypeError(f"result of {job.label} cannot be unpickled: {exc}"))
        return
    if isinstance(outcome, JobResult):
        _settle(job.future, result=value)
    else:
        error, text = value
        error.__cause__ = RemoteTraceback(f'\n"""\n{text}"""')
        _settle(job.future, error=error)
