"""Faults under Prefect: retried crashes, a soak with kills and timeouts, Ctrl-C and SIGTERM."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest
from pool_jobs import die_first_time, fault_job
from prefect import flow, task
from prefect_helpers import flow_task_runs, task_runs

from poolflow.runners import JobTimeoutError, MultiprocessingTaskRunner, WorkerDiedError
from poolflow.runners.interrupt_line import CANCELLED_LINE
from poolflow.tasks.items import read_meta

pytestmark = pytest.mark.usefixtures("prefect_api")
PREFECT_LOG_LINE = re.compile(r"\d\d:\d\d:\d\d\.\d{3} \| [A-Z]+ +\| ")

retried_crash = task(die_first_time, name="die-first-time", retries=1, retry_delay_seconds=0)
# A timeout long enough that the plain items meet it on a machine loaded by other tests.
soak_job = task(fault_job, name="soak", timeout_seconds=3, task_run_name="soak({index})")
POOLFLOW = str(Path(sys.executable).parent / "poolflow")


def worker_processes() -> list[psutil.Process]:
    """Live poolflow workers below this test process (the forkserver itself may stay)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = child.parent()
            forked = parent is not None and "forkserver" in " ".join(parent.cmdline())
            if forked and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
    return found


def test_a_task_whose_worker_died_is_retried(tmp_path: Path) -> None:
    @flow(task_runner=MultiprocessingTaskRunner(2))
    def crash_once() -> str:
        return retried_crash.submit(str(tmp_path / "marker")).result()

    state = crash_once(return_state=True)
    assert state.result() == "survived"
    (run,) = task_runs(state)
    assert run.run_count == 2


@pytest.mark.soak
@pytest.mark.parametrize("chunksize", [1, "auto"])
def test_soak_2000_tasks_with_killed_workers_and_timeouts(chunksize: int | str) -> None:
    count, kill_every, spin_every = 2000, 100, 200

    @flow(task_runner=MultiprocessingTaskRunner(2, chunksize=chunksize))  # type: ignore[arg-type]
    def soak() -> list[Any]:
        futures = soak_job.map(range(count), kill_every=kill_every, spin_every=spin_every)
        return [f.result(raise_on_failure=False) for f in futures]

    state = soak(return_state=True)
    outcomes = state.result()
    killed = {i for i in range(count) if i % kill_every == kill_every // 2}
    spun = {i for i in range(count) if i % spin_every == spin_every // 3} - killed
    for index, outcome in enumerate(outcomes):
        if index in killed:
            assert isinstance(outcome, WorkerDiedError), (index, outcome)
            assert f"while running soak({index})" in str(outcome)
        elif index in spun:
            assert isinstance(outcome, JobTimeoutError), (index, outcome)
        else:
            assert outcome == index
    runs = task_runs(state)
    assert worker_processes() == []
    if chunksize != 1:  # chunks: fewer runs, holding every item once
        assert len(runs) < count
        assert all(run.state is not None and run.state.is_final() for run in runs)
        sizes = [int(m[1]) if (m := re.search(r", (\d+) items\)$", run.name)) else 1 for run in runs]
        assert sum(sizes) == count
        return
    assert len(runs) == count
    names = Counter(run.state.name for run in runs if run.state is not None)
    assert names == {
        "Completed": count - len(killed) - len(spun),
        "Failed": len(killed),
        "TimedOut": len(spun),
    }
    assert worker_processes() == []


def _left_behind(session_id: int, grace: float = 30.0) -> list[psutil.Process]:
    """The processes of the session that are still alive ``grace`` seconds after its leader
    exited (its API server ends on its own after the command, without being waited for)."""
    deadline = time.monotonic() + grace
    while (alive := _session_processes(session_id)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def _freeze_workers(command: int) -> list[int]:
    """SIGSTOP the pool workers of ``command`` (the fork server's children; the fork server
    itself runs on, so it can end with the command); return their pids."""
    frozen = []
    for child in psutil.Process(command).children():
        for worker in child.children():
            with contextlib.suppress(psutil.Error):
                worker.suspend()
                frozen.append(worker.pid)
    return frozen


def _session_processes(session_id: int) -> list[psutil.Process]:
    alive = []
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getsid(process.pid) == session_id and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return alive


# Ctrl-C in a terminal signals the whole process group; `kill` and Prefect's runners (on
# cancellation) send SIGTERM to the flow process alone.
@pytest.mark.soak
@pytest.mark.parametrize(
    ("sig", "code", "embedded", "group"),
    [(signal.SIGINT, 130, False, True), (signal.SIGTERM, 143, True, False)],
)
def test_interrupted_run_stops_cleanly_and_resumes(
    tmp_path: Path, prefect_server: str, sig: signal.Signals, code: int, embedded: bool, group: bool
) -> None:
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    subprocess.run([POOLFLOW, "sample", str(corpus), "--files", "60", "--docs", "150"], check=True)
    env = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
    if not embedded:
        env["PREFECT_API_URL"] = prefect_server
    args = [POOLFLOW, "run", str(corpus), "-o", str(out), "--processes", "2"]
    # Ctrl-C's default action in the run, as a shell gives a foreground job, even when the
    # tests were started in the background (which ignores SIGINT).
    run = subprocess.Popen(
        args,
        env=env,
        start_new_session=True,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while len(list(out.rglob("*.xlsx"))) < 3 and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.1)
    assert run.poll() is None, f"the run ended before the signal: {run.communicate()[1][-3000:]}"
    if group:
        os.killpg(run.pid, sig)
    else:
        os.kill(run.pid, sig)
    started = time.monotonic()
    _, stderr = run.communicate(timeout=60)
    assert time.monotonic() - started < 30
    assert run.returncode == code, stderr[-2000:]
    assert "leaked semaphore" not in stderr
    time.sleep(0.5)
    assert _left_behind(run.pid) == [], "processes left behind"
    artifacts = [p for p in out.rglob("*.xlsx") if not p.name.startswith(".")]
    assert 0 < len(artifacts) < 60
    assert all(read_meta(p).get("format") for p in artifacts), "a half-written artifact"

    env["PREFECT_API_URL"] = prefect_server
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"done, {len(artifacts)} skipped as current" in rerun.stderr


@pytest.mark.soak
def test_cancelling_a_cli_run_from_the_api_stops_it_and_a_rerun_resumes(
    tmp_path: Path, prefect_server: str
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelling

    corpus, out = tmp_path / "corpus", tmp_path / "out"
    subprocess.run([POOLFLOW, "sample", str(corpus), "--files", "60", "--docs", "150"], check=True)
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    args = [POOLFLOW, "run", str(corpus), "-o", str(out), "--processes", "2"]
    run = subprocess.Popen(args, env=env, start_new_session=True, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(out.rglob("*.xlsx"))) < 3 and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.1)
    assert run.poll() is None, f"the run ended before the cancel: {run.communicate()[1][-3000:]}"
    # The run notices a cancel within its 2 s poll; a fast machine finishes these items
    # sooner. Its workers are held still meanwhile (SIGSTOP; the SIGKILL that stops them works
    # all the same), so the cancel cuts the run mid-way on any machine.
    assert _freeze_workers(run.pid), "no worker to hold still"
    running = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])))
    with get_client(sync_client=True) as client:
        wiki = FlowFilter(name=FlowFilterName(any_=["wiki-report"]))
        (flow_run,) = client.read_flow_runs(flow_run_filter=running, flow_filter=wiki)
        client.set_flow_run_state(flow_run.id, Cancelling(), force=True)  # what the UI's Cancel does
        started = time.monotonic()
        _, stderr = run.communicate(timeout=60)
        assert time.monotonic() - started < 20
        final = client.read_flow_run(flow_run.id).state
    assert final is not None and final.type == StateType.CANCELLED, stderr[-2000:]
    assert run.returncode == 1
    assert _left_behind(run.pid) == []
    artifacts = [p for p in out.rglob("*.xlsx") if not p.name.startswith(".")]
    assert 0 < len(artifacts) < 60
    assert all(read_meta(p).get("format") for p in artifacts)
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"done, {len(artifacts)} skipped as current" in rerun.stderr


