"""WorkerPool faults without Prefect: dead workers, hard timeouts, cancellation, shutdown.

Each fault also has a baseline test showing what plain ``multiprocessing.Pool`` does.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest
from helpers import alive, started_workers
from pool_jobs import (
    chatty,
    die,
    die_after,
    die_first_time_once_sent_a_job,
    fail,
    fail_unrebuildably,
    first_and_identity,
    pid_of_worker,
    spin,
    square,
    touch,
    touch_after,
)

from poolflow.runners import worker_pool
from poolflow.runners.worker import (
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
from poolflow.runners.worker_pool import JobCancelledError, JobTimeoutError, WorkerDiedError, WorkerPool

START_METHODS = ["spawn", "forkserver"]


@pytest.fixture(params=START_METHODS)
def pool(request: pytest.FixtureRequest) -> WorkerPool:
    pool = WorkerPool(2, start_method=request.param)
    pool.start()
    started_workers(pool)
    yield pool
    pids = pool.worker_pids()
    pool.shutdown()
    assert not alive(pids)


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


def test_future_cancel_stops_running_and_queued_jobs(pool: WorkerPool) -> None:
    running = [pool.submit(spin, (-1,), label=f"spin-{i}") for i in range(2)]
    queued = pool.submit(square, (3,), label="square(3)")
    started = pool.worker_pids()
    time.sleep(0.3)
    assert [future.cancel() for future in [*running, queued]] == [True, True, True]
    for future in [*running, queued]:
        assert future.cancelled()
        with pytest.raises(JobCancelledError, match="was cancelled"):
            future.result(timeout=0)
    # Both spinning workers were killed and replaced; the pool goes on with new ones.
    assert [pool.submit(square, (i,)).result(timeout=30) for i in range(4)] == [0, 1, 4, 9]
    deadline = time.monotonic() + 30
    while alive(started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(started)
    assert len(pool.worker_pids()) == 2 and not set(pool.worker_pids()) & set(started)
    assert pool.worker_deaths == 0  # a cancellation is not a death


def test_future_cancel_after_the_job_finished_changes_nothing(pool: WorkerPool) -> None:
    done = pool.submit(square, (6,))
    assert done.result(timeout=30) == 36
    assert done.cancel() is False
    assert not done.cancelled() and done.result() == 36
    failed = pool.submit(fail, ("boom",))
    with pytest.raises(ValueError, match="boom"):
        failed.result(timeout=30)
    assert failed.cancel() is False


@pytest.mark.parametrize("kill", [False, True])
def test_shutdown_from_another_thread(kill: bool) -> None:
    pool = WorkerPool(2, start_method="forkserver")
    pool.start()
    pids = started_workers(pool)
    running = [pool.submit(spin, (-1.0 if kill else 2.0,)) for _ in range(2)]
    queued = pool.submit(square, (3,), label="square(3)")
    time.sleep(0.5)  # both workers picked up their spin
    stopper = threading.Thread(target=pool.shutdown, kwargs={"kill": kill, "timeout": 60})
    stopper.start()
    stopper.join(90)
    assert not stopper.is_alive()
    with pytest.raises(JobCancelledError, match=r"the pool shut down before square\(3\) started"):
        queued.result(timeout=0)
    for future in running:
        if kill:
            with pytest.raises(JobCancelledError, match="its worker was stopped"):
                future.result(timeout=0)
        else:
            assert future.result(timeout=0) is None  # finished before the workers stopped
    assert not alive(pids)
    assert pool.worker_pids() == []
    with pytest.raises(JobCancelledError, match="shut down"):
        pool.submit(square, (1,))
    pool.shutdown()  # a second call has nothing left to do


def test_jobs_queued_or_submitted_after_an_interrupt_stop_as_interrupted() -> None:
    """Ctrl-C while a flow run starts: the jobs the shutdown cancels and those its task runs
    submit afterwards raise the interrupt (their runs end Crashed), not a pool error."""
    pool = WorkerPool(1, start_method="forkserver")
    pool.start()
    queued = pool.submit(square, (2,))
    interrupt = KeyboardInterrupt()
    pool.shutdown(kill=True, because=interrupt)
    with pytest.raises(KeyboardInterrupt) as raised:
        queued.result(timeout=30)
    assert raised.value is interrupt
    with pytest.raises(KeyboardInterrupt) as raised:
        pool.submit(square, (3,))
    assert raised.value is interrupt


def test_a_shared_value_goes_to_each_worker_once_and_the_jobs_carry_only_its_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A value many jobs share (a chunk's function and task run) crosses each pipe once, is
    unpickled once per worker, and reaches a replacement worker too; past the values a worker
    keeps, the oldest is dropped and sent again when a job needs it."""
    sent: list[Any] = []

    def spy(conn: Any, message: Any) -> None:
        sent.append(message)
        send(conn, message)

    monkeypatch.setattr(worker_pool, "send", spy)
    pool = WorkerPool(2)
    pool.start()
    try:
        big = Shared(list(range(7, 200_007)))  # about a megabyte pickled
        results = [f.result(60) for f in [pool.submit(first_and_identity, (big,)) for _ in range(40)]]
        identities = collections.defaultdict(set)
        for first, identity, pid in results:
            assert first == 7
            identities[pid].add(identity)
        assert all(len(built) == 1 for built in identities.values()), identities  # once per worker
        shares = [m for m in sent if isinstance(m, Share)]
        assert len(shares) == len(identities) and {m.key for m in shares} == {big.key}
        assert max(len(m.payload) for m in sent if isinstance(m, RunJob)) < 1000 < len(big.blob)

        killed = started_workers(pool)[0]
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while killed in pool.worker_pids() and time.monotonic() < deadline:
            time.sleep(0.01)
        again = [pool.submit(first_and_identity, (big,)) for _ in range(20)]
        assert [f.result(60)[0] for f in again] == [7] * 20
        assert sum(isinstance(m, Share) and m.key == big.key for m in sent) == 3  # the replacement got it too

        many = list(enumerate(Shared([i]) for i in range(worker_pool._SHARES_KEPT + 3)))
        for i, value in [*many, *many[:2]]:
            assert pool.submit(first_and_identity, (value,)).result(60)[0] == i
        assert any(m.drop is not None for m in sent if isinstance(m, Share))
    finally:
        pool.shutdown()


