"""Deployments against real processes: a Prefect server, `poolflow serve`, retries the UI's way."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from helpers import stop_process_group
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    LogFilter,
    LogFilterTaskRunId,
)
from prefect.client.schemas.objects import FlowRun, TaskRun

from tasks.sample import write_sample_corpus
from tasks.xlsx import read_sheet

pytestmark = pytest.mark.usefixtures("prefect_api")
POOLFLOW = str(Path(sys.executable).parent / "poolflow")
BROKEN = b"\x89PNG\r\n\x1a\n\x00\x00 unreadable until fixed"


class Served:
    """A running `poolflow serve` and the directories its wiki-report deployment uses."""

    def __init__(self, corpus: Path, out: Path, process: subprocess.Popen[bytes]) -> None:
        self.corpus, self.out, self.process = corpus, out, process


def start_serving(tmp_path: Path, api_url: str, *extra: str) -> Served:
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    write_sample_corpus(corpus, files=4, docs_per_file=5)
    env = {**os.environ, "PREFECT_API_URL": api_url}
    args = [
        POOLFLOW,
        "serve",
        "--input-dir",
        str(corpus),
        "--output-dir",
        str(out),
        "--processes",
        "2",
        *extra,
    ]
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - the process owns it
    process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    wanted = str(corpus.resolve())
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError((tmp_path / "serve.log").read_text())
            # Earlier tests registered the same deployment names: wait for *our* parameters.
            found = client.read_deployments(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["wiki-report"]))
            )
            if any(d.parameters.get("input_dir") == wanted for d in found):
                return Served(corpus, out, process)
            time.sleep(0.5)
    raise TimeoutError("poolflow serve did not register its deployments")


def wait_final(flow_run_id: UUID, timeout: float = 180) -> FlowRun:
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            time.sleep(0.5)
    raise TimeoutError(f"flow run {flow_run_id} did not finish")


def parse_runs(flow_run_id: UUID) -> list[TaskRun]:
    runs: list[TaskRun] = []
    with get_client(sync_client=True) as client:
        flt = FlowRunFilter(id={"any_": [flow_run_id]})
        while page := client.read_task_runs(flow_run_filter=flt, limit=200, offset=len(runs)):
            runs += page
    return [r for r in runs if r.name.startswith("parse(")]


def retry_like_the_ui(api_url: str, flow_run_id: UUID) -> None:
    """The request the UI's Retry button sends."""
    state = {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"}
    response = httpx.post(
        f"{api_url}/flow_runs/{flow_run_id}/set_state", json={"state": state, "force": True}
    )
    response.raise_for_status()
    assert response.json()["status"] == "ACCEPT"


def start_failing_run(served: Served) -> UUID:
    """Break one input, run the deployment, wait until it fails on that item."""
    (served.corpus / "AA" / "wiki_02").write_bytes(BROKEN)
    from prefect.deployments import run_deployment

    # _sync: the browser test calls this while Playwright's event loop runs in this thread.
    flow_run = run_deployment("wiki-report/wiki-report", timeout=0, _sync=True)
    finished = wait_final(flow_run.id)
    assert finished.state is not None and finished.state.is_failed()
    assert finished.state.message == "1 of 4 items failed"
    return flow_run.id


def fix_input(served: Served) -> None:
    """Put back the generated content of the broken file (same seed, same bytes)."""
    good = served.corpus.parent / "good"
    write_sample_corpus(good, files=4, docs_per_file=5)
    (served.corpus / "AA" / "wiki_02").write_bytes((good / "AA" / "wiki_02").read_bytes())


_ITEMS_LINE = re.compile(r"^items: (\d+) ran, (\d+) failed, (\d+) reused from cache$")


def executions(flow_run_id: UUID, timeout: float = 30) -> Counter[str]:
    """Parse items of the flow run (all attempts) that ran, failed, or were reused from cache.

    A parse task run holds a chunk of items and logs one line per attempt with its counts;
    lines reach the API shortly after the run ends, so read until every attempt's is there.
    """
    runs = parse_runs(flow_run_id)
    attempts = sum(run.run_count for run in runs)
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + timeout
    flt = LogFilter(task_run_id=LogFilterTaskRunId(any_=[run.id for run in runs]))
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(log_filter=flt)
            lines = [m for log in logs if (m := _ITEMS_LINE.match(log.message))]
            if len(lines) >= attempts or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    for line in lines:
        counts.update({"ran": int(line[1]), "failed": int(line[2]), "cached": int(line[3])})
    return +counts  # without zero counts


def test_retry_through_the_ui_api_reruns_only_the_failed_item(served: Served, prefect_server: str) -> None:
    flow_run_id = start_failing_run(served)
    assert executions(flow_run_id) == {"ran": 4, "failed": 1}
    fix_input(served)

    retry_like_the_ui(prefect_server, flow_run_id)
    finished = wait_final(flow_run_id)

    assert finished.state is not None and finished.state.is_completed(), finished.state
    assert finished.run_count == 2
    # Three items were reused from the first attempt's persisted results; one ran again.
    assert executions(flow_run_id) == {"ran": 5, "failed": 1, "cached": 3}
    summary = {row[0]: row[1] for row in read_sheet(served.out / "report.xlsx", "summary")}
    assert set(summary) == {f"AA/wiki_0{n}" for n in range(4)}
    assert "failed" not in summary.values()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}))
    kinds = Counter(artifact.type for artifact in artifacts)
    # Prefect stores link artifacts as markdown: per attempt, one link and one file list.
    assert kinds == {"progress": 2, "table": 2, "markdown": 4}
    assert any("wiki_02.xlsx" in str(a.data) and "report.xlsx" in str(a.data) for a in artifacts)
    progress = [a for a in artifacts if a.type == "progress"]
    assert max(float(a.data) for a in progress) == 100.0  # type: ignore[arg-type]


