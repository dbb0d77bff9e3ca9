"""A user's deployment run by Prefect's own process worker (``prefect worker start``).

The way most Prefect users run deployments: a project folder with its own ``tasks.py`` and
``flows/``, deployed from that folder to a ``process`` work pool, each flow run started by
the worker as a process of its own, and cancelled from the UI or API by the worker
signalling that process. Prefect's ``ProcessPoolTaskRunner`` is the control: with either
runner the run completes with its result, a cancelled run ends ``Cancelled`` and no process
of it is left behind.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from helpers import prefect_free_env, stop_process_group
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.states import Cancelling
from prefect_helpers import flow_task_runs, wait_final

pytestmark = pytest.mark.usefixtures("prefect_api")

PREFECT = str(Path(sys.executable).parent / "prefect")
MARK = "POOLFLOW_TEST_RUN_MARK"
RUNNERS = {
    "poolflow": "from poolflow import MultiprocessingTaskRunner as Runner",
    "prefect": "from prefect.task_runners import ProcessPoolTaskRunner as Runner",
}

TASKS = """\
import time

from prefect import task


@task
def slow(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return 2 * x
"""

FLOW = """\
from pathlib import Path

from prefect import flow

{runner_import}
from tasks import slow


@flow(task_runner=Runner(2))
def doubled(n: int, seconds: float, out: str) -> None:
    Path(out).write_text(str(sum(future.result() for future in slow.map(range(n), seconds))))
"""

DEPLOY = """\
import sys

from prefect import flow

deployment = flow.from_source(source=sys.argv[1], entrypoint="flows/etl.py:doubled")
print(deployment.deploy(name="d", work_pool_name=sys.argv[2], print_next_steps=False))
"""


@pytest.fixture(params=sorted(RUNNERS))
def deployed(
    request: pytest.FixtureRequest, tmp_path: Path, prefect_server: str
) -> Iterator[tuple[str, str]]:
    """A user's project deployed to a process work pool of its own, with a worker serving
    it; yields the deployment's name and the runner its flow uses."""
    project = tmp_path / "project"
    (project / "flows").mkdir(parents=True)
    (project / "tasks.py").write_text(TASKS)
    (project / "flows" / "etl.py").write_text(FLOW.format(runner_import=RUNNERS[request.param]))
    pool = f"pp-{uuid.uuid4().hex[:8]}"
    env = prefect_free_env(
        tmp_path / "home", PREFECT_API_URL=prefect_server, PREFECT_WORKER_QUERY_SECONDS="1"
    )
    for command in (
        [PREFECT, "work-pool", "create", "--type", "process", pool],
        [sys.executable, "-c", DEPLOY, str(project), pool],
    ):
        done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", pool],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield "doubled/d", request.param
    finally:
        stop_process_group(worker)
        log.close()


def _processes_marked(mark: str) -> list[str]:
    """Command lines of the live processes whose environment carries ``mark``."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARK) == mark:
                found.append(" ".join(process.cmdline()))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _start(deployment: str, n: int, seconds: float, out: Path) -> tuple[uuid.UUID, str]:
    """Start a run of ``deployment`` writing its sum to ``out``; its id and the mark its
    processes carry."""
    mark = uuid.uuid4().hex
    run = run_deployment(
        deployment,
        parameters={"n": n, "seconds": seconds, "out": str(out)},
        job_variables={"env": {MARK: mark}},
        timeout=0,
    )
    return run.id, mark


def test_a_deployment_run_by_a_process_worker_completes_and_a_cancelled_one_leaves_no_process(
    deployed: tuple[str, str], tmp_path: Path
) -> None:
    deployment, runner = deployed
    flow_run_id, _ = _start(deployment, 6, 0.1, tmp_path / "sum")
    run = wait_final(flow_run_id, timeout=240)
    assert run.state is not None and run.state.is_completed(), run.state
    assert (tmp_path / "sum").read_text() == str(2 * sum(range(6)))

    flow_run_id, mark = _start(deployment, 40, 1.0, tmp_path / "cancelled-sum")
    deadline = time.monotonic() + 240
    while not any(r.state is not None and r.state.is_completed() for r in flow_task_runs(flow_run_id)):
        assert time.monotonic() < deadline, "no task run completed"
        time.sleep(0.5)
    assert _processes_marked(mark), "the run's processes carry no mark"
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Cancelling(), force=True)
    run = wait_final(flow_run_id, timeout=240)
    assert run.state is not None and run.state.is_cancelled(), run.state
    deadline = time.monotonic() + 30
    while (left := _processes_marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes of the cancelled run still alive: {left}"
    assert not (tmp_path / "cancelled-sum").exists()
    if runner == "poolflow":
        # Beyond the control, which leaves the task runs it was running in Running: none is.
        runs = flow_task_runs(flow_run_id)
        unfinished = [r.name for r in runs if r.state is None or not r.state.is_final()]
        assert not unfinished, unfinished