@pytest.mark.parametrize("maxtasksperchild", [None, 3])
def test_fork_is_refused(maxtasksperchild: int | None) -> None:
    with pytest.raises(ValueError, match="cannot fork its workers"):
        WorkerPool(2, start_method="fork", maxtasksperchild=maxtasksperchild)
    assert WorkerPool(2).context.get_start_method() != "fork"


def test_worker_speaks_the_protocol_over_a_real_pipe() -> None:
    """A bare worker process, driven by hand: every message crosses a real pipe both ways."""
    context = multiprocessing.get_context("forkserver")
    parent, child = context.Pipe(duplex=True)
    worker = context.Process(target=worker_main, args=(child, None, (), None, os.getpid()), daemon=True)
    worker.start()
    child.close()
    try:
        payload = cloudpickle.dumps((chatty, (21,), {}))
        send(parent, RunJob(job_id=7, payload=payload, log_prints=True))
        assert receive_report(parent) == WorkerReady(), "a worker says when it has started"
        reports = [receive_report(parent) for _ in range(4)]
        assert reports[:3] == [
            JobStarted(7),
            JobLog(7, logging.WARNING, "logged 21"),
            JobLog(7, logging.INFO, "printed 21"),
        ]
        result = reports[3]
        assert isinstance(result, JobResult) and result.job_id == 7
        assert pickle.loads(result.value) == 42

        send(parent, RunJob(job_id=8, payload=cloudpickle.dumps((fail, ("bad row",), {})), log_prints=False))
        assert receive_report(parent) == JobStarted(8)
        problem = receive_report(parent)
        assert isinstance(problem, JobProblem) and problem.job_id == 8
        error, text = pickle.loads(problem.error)
        assert isinstance(error, ValueError) and str(error) == "bad row"
        assert "in fail" in text and "ValueError: bad row" in text

        # A job without a timeout is not announced: its result is the first message.
        send(
            parent,
            RunJob(job_id=9, payload=cloudpickle.dumps((fail, ("x",), {})), log_prints=False, timed=False),
        )
        untimed = receive_report(parent)
        assert isinstance(untimed, JobProblem) and untimed.job_id == 9

        send(parent, Stop())
        worker.join(30)
        assert worker.exitcode == 0
    finally:
        if worker.is_alive():
            worker.kill()
            worker.join()
        parent.close()


