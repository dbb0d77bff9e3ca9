"""Helpers for tests that talk to Prefect: serve the deployments, start and retry runs the
UI's way, read runs, task runs and their log lines back from the API.

Imported by test modules only (after conftest has pointed Prefect at a private home).
"""

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
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterTaskRunId,
)
from prefect.client.schemas.objects import FlowRun, TaskRun
from prefect.states import State

from poolflow.tasks.sample import write_sample_corpus

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


def wait_final(flow_run_id: UUID, timeout: float = 180, *, leaving: UUID | None = None) -> FlowRun:
    """The flow run once its state is final; ``leaving``: the id of a final state it is known
    to be leaving (a retry another process asked for, e.g. a browser), which does not count."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final() and run.state.id != leaving:
                return run
            time.sleep(0.5)
    raise TimeoutError(f"flow run {flow_run_id} did not finish")


def flow_task_runs(flow_run_id: UUID) -> list[TaskRun]:
    """Every task run of flow run ``flow_run_id``, as the API holds them now."""
    runs: list[TaskRun] = []
    with get_client(sync_client=True) as client:
        flt = FlowRunFilter(id={"any_": [flow_run_id]})
        while page := client.read_task_runs(flow_run_filter=flt, limit=200, offset=len(runs)):
            runs += page
    return runs


def parse_runs(flow_run_id: UUID) -> list[TaskRun]:
    return [r for r in flow_task_runs(flow_run_id) if r.name.startswith("parse(")]


def retry_like_the_ui(api_url: str, flow_run_id: UUID) -> None:
    """The request the UI's Retry button sends."""
    state = {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"}
    response = httpx.post(
        f"{api_url}/flow_runs/{flow_run_id}/set_state", json={"state": state, "force": True}
    )
    response.raise_for_status()
    assert response.json()["status"] == "ACCEPT"


def start_failing_run(served: Served) -> FlowRun:
    """Break one input, run the deployment, wait until it fails on that item; the failed run."""
    (served.corpus / "AA" / "wiki_02").write_bytes(BROKEN)
    from prefect.deployments import run_deployment

    # _sync: the browser test calls this while Playwright's event loop runs in this thread.
    flow_run = run_deployment("wiki-report/wiki-report", timeout=0, _sync=True)
    finished = wait_final(flow_run.id)
    assert finished.state is not None and finished.state.is_failed()
    assert (finished.state.message or "").startswith("1 of 4 items failed; see the summary sheet of ")
    return finished


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


def flow_run_id(state: State[Any]) -> UUID:
    flow_run = state.state_details.flow_run_id
    assert flow_run is not None
    return flow_run


def task_runs(state: State[Any]) -> list[TaskRun]:
    """Every task run the API recorded for the flow run that ended in ``state``."""
    flt = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id(state)]))
    runs: list[TaskRun] = []
    with get_client(sync_client=True) as client:
        while page := client.read_task_runs(flow_run_filter=flt, limit=200, offset=len(runs)):
            runs += page
    return runs
