"""The messages a pool and one of its workers exchange over their private pipe.

Parent to worker: ``RunJob`` (one call to run) or ``Stop``. Worker to parent, for the job
it runs: ``JobStarted`` once the call is unpickled if the job has a timeout (which counts
from there; other jobs skip the message, one less wake-up of the parent per job), any
number of ``JobLog`` lines, then exactly one ``JobResult`` or ``JobProblem``.

Each message is a small frozen dataclass, pickled whole with ``send``; the receiver
dispatches on its type. The call, its result and its error travel as bytes that the job's
two ends pickle and unpickle themselves, so the pipe never pickles them a second time and
a payload that cannot be unpickled fails its own job, not the pipe.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TypeAlias


@dataclass(frozen=True)
class RunJob:
    """Run the cloudpickled ``(fn, args, kwargs)`` in ``payload`` as job ``job_id``;
    ``timed``: announce the start with ``JobStarted``."""

    job_id: int
    payload: bytes
    log_prints: bool
    timed: bool = True


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


ToWorker: TypeAlias = RunJob | Stop
FromWorker: TypeAlias = WorkerReady | JobStarted | JobLog | JobResult | JobProblem


def send(conn: Connection, message: ToWorker | FromWorker) -> None:
    """Write ``message`` to ``conn`` as one pickled frame."""
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def receive_order(conn: Connection) -> ToWorker:
    """What the parent tells a worker (blocks; ``EOFError`` once the parent closed the pipe)."""
    message = pickle.loads(conn.recv_bytes())
    if isinstance(message, RunJob | Stop):
        return message
    raise TypeError(f"a worker cannot handle {message!r}")


def receive_report(conn: Connection) -> FromWorker:
    """What a worker tells the parent (blocks; ``EOFError`` once the worker's end is closed)."""
    message = pickle.loads(conn.recv_bytes())
    if isinstance(message, WorkerReady | JobStarted | JobLog | JobResult | JobProblem):
        return message
    raise TypeError(f"a worker sent {message!r}, which is no report")