def test_shutdown_with_kill_stops_everything_promptly() -> None:
    pool = WorkerPool(2, start_method="forkserver")
    pool.start()
    pids = started_workers(pool)
    running = [pool.submit(spin, (-1,)) for _ in range(3)]
    time.sleep(0.3)
    started = time.monotonic()
    pool.shutdown(kill=True)
    assert time.monotonic() - started < 10
    for future in running:
        with pytest.raises(JobCancelledError):
            future.result(timeout=1)
    assert not alive(pids)


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


def test_an_exception_that_cannot_be_rebuilt_arrives_as_a_runtime_error_naming_it(pool: WorkerPool) -> None:
    with pytest.raises(RuntimeError, match=r"^KeywordOnlyError: failed with code 7$"):
        pool.submit(fail_unrebuildably, (7,)).result(timeout=30)
    assert pool.submit(square, (5,)).result(timeout=30) == 25


def test_maxtasksperchild_recycles_workers_without_losing_jobs() -> None:
    pool = WorkerPool(2, start_method="forkserver", maxtasksperchild=3)
    pool.start()
    try:
        pids = [pool.submit(pid_of_worker).result(timeout=30) for _ in range(9)]
        # No worker runs more than 3 jobs. Which worker takes the next job depends on how
        # soon the manager sees a worn-out worker exit, so more than 3 may take part.
        jobs_per_worker = collections.Counter(pids)
        assert max(jobs_per_worker.values()) == 3 and len(jobs_per_worker) >= 3
    finally:
        pool.shutdown()


OWNER = """\
import os, signal, sys, time
from poolflow.runners.worker_pool import WorkerPool

def nap(seconds):
    open("started", "w").close()
    time.sleep(seconds)
    return seconds

if __name__ == "__main__":
    # The owner decides, as Prefect's handler does (a handler: SIG_IGN would be inherited)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    pool = WorkerPool(2, start_method=sys.argv[1])
    pool.start()
    future = pool.submit(nap, (float(sys.argv[2]),))
    while len(pool.worker_pids()) < 2 or (sys.argv[3] == "job running" and not os.path.exists("started")):
        time.sleep(0.01)
    print(*pool.worker_pids(), flush=True)
    print("result", future.result(), flush=True)
    pool.shutdown()
"""


def _owner(
    tmp_path: Path, start_method: str, nap: float, moment: str = "job running"
) -> tuple[subprocess.Popen[str], list[int]]:
    """A process that owns a pool (in a process group of its own) and the PIDs of its workers,
    once one of them runs a job that naps for ``nap`` seconds (``moment`` "job running"), or
    as soon as both are started ("workers starting": they may still be importing)."""
    (tmp_path / "owner.py").write_text(OWNER)
    owner = subprocess.Popen(
        [sys.executable, "owner.py", start_method, str(nap), moment],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert owner.stdout is not None
    return owner, [int(pid) for pid in owner.stdout.readline().split()]


@pytest.mark.parametrize("moment", ["workers starting", "job running"])
@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_sigterm_to_the_process_group_leaves_the_stopping_to_the_owner(
    tmp_path: Path, start_method: str, moment: str
) -> None:
    """A terminal's SIGTERM reaches every process of the group, multiprocessing's fork server
    too (it ignores only SIGINT): the workers stay, and the job finishes. A worker still
    starting may die of it before it ignores it; its replacement comes from a new fork server."""
    # The job naps long enough that the owner is still running while the fork server's end
    # is checked, however late this busy test process reads the owner's first line.
    owner, workers = _owner(tmp_path, start_method, nap=4.0, moment=moment)
    try:
        parent = psutil.Process(workers[0]).ppid()  # the fork server, or the owner itself
        assert (parent != owner.pid) == (start_method == "forkserver")
        os.killpg(owner.pid, signal.SIGTERM)
        if start_method == "forkserver":
            deadline = time.monotonic() + 3
            while alive([parent]) and time.monotonic() < deadline:
                time.sleep(0.02)  # not psutil.wait_procs: the owner has yet to reap its zombie
            assert not alive([parent]) and owner.poll() is None, "the fork server ended first"
        out, _ = owner.communicate(timeout=60)
        assert owner.returncode == 0
        assert out.strip() == "result 4.0"
        assert not alive(workers)
    finally:
        owner.kill()


class _DyingForkServer:
    """A ``multiprocessing`` context whose first ``failures`` worker starts fail as they do
    when the fork server dies while it forks."""

    def __init__(self, context: Any, failures: int) -> None:
        self.context, self.failures = context, failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self.context, name)

    def Process(self, *args: Any, **kwargs: Any) -> Any:
        process = self.context.Process(*args, **kwargs)
        if self.failures:
            self.failures -= 1
            process.start = _fork_server_died
        return process


