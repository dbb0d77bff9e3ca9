"""The child side of ``WorkerPool``: the loop each worker process runs, and its messages.

A worker receives one ``RunJob`` at a time over its private pipe, runs it and answers with
the messages below. While a job runs, its log records (and, if asked, its prints) are
forwarded to the parent instead of being handled here. The process that owns the pool
decides when workers stop: a worker ignores Ctrl-C and SIGTERM sent to the whole process
group, and exits at once when its owner dies, so no worker outlives its pool.

Parent to worker: ``RunJob`` (one call to run), ``Share`` (a value later calls refer to) or
``Stop``. Worker to parent, for the job it
runs: ``JobStarted`` once the call is unpickled if the job has a timeout (which counts from
there; other jobs skip the message, one less wake-up of the parent per job), any number of
``JobLog`` lines, then exactly one ``JobResult`` or ``JobProblem``. Each message is a small
frozen dataclass, pickled whole with ``send``; the receiver dispatches on its type. The call,
its result and its error travel as bytes that the job's two ends pickle and unpickle
themselves, so the pipe never pickles them a second time and a payload that cannot be
unpickled fails its own job, not the pipe. A value many calls share (``Shared``: a chunk's
function and task run) travels once to each worker, which keeps it until the parent says to
drop it, and the calls carry only its key.
"""

from __future__ import annotations

import builtins
import ctypes
import io
import itertools
import logging
import os
import pickle
import select
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeAlias

import cloudpickle

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RunJob:
    """Run the cloudpickled ``(fn, args, kwargs)`` in ``payload`` as job ``job_id``;
    ``timed``: announce the start with ``JobStarted``."""

    job_id: int
    payload: bytes
    log_prints: bool
    timed: bool = True


@dataclass(frozen=True)
class Share:
    """Keep ``blob``, the pickled value that later calls refer to by ``key``; forget ``drop``'s."""

    key: int
    blob: bytes
    drop: int | None = None


@dataclass(frozen=True)
class Stop:
    """Exit the worker loop (the pool is shutting down)."""


@dataclass(frozen=True)
class WorkerReady:
    """The worker has started (main module imported, initializer run) and takes jobs; a
    worker that dies before saying so never ran the job it was sent."""


@dataclass(frozen=True)
class JobStarted:
    """The worker unpickled job ``job_id`` (a timed one) and is calling it."""

    job_id: int


@dataclass(frozen=True)
class JobLog:
    """A log record (or, with ``log_prints``, a print) job ``job_id`` emitted, already formatted."""

    job_id: int
    level: int
    message: str


@dataclass(frozen=True)
class JobResult:
    """Job ``job_id`` returned; ``value`` is its cloudpickled return value."""

    job_id: int
    value: bytes


@dataclass(frozen=True)
class JobProblem:
    """Job ``job_id`` raised; ``error`` is the cloudpickled ``(exception, traceback text)``."""

    job_id: int
    error: bytes


ToWorker: TypeAlias = RunJob | Share | Stop
FromWorker: TypeAlias = WorkerReady | JobStarted | JobLog | JobResult | JobProblem


def send(conn: Connection, message: ToWorker | FromWorker) -> None:
    """Write ``message`` to ``conn`` as one pickled frame."""
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def receive_order(conn: Connection) -> ToWorker:
    """What the parent tells a worker (blocks; ``EOFError`` once the parent closed the pipe)."""
    message = pickle.loads(conn.recv_bytes())
    if isinstance(message, RunJob | Share | Stop):
        return message
    raise TypeError(f"a worker cannot handle {message!r}")


def receive_report(conn: Connection) -> FromWorker:
    """What a worker tells the parent (blocks; ``EOFError`` once the worker's end is closed)."""
    message = pickle.loads(conn.recv_bytes())
    if isinstance(message, WorkerReady | JobStarted | JobLog | JobResult | JobProblem):
        return message
    raise TypeError(f"a worker sent {message!r}, which is no report")


_share_keys = itertools.count(1)
_kept: dict[int, bytes] = {}
"""This worker's shared values, pickled, by key: as the parent's ``Share`` messages left them."""
_unpickled: dict[int, Any] = {}


class Shared:
    """A value the calls of many jobs refer to, pickled once here and sent once to each worker.

    Inside a job's call it pickles as its key only; the pool sends a worker the value
    (``Share``) before the first job that refers to it, and the worker unpickles it once.
    """

    def __init__(self, value: object) -> None:
        self.key = next(_share_keys)
        self.blob: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def __reduce__(self) -> tuple[Callable[[int], Any], tuple[int]]:
        return (shared_value, (self.key,))


def shared_value(key: int) -> Any:
    """The value this worker was sent under ``key``, unpickled on its first use."""
    if key not in _unpickled:
        _unpickled[key] = pickle.loads(_kept[key])
    return _unpickled[key]


def keep(share: Share) -> None:
    """Keep the value of ``share`` and forget the one it replaces."""
    _kept[share.key] = share.blob
    if share.drop is not None:
        _kept.pop(share.drop, None)
        _unpickled.pop(share.drop, None)