def test_bad_parameter_fails_the_run_at_once_and_writes_nothing(served: Served) -> None:
    from prefect.deployments import run_deployment

    flow_run = run_deployment(
        "wiki-report/wiki-report", parameters={"input_dir": str(served.corpus / "missing")}, timeout=0
    )
    finished = wait_final(flow_run.id)
    assert finished.state is not None and finished.state.is_failed()
    assert "does not exist" in (finished.state.message or "")
    assert not served.out.exists()


def test_interval_schedule_fires_a_run_that_completes(tmp_path: Path, prefect_server: str) -> None:
    serving = start_serving(tmp_path, prefect_server, "--interval", "5", "--schedules", "on")
    try:
        deadline = time.monotonic() + 150
        completed: list[Any] = []
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("wiki-report/wiki-report")
            while not completed and time.monotonic() < deadline:
                runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id={"any_": [deployment.id]}))
                # Earlier tests ran the same deployment: only runs with this test's input count.
                ours = [r for r in runs if r.parameters.get("input_dir") == str(serving.corpus.resolve())]
                completed = [r for r in ours if r.state is not None and r.state.is_completed()]
                time.sleep(1)
        assert completed, "no scheduled run completed"
        assert (serving.out / "report.xlsx").exists()
    finally:
        stop_process_group(serving.process)


def test_retry_cache_key_ignores_a_change_to_the_task_code() -> None:
    """A fix to the task's code between a failure and the UI retry keeps finished items reused."""
    from uuid import uuid4

    from prefect import task
    from prefect.cache_policies import DEFAULT
    from prefect.client.schemas.objects import TaskRun
    from prefect.context import TaskRunContext

    from flows.wiki_report import RETRY_REUSE

    def before(item: str) -> str:
        return item

    def after(item: str) -> str:
        return item.strip()  # "fixed" code

    run = TaskRun.model_construct(id=uuid4(), flow_run_id=uuid4(), name="parse(x)", task_key="parse")

    def key(fn: Any, policy: Any) -> str | None:
        task_object = task(fn, **{**RETRY_REUSE, "cache_policy": policy})
        context = TaskRunContext.model_construct(task=task_object, task_run=run, parameters={"item": "x"})
        return policy.compute_key(context, {"item": "x"}, {})

    retry_policy = RETRY_REUSE["cache_policy"]
    assert key(before, retry_policy) == key(after, retry_policy)
    assert key(before, DEFAULT) != key(after, DEFAULT)  # Prefect's default would rerun everything