def _fork_server_died() -> None:
    raise EOFError("unexpected EOF")  # what Process.start raises when the fork server dies under it


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize(("failures", "works"), [(3, True), (4, False)])
def test_a_worker_start_the_fork_server_died_under_is_tried_again(failures: int, works: bool) -> None:
    """Three failed starts in a row are tried again; a fourth fails the pool's jobs, naming it."""
    pool = WorkerPool(1, start_method="forkserver")
    pool.context = _DyingForkServer(pool.context, failures)
    future = pool.submit(square, (6,))  # queued before the manager starts, so it meets the failure
    pool.start()
    try:
        if works:
            assert future.result(timeout=60) == 36
        else:
            with pytest.raises(RuntimeError, match="pool manager failed: EOFError"):
                future.result(timeout=60)
    finally:
        pool.shutdown()


@pytest.mark.parametrize("start_method", START_METHODS)
def test_workers_end_with_the_process_that_owns_their_pool(tmp_path: Path, start_method: str) -> None:
    owner, workers = _owner(tmp_path, start_method, nap=600.0)
    try:
        assert len(workers) == 2 and alive(workers)
        owner.kill()
        owner.wait(30)
        deadline = time.monotonic() + 5
        while alive(workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(workers)
    finally:
        owner.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(owner.pid, signal.SIGKILL)


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
        # Still burning CPU after the "timeout": its CPU time keeps growing (slowly, on a
        # busy machine; an idle worker's would not grow at all).
        spent = sum(worker.cpu_times()[:2])
        deadline = time.monotonic() + 60
        while sum(worker.cpu_times()[:2]) < spent + 1.0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sum(worker.cpu_times()[:2]) >= spent + 1.0
        plain.terminate()


def test_a_running_pool_leaves_the_switch_interval_as_it_found_it() -> None:
    """No process-wide setting of the caller's process changes while a pool runs (a busy
    worker's next job waits in its pipe, so the manager thread need not be scheduled sooner)."""
    before = sys.getswitchinterval()
    pool = WorkerPool(1)
    pool.start()
    try:
        assert pool.submit(square, (3,)).result(timeout=60) == 9
        assert sys.getswitchinterval() == before
    finally:
        pool.shutdown()
    assert sys.getswitchinterval() == before


def _waiting_for(marker: Path, seen: list[bool]) -> Callable[[object], None]:
    """A done-callback that holds the manager thread up until ``marker`` exists (30 s at
    most), then notes in ``seen`` whether it did."""

    def slow_callback(_: object) -> None:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(marker.exists())

    return slow_callback


def test_a_worker_gets_its_next_job_before_the_last_ones_callbacks_run(tmp_path: Path) -> None:
    """Settling a future runs its caller's callbacks in the manager thread; the worker that
    finished it already has its next job meanwhile, instead of idling until they return."""
    marker = tmp_path / "second-job-ran"
    seen_during_callback: list[bool] = []
    pool = WorkerPool(1)
    pool.start()
    try:
        first = pool.submit(spin, (0.5,))  # long enough to get its callback before it ends
        second = pool.submit(touch, (str(marker),))
        first.add_done_callback(_waiting_for(marker, seen_during_callback))
        assert second.result(timeout=60) == str(marker)
    finally:
        pool.shutdown()
    assert seen_during_callback == [True]


def test_a_busy_worker_runs_its_next_job_while_the_manager_is_held_up(tmp_path: Path) -> None:
    """A busy worker holds its next job: when it answers, it starts that job at once, and the
    manager (here held up in a slow callback of the job that just ended) sends it the one
    after meanwhile, so the worker does not wait for the flow process between jobs."""
    later = tmp_path / "third-job-ran"
    seen_during_callback: list[bool] = []
    pool = WorkerPool(1)
    pool.start()
    try:
        started_workers(pool)
        first = pool.submit(spin, (0.5,))
        second = pool.submit(square, (2,))
        third = pool.submit(touch, (str(later),))
        rest = [pool.submit(square, (i,)) for i in range(3)]
        first.add_done_callback(_waiting_for(later, seen_during_callback))
        assert third.result(timeout=60) == str(later)
        assert second.result(timeout=60) == 4 and [f.result(timeout=60) for f in rest] == [0, 1, 4]
    finally:
        pool.shutdown()
    assert seen_during_callback == [True]


@pytest.mark.parametrize("how", ["sigkill", "timeout"])
def test_the_job_a_lost_worker_held_next_runs_on_its_replacement(how: str) -> None:
    pool = WorkerPool(1)
    pool.start()
    try:
        lost = pool.submit(die_after, (0.5,)) if how == "sigkill" else pool.submit(spin, (-1,), timeout=0.5)
        others = [pool.submit(square, (i,)) for i in range(4)]  # the first waits in the lost one's pipe
        with pytest.raises(WorkerDiedError if how == "sigkill" else JobTimeoutError):
            lost.result(timeout=60)
        assert [f.result(timeout=60) for f in others] == [0, 1, 4, 9]
        assert (pool.worker_deaths, pool.timeouts) == ((1, 0) if how == "sigkill" else (0, 1))
    finally:
        pool.shutdown()


def test_a_cancelled_job_that_waited_in_a_busy_workers_pipe_does_not_finish(tmp_path: Path) -> None:
    marker = tmp_path / "cancelled-job-finished"
    pool = WorkerPool(1)
    pool.start()
    try:
        holder = started_workers(pool)
        running = pool.submit(spin, (1.0,))
        waiting = pool.submit(touch_after, (0.5, str(marker)))
        others = [pool.submit(square, (i,)) for i in range(3)]
        time.sleep(0.3)  # the worker runs the first and holds the second by now
        assert waiting.cancel() and waiting.cancelled()
        assert running.result(timeout=60) is None
        assert [f.result(timeout=60) for f in others] == [0, 1, 4]
        time.sleep(1.0)
        assert not marker.exists()
        # It had been sent: its worker was stopped as it started it, and replaced.
        assert pool.worker_pids() != holder
        assert pool.worker_deaths == 0  # a cancellation is not a death
    finally:
        pool.shutdown()


def test_a_worker_that_dies_while_starting_hands_its_job_to_the_replacement(tmp_path: Path) -> None:
    """A worker killed before it could take jobs (as by Ctrl-C to the group while it imports the
    user's script) never ran the job sent to it: the replacement runs it, nothing fails."""
    marker = str(tmp_path / "died")
    pool = WorkerPool(1, initializer=die_first_time_once_sent_a_job, initargs=(marker,))
    pool.start()
    try:
        assert pool.submit(square, (7,)).result(timeout=120) == 49
        assert pool.worker_deaths == 1 and Path(marker).exists()
    finally:
        pool.shutdown()


def test_a_worker_that_cannot_start_fails_the_job_saying_so() -> None:
    pool = WorkerPool(1, initializer=die, initargs=("exit",))
    pool.start()
    try:
        with pytest.raises(
            WorkerDiedError, match=r"died with exit code 3 while starting, before running square"
        ):
            pool.submit(square, (7,)).result(timeout=120)
        assert pool.worker_deaths == 2, "sent once more, to one replacement"
    finally:
        pool.shutdown(kill=True)