class _Reporter:
    """Sends the current job's messages to the parent; user code may log from its own threads."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.job_id: int | None = None
        self.lock = threading.Lock()

    def report(self, message: FromWorker) -> None:
        with self.lock:
            send(self.conn, message)

    def log(self, level: int, message: str) -> None:
        job_id = self.job_id
        if job_id is not None:  # a thread the job left behind may log after it ended
            self.report(JobLog(job_id, level, message))


class _ForwardingHandler(logging.Handler):
    """Forwards every log record of this worker to the parent, formatted as its message only."""

    def __init__(self, reporter: _Reporter) -> None:
        super().__init__()
        self.reporter = reporter
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.reporter.log(record.levelno, self.format(record))
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


def _forwarding_print(reporter: _Reporter, original: Callable[..., None]) -> Callable[..., None]:
    """A ``print`` that sends console output to the parent as INFO records; files are untouched."""

    def print_to_log(*args: Any, **kwargs: Any) -> None:
        if kwargs.get("file") not in (None, sys.stdout, sys.stderr):
            original(*args, **kwargs)
            return
        buffer = io.StringIO()
        original(*args, **{**kwargs, "file": buffer, "end": ""})
        reporter.log(logging.INFO, buffer.getvalue())

    return print_to_log


def _die_with_owner(owner: int) -> None:
    """Exit at once when ``owner``, the process that started the pool, dies.

    Under ``spawn`` the owner is this worker's parent, and Linux SIGKILLs the worker when it
    goes. Under ``forkserver`` the parent is multiprocessing's fork server, which a SIGTERM to
    the terminal's process group ends (it ignores only SIGINT) while the owner still stops its
    pool; so there a thread waits on the owner's pidfd instead of on the parent's death.
    """
    if not sys.platform.startswith("linux"):
        return
    if os.getppid() != owner:
        try:
            pidfd = os.pidfd_open(owner)
        except ProcessLookupError:
            os._exit(1)  # the owner died while this worker started
        except OSError:
            pass  # a kernel without pidfds: die with the fork server, as below
        else:
            threading.Thread(
                target=_exit_when_ended, args=(pidfd,), name="poolflow-owner-watch", daemon=True
            ).start()
            return
    die_with_parent(signal.SIGKILL)


def die_with_parent(sig: signal.Signals) -> None:
    """Have Linux send this process ``sig`` when its parent (the thread that started it) ends."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)


def _exit_when_ended(pidfd: int) -> None:
    """Wait until the process behind ``pidfd`` has ended, then end this one."""
    select.select([pidfd], [], [])
    os._exit(1)


def _run_job(job: RunJob, reporter: _Reporter, handler: logging.Handler) -> JobResult | JobProblem:
    """Run one job; its outcome is the message that answers it."""
    original_print = builtins.print
    if job.log_prints:
        builtins.print = _forwarding_print(reporter, original_print)
    try:
        fn, args, kwargs = pickle.loads(job.payload)
        # Unpickling may have imported modules (Prefect) that install their own handlers.
        _route_logging_to(handler)
        if job.timed:  # imports are done: the job's timeout counts from here
            reporter.report(JobStarted(job.job_id))
        result = fn(*args, **kwargs)
    except BaseException as exc:  # the job's own failure, reported to its future
        return JobProblem(job.job_id, _pickle_exception(exc))
    finally:
        builtins.print = original_print
    try:
        return JobResult(job.job_id, cloudpickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception as exc:
        error = TypeError(f"result of type {type(result).__name__} cannot be pickled: {exc}")
        return JobProblem(job.job_id, _pickle_exception(error))


def _pickle_exception(exc: BaseException) -> bytes:
    """Pickle ``exc`` with its traceback text (pickling drops ``__cause__`` and tracebacks); an
    exception that cannot be rebuilt from its pickle travels as a ``RuntimeError`` naming it."""
    text = "".join(traceback.format_exception(exc))
    exc.__traceback__ = None
    try:
        data = bytes(cloudpickle.dumps((exc, text)))
        pickle.loads(data)  # some exceptions pickle but cannot be rebuilt (keyword-only arguments)
        return data
    except Exception:
        return bytes(cloudpickle.dumps((RuntimeError(f"{type(exc).__name__}: {exc}"), text)))


def worker_main(
    conn: Connection,
    initializer: Callable[..., object] | None,
    initargs: Sequence[Any],
    maxtasks: int | None,
    owner: int,
) -> None:
    """The worker loop: receive a job, run it, send its outcome, until told to stop."""
    _die_with_owner(owner)
    # A terminal's Ctrl-C or SIGTERM reaches the whole process group; the owner decides
    # what stops, and kills its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    reporter = _Reporter(conn)
    handler = _ForwardingHandler(reporter)
    _route_logging_to(handler)
    if initializer is not None:
        initializer(*initargs)
    reporter.report(WorkerReady())
    completed = 0
    while maxtasks is None or completed < maxtasks:
        try:
            message = receive_order(conn)
        except (EOFError, OSError):
            return  # the pool is gone
        match message:
            case RunJob():
                reporter.job_id = message.job_id
                outcome = _run_job(message, reporter, handler)
                reporter.job_id = None
                reporter.report(outcome)
                completed += 1
            case Share():
                keep(message)
            case Stop():
                return
