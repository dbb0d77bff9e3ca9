"""A process pool that knows which job each worker runs.

``multiprocessing.Pool`` cannot tell which task a dead worker was running, so a killed
worker leaves its task's result pending forever. This pool gives every worker its own pipe
and at most one job at a time; a manager thread watches the pipes, the workers' exit
sentinels and the jobs' deadlines, so it can

- fail exactly the job of a worker that died (SIGKILL, segfault, ``os._exit``, OOM killer)
  and start a replacement worker;
- enforce a hard timeout by killing the worker of a job that runs too long;
- cancel a running job by killing its worker;
- forward the log records and (optionally) prints of a running job to the parent.

Layout, after CPython's ``concurrent.futures.process``: the worker loop (``_worker_main``)
runs in each child; the manager thread (``WorkerPool._manage``) owns all worker state;
callers only touch ``concurrent.futures.Future`` objects and the pending-job queue.
"""

from __future__ import annotations

import builtins
import collections
import concurrent.futures
import contextlib
import ctypes
import io
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

LogSink = Callable[[int, str], None]
"""Receives (level, message) for log records a job emits in its worker."""

_PR_SET_PDEATHSIG = 1
_STOP = b""


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


# --------------------------------------------------------------------------- worker side


class _Forwarder:
    """Sends a running job's log records and prints to the parent over the worker's pipe."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.job_id: int | None = None
        self.lock = threading.Lock()  # user code may log from its own threads

    def send_started(self) -> None:
        with self.lock:
            self.conn.send_bytes(pickle.dumps(("started", self.job_id)))

    def send(self, level: int, message: str) -> None:
        job_id = self.job_id
        if job_id is None:
            return
        with self.lock:
            self.conn.send_bytes(pickle.dumps(("log", job_id, level, message)))


class _ForwardingHandler(logging.Handler):
    def __init__(self, forwarder: _Forwarder) -> None:
        super().__init__()
        self.forwarder = forwarder
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.forwarder.send(record.levelno, self.format(record))
        except Exception:
            self.handleError(record)


def _route_logging_to(handler: logging.Handler) -> None:
    """Make ``handler`` the only destination of log records in this worker.

    Prefect, once imported, attaches console and API handlers; in a worker those would
    print twice and talk to the API from every process, so the parent does both instead.
    """
    root = logging.getLogger()
    if root.handlers != [handler]:
        root.handlers = [handler]
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if logger.handlers:
            logger.handlers = []


def _forwarding_print(forwarder: _Forwarder, original: Callable[..., None]) -> Callable[..., None]:
    def print_to_log(*args: Any, **kwargs: Any) -> None:
        if kwargs.get("file") not in (None, sys.stdout, sys.stderr):
            original(*args, **kwargs)
            return
        buffer = io.StringIO()
        original(*args, **{**kwargs, "file": buffer, "end": ""})
        forwarder.send(logging.INFO, buffer.getvalue())

    return print_to_log


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when its parent dies, so no worker is orphaned."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _run_job(
    payload: bytes, forwarder: _Forwarder, handler: logging.Handler, log_prints: bool
) -> tuple[bool, bytes]:
    """Run one pickled ``(fn, args, kwargs)``; return (succeeded, pickled result or error)."""
    original_print = builtins.print
    if log_prints:
        builtins.print = _forwarding_print(forwarder, original_print)
    try:
        fn, args, kwargs = pickle.loads(payload)
        # Unpickling may have imported modules (Prefect) that install their own handlers.
        _route_logging_to(handler)
        # Imports are done: a job's timeout counts from here.
        forwarder.send_started()
        result = fn(*args, **kwargs)
    except BaseException as exc:  # the job's own failure, reported to its future
        return False, _pickle_exception(exc)
    finally:
        builtins.print = original_print
    try:
        return True, cloudpickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        error = TypeError(f"result of type {type(result).__name__} cannot be pickled: {exc}")
        return False, _pickle_exception(error)


def _pickle_exception(exc: BaseException) -> bytes:
    """Pickle ``exc`` with its traceback text (pickling drops ``__cause__`` and tracebacks)."""
    text = "".join(traceback.format_exception(exc))
    exc.__traceback__ = None
    try:
        return bytes(cloudpickle.dumps((exc, text)))
    except Exception:
        return bytes(cloudpickle.dumps((RuntimeError(f"{type(exc).__name__}: {exc}"), text)))


def _worker_main(
    conn: Connection,
    initializer: Callable[..., object] | None,
    initargs: Sequence[Any],
    maxtasks: int | None,
) -> None:
    """The worker loop: receive a job, run it, send the result, until told to stop."""
    _die_with_parent()
    # Ctrl-C reaches the whole process group; the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    forwarder = _Forwarder(conn)
    handler = _ForwardingHandler(forwarder)
    _route_logging_to(handler)
    if initializer is not None:
        initializer(*initargs)
    completed = 0
    while maxtasks is None or completed < maxtasks:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if message == _STOP:
            return
        job_id, log_prints, payload = pickle.loads(message)
        forwarder.job_id = job_id
        ok, data = _run_job(payload, forwarder, handler, log_prints)
        forwarder.job_id = None
        with forwarder.lock:
            conn.send_bytes(pickle.dumps(("done", job_id, ok, data)))
        completed += 1


# --------------------------------------------------------------------------- parent side


@dataclass
class _Job:
    job_id: int
    payload: bytes
    label: str
    timeout: float | None
    log_sink: LogSink | None
    log_prints: bool
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    deadline: float | None = None


@dataclass
class _Worker:
    process: Any  # multiprocessing.context.Process of the chosen start method
    conn: Connection
    job: _Job | None = None
    jobs_done: int = 0


class WorkerPool:
    """Long-lived worker processes running pickled calls, one job per worker at a time.

    Arguments mirror ``multiprocessing.Pool``: ``processes`` (default: CPU count),
    ``maxtasksperchild``, ``initializer``/``initargs`` and the ``start_method`` context.
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
        self.processes = processes or os.cpu_count() or 1
        self.maxtasksperchild = maxtasksperchild
        self.initializer = initializer
        self.initargs = tuple(initargs)
        self.context: Any = multiprocessing.get_context(start_method)
        self._pending: collections.deque[_Job] = collections.deque()
        self._cancelled: set[int] = set()
        self._lock = threading.Lock()
        self._job_ids = itertools.count(1)
        self._workers: list[_Worker] = []
        self._closing = False
        self._manager: threading.Thread | None = None
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_r, False)
        os.set_blocking(self._wakeup_w, False)
        self.worker_deaths = 0
        self.timeouts = 0

    # ----------------------------------------------------------------- public API

    def start(self) -> None:
        """Start the workers and the manager thread."""
        self._workers = [self._spawn_worker() for _ in range(self.processes)]
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
    ) -> concurrent.futures.Future[Any]:
        """Queue ``fn(*args, **kwargs)``; the future gives its result or raises its error.

        Pickling happens here, in the caller's thread, so an unpicklable argument fails
        this one call at once.
        """
        try:
            payload = cloudpickle.dumps((fn, tuple(args), kwargs or {}), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(f"arguments of {label or fn!r} cannot be pickled: {exc}") from exc
        job = _Job(
            next(self._job_ids),
            payload,
            label or getattr(fn, "__name__", "job"),
            timeout,
            log_sink,
            log_prints,
        )
        job.future.set_running_or_notify_cancel()
        job.future.poolflow_job_id = job.job_id  # type: ignore[attr-defined]
        with self._lock:
            # Checked under the lock: the manager's last sweep of pending jobs happens after
            # ``_closing`` is set, so a job appended here is always settled.
            if self._closing:
                raise JobCancelledError("the pool is shut down (flow run cancelled or ending)")
            self._pending.append(job)
        self._wake()
        return job.future

    def cancel(self, future: concurrent.futures.Future[Any]) -> None:
        """Stop the job behind ``future``: drop it if queued, kill its worker if running."""
        job_id = getattr(future, "poolflow_job_id", None)
        if job_id is None or future.done():
            return
        with self._lock:
            self._cancelled.add(job_id)
        self._wake()

    def shutdown(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the pool. With ``kill`` running jobs are killed; otherwise they finish first.

        Queued jobs that never started are cancelled either way.
        """
        with self._lock:
            if self._closing:
                return  # already shut down (or shutting down in another thread)
            self._closing = True
            if kill:
                self._cancelled.update(w.job.job_id for w in self._workers if w.job)
        self._wake()
        if self._manager is not None:
            self._manager.join(timeout)
            if self._manager.is_alive():  # a stuck job: take the workers down hard
                for worker in self._workers:
                    self._kill(worker)
                self._manager.join(timeout)
        for worker in self._workers:
            worker.process.join(timeout)
            if worker.process.is_alive():
                self._kill(worker)
                worker.process.join()
            worker.conn.close()
            worker.process.close()
        self._workers = []
        for fd in (self._wakeup_r, self._wakeup_w):
            os.close(fd)

    def worker_pids(self) -> list[int]:
        """PIDs of the live workers (for tests and diagnostics)."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    # ----------------------------------------------------------------- manager thread

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # already awake (pipe full), or shut down
            os.write(self._wakeup_w, b"x")

    def _spawn_worker(self) -> _Worker:
        parent_conn, child_conn = self.context.Pipe(duplex=True)
        process = self.context.Process(
            target=_worker_main,
            args=(child_conn, self.initializer, self.initargs, self.maxtasksperchild),
            name="poolflow-worker",
            daemon=True,
        )
        process.start()
        child_conn.close()
        return _Worker(process, parent_conn)

    def _kill(self, worker: _Worker) -> None:
        if worker.process.is_alive():
            with contextlib.suppress(OSError, ValueError):
                worker.process.kill()

    def _manage(self) -> None:
        try:
            while True:
                self._cancel_requested()
                if self._closing:
                    self._fail_pending(JobCancelledError("the pool shut down before this job started"))
                else:
                    self._dispatch()
                if self._closing and not any(w.job for w in self._workers):
                    break
                self._wait_for_events()
                self._expire_deadlines()
        except BaseException as exc:  # never leave callers waiting on futures forever
            self._fail_everything(RuntimeError(f"poolflow pool manager failed: {exc!r}"))
            raise
        finally:
            self._fail_pending(JobCancelledError("the pool shut down before this job started"))
            for worker in self._workers:
                with contextlib.suppress(OSError):
                    worker.conn.send_bytes(_STOP)

    def _fail_pending(self, error: BaseException) -> None:
        with self._lock:
            pending, self._pending = list(self._pending), collections.deque()
        for job in pending:
            _settle(job.future, error=error)

    def _fail_everything(self, error: BaseException) -> None:
        self._fail_pending(error)
        for worker in self._workers:
            if worker.job and not worker.job.future.done():
                self._kill(worker)
                _settle(worker.job.future, error=error)

    def _cancel_requested(self) -> None:
        with self._lock:
            cancelled, self._cancelled = self._cancelled, set()
            if not cancelled:
                return
            dropped = [j for j in self._pending if j.job_id in cancelled]
            self._pending = collections.deque(j for j in self._pending if j.job_id not in cancelled)
        for job in dropped:
            _settle(job.future, error=JobCancelledError(f"{job.label} was cancelled before it started"))
        for worker in list(self._workers):
            running = worker.job
            if running and running.job_id in cancelled:
                self._retire(worker)
                _settle(
                    running.future,
                    error=JobCancelledError(f"{running.label} was cancelled; its worker was stopped"),
                )

    def _dispatch(self) -> None:
        for worker in self._workers:
            if worker.job is not None or self._worn_out(worker):
                continue
            with self._lock:
                if not self._pending:
                    return
                job = self._pending.popleft()
            try:
                worker.conn.send_bytes(pickle.dumps((job.job_id, job.log_prints, job.payload)))
            except OSError:
                # The worker is already gone: the job goes back to the front of the queue
                # and the exit sentinel gets the worker replaced.
                with self._lock:
                    self._pending.appendleft(job)
                continue
            worker.job = job

    def _worn_out(self, worker: _Worker) -> bool:
        """A worker that did ``maxtasksperchild`` jobs is exiting and gets no more."""
        return self.maxtasksperchild is not None and worker.jobs_done >= self.maxtasksperchild

    def _wait_for_events(self) -> None:
        deadlines = [w.job.deadline for w in self._workers if w.job and w.job.deadline]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        waitables: list[Any] = [self._wakeup_r]
        for worker in self._workers:
            waitables += [worker.conn, worker.process.sentinel]
        ready = set(multiprocessing.connection.wait(waitables, timeout))
        if self._wakeup_r in ready:
            _drain(self._wakeup_r)
        # Read every pipe before looking at exits: a worker that sent its result and then
        # exited (maxtasksperchild) must not be taken for a dead one.
        for worker in list(self._workers):
            if worker.conn in ready and not self._read_messages(worker):
                self._reap(worker)
        for worker in list(self._workers):
            if worker in self._workers and worker.process.sentinel in ready:
                self._reap(worker)

    def _read_messages(self, worker: _Worker) -> bool:
        """Handle every message waiting on ``worker``'s pipe; False once the pipe is closed."""
        try:
            while worker.conn.poll():
                self._handle_message(worker, pickle.loads(worker.conn.recv_bytes()))
        except (EOFError, OSError):
            return False
        return True

    def _handle_message(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind, job_id = message[0], message[1]
        job = worker.job
        if job is None or job.job_id != job_id:
            return  # a late message from a job that was already cancelled
        if kind == "log":
            if job.log_sink is not None:
                job.log_sink(message[2], message[3])
            return
        if kind == "started":
            if job.timeout is not None:
                job.deadline = time.monotonic() + job.timeout
            return
        _, _, ok, data = message
        worker.job = None
        worker.jobs_done += 1
        try:
            value = pickle.loads(data)
        except Exception as exc:
            _settle(job.future, error=TypeError(f"result of {job.label} cannot be unpickled: {exc}"))
            return
        if ok:
            _settle(job.future, result=value)
        else:
            error, text = value
            error.__cause__ = RemoteTraceback(f'\n"""\n{text}"""')
            _settle(job.future, error=error)

    def _reap(self, worker: _Worker) -> None:
        """Handle a worker that exited: fail its job, if any, and start a replacement."""
        self._read_messages(worker)  # a result sent just before exiting still counts
        worker.process.join(1)
        job = worker.job
        exitcode = worker.process.exitcode
        pid = worker.process.pid
        self._retire(worker)
        if job is not None:
            self.worker_deaths += 1
            reason = describe_exit(exitcode)
            _settle(
                job.future,
                error=WorkerDiedError(f"worker {pid} died with {reason} while running {job.label}"),
            )

    def _expire_deadlines(self) -> None:
        now = time.monotonic()
        for worker in list(self._workers):
            job = worker.job
            if job and job.deadline is not None and now >= job.deadline:
                pid = worker.process.pid
                self._retire(worker)
                self.timeouts += 1
                message = f"{job.label} exceeded its timeout of {job.timeout:g} s; worker {pid} was killed"
                _settle(job.future, error=JobTimeoutError(message))

    def _retire(self, worker: _Worker) -> None:
        """Kill ``worker`` and put a fresh one in its place (none while shutting down)."""
        self._kill(worker)
        worker.process.join(5)
        worker.conn.close()
        index = self._workers.index(worker)
        if self._closing:
            del self._workers[index]
        else:
            self._workers[index] = self._spawn_worker()
        worker.process.close()


def _settle(
    future: concurrent.futures.Future[Any], *, result: Any = None, error: BaseException | None = None
) -> None:
    """Complete ``future`` once; later attempts (a race with cancel or shutdown) are ignored."""
    if future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