NAPPING_SCRIPT = """\
import sys
import time

from prefect import flow, task

if sys.argv[1] == "poolflow":
    from poolflow import MultiprocessingTaskRunner as Runner
else:
    from prefect.task_runners import ProcessPoolTaskRunner as Runner


@task
def nap(x):
    time.sleep(1)
    return x


@flow(name=sys.argv[2], task_runner=Runner(2))
def napping():
    return [future.result() for future in nap.map(range(40))]


if __name__ == "__main__":
    napping()
"""


@pytest.mark.parametrize("runner", ["poolflow", "prefect"])
def test_cancelling_a_users_script_run_from_the_api(runner: str, tmp_path: Path, prefect_server: str) -> None:
    """The UI's Cancel on a flow run a user's script started (no worker to signal it): with
    Prefect's runner the script works on to its end and the run stays ``Cancelling``; with
    poolflow's, the runner's watch (from its first task run) stops the workers, the script
    ends at once, its last words one line instead of a traceback, and the run ends ``Cancelled``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelling

    name = f"napping-{runner}-{os.getpid()}-{time.monotonic_ns()}"
    (tmp_path / "napping.py").write_text(NAPPING_SCRIPT)
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    script = subprocess.Popen(
        [sys.executable, "napping.py", runner, name],
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    with get_client(sync_client=True) as client:
        flows = FlowFilter(name=FlowFilterName(any_=[name]))
        deadline = time.monotonic() + 180
        while not (runs := client.read_flow_runs(flow_filter=flows)) or not any(
            r.state is not None and r.state.is_completed() for r in flow_task_runs(runs[0].id)
        ):
            assert script.poll() is None and time.monotonic() < deadline, "no task run completed"
            time.sleep(0.3)
        client.set_flow_run_state(runs[0].id, Cancelling(), force=True)  # what the UI's Cancel does
        started = time.monotonic()
        _, stderr = script.communicate(timeout=180)
        seconds = time.monotonic() - started
        final = client.read_flow_run(runs[0].id).state
    assert final is not None
    if runner == "prefect":
        assert script.returncode == 0 and final.type == StateType.CANCELLING, stderr[-2000:]
        return
    assert final.type == StateType.CANCELLED, stderr[-2000:]
    assert script.returncode == 1 and seconds < 15, (seconds, stderr[-2000:])
    lines = stderr.strip().splitlines()  # Prefect logs the run's error itself; then only our line
    last_log = max(i for i, line in enumerate(lines) if PREFECT_LOG_LINE.match(line))
    assert lines[last_log + 1 :] == [CANCELLED_LINE], stderr[-2000:]
    assert _left_behind(script.pid) == []
