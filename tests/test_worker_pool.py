"""WorkerPool faults without Prefect: dead workers, hard timeouts, cancellation.

Each fault also has a baseline test showing what plain ``multiprocessing.Pool`` does.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator

import psutil
import pytest
from pool_jobs import die, pid_of_worker, spin, square

from runners.worker_pool import JobCancelledError, JobTimeoutError, WorkerDiedError, WorkerPool

START_METHODS = ["fork", "spawn", "forkserver"]


@pytest.fixture(params=START_METHODS)
def pool(request: pytest.FixtureRequest) -> WorkerPool:
    pool = WorkerPool(2, start_method=request.param)
    pool.start()
    yield pool
    pids = pool.worker_pids()
    pool.shutdown()
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


@pytest.mark.parametrize(
    ("how", "reason"), [("sigkill", "SIGKILL"), ("segfault", "SIGSEGV"), ("exit", "exit code 3")]
)
def test_dead_worker_fails_only_its_job(pool: WorkerPool, how: str, reason: str) -> None:
    futures = [pool.submit(square, (i,), label=f"square({i})") for i in range(10)]
    dead = pool.submit(die, (how,), label="parse(AA/wiki_03)")
    futures += [pool.submit(square, (i,)) for i in range(10, 20)]
    with pytest.raises(
        WorkerDiedError, match=rf"worker \d+ died with {reason} while running parse\(AA/wiki_03\)"
    ):
        dead.result(timeout=30)
    assert [f.result(timeout=30) for f in futures] == [i * i for i in range(20)]
    assert len(pool.worker_pids()) == 2
    assert pool.worker_deaths == 1


def test_timeout_kills_cpu_bound_job_and_others_go_on(pool: WorkerPool) -> None:
    stuck = pool.submit(spin, (-1,), label="spin", timeout=0.5)
    others = [pool.submit(square, (i,)) for i in range(6)]
    started = time.monotonic()
    with pytest.raises(JobTimeoutError, match=r"spin exceeded its timeout of 0\.5 s; worker \d+ was killed"):
        stuck.result(timeout=30)
    assert time.monotonic() - started < 10
    assert [f.result(timeout=30) for f in others] == [i * i for i in range(6)]
    assert pool.timeouts == 1


def test_timeout_counts_from_start_not_from_queueing(pool: WorkerPool) -> None:
    blockers = [pool.submit(spin, (0.6,)) for _ in range(2)]
    queued = pool.submit(spin, (0.3,), timeout=0.5)  # waits ~0.6 s for a worker, then runs 0.3 s
    assert queued.result(timeout=30) is None
    assert [b.result(timeout=30) for b in blockers] == [None, None]


def test_cancel_running_and_queued_jobs(pool: WorkerPool) -> None:
    running = [pool.submit(spin, (-1,)) for _ in range(2)]
    queued = pool.submit(square, (3,))
    time.sleep(0.3)
    for future in [*running, queued]:
        pool.cancel(future)
    for future in [*running, queued]:
        with pytest.raises(JobCancelledError):
            future.result(timeout=30)
    assert pool.submit(square, (4,)).result(timeout=30) == 16


def test_shutdown_with_kill_stops_everything_promptly() -> None:
    pool = WorkerPool(2, start_method="forkserver")
    pool.start()
    pids = pool.worker_pids()
    running = [pool.submit(spin, (-1,)) for _ in range(3)]
    time.sleep(0.3)
    started = time.monotonic()
    pool.shutdown(kill=True)
    assert time.monotonic() - started < 10
    for future in running:
        with pytest.raises(JobCancelledError):
            future.result(timeout=1)
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


def test_unpicklable_argument_fails_at_submit_only() -> None:
    import threading

    pool = WorkerPool(1, start_method="forkserver")
    pool.start()
    try:
        with pytest.raises(TypeError, match="cannot be pickled"):
            pool.submit(square, (threading.Lock(),), label="square(lock)")
        assert pool.submit(square, (5,)).result(timeout=30) == 25
    finally:
        pool.shutdown()


def test_maxtasksperchild_recycles_workers_without_losing_jobs() -> None:
    pool = WorkerPool(2, start_method="forkserver", maxtasksperchild=3)
    pool.start()
    try:
        pids = [pool.submit(pid_of_worker).result(timeout=30) for _ in range(9)]
        assert len(set(pids)) == 3
    finally:
        pool.shutdown()


# --------------------------------------------------------------------------- baselines


def test_baseline_plain_pool_waits_forever_for_a_killed_workers_task() -> None:
    with multiprocessing.get_context("forkserver").Pool(2) as plain:
        result = plain.apply_async(die, ("sigkill",))
        with pytest.raises(multiprocessing.TimeoutError):
            result.get(timeout=5)  # never arrives: Pool replaced the worker and forgot the task
        plain.terminate()


def test_baseline_plain_pool_imap_reads_the_whole_input_ahead() -> None:
    produced = 0

    def items() -> Iterator[int]:
        nonlocal produced
        for x in range(20_000):
            produced += 1
            yield x

    with multiprocessing.get_context("forkserver").Pool(2) as plain:
        results = plain.imap(abs, items())
        assert next(results) == 0
        deadline = time.monotonic() + 30
        while produced < 20_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        # The consumer took one result; the pool read the whole input regardless and holds
        # the other results: no parameter bounds how far it runs ahead.
        assert produced == 20_000
        plain.terminate()


def test_baseline_plain_pool_timeout_leaves_the_worker_spinning() -> None:
    with multiprocessing.get_context("forkserver").Pool(1) as plain:
        worker = psutil.Process(plain.apply_async(pid_of_worker).get(timeout=30))
        result = plain.apply_async(spin, (-1,))
        with pytest.raises(multiprocessing.TimeoutError):
            result.get(timeout=1)
        assert worker.cpu_percent(interval=0.5) > 50  # still burning CPU after the "timeout"
        plain.terminate()
