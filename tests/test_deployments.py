"""Deployments against real processes: a Prefect server, `poolflow serve`, retries the UI's way."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import stop_process_group
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    FlowRunFilter,
)
from prefect.client.schemas.objects import TaskRun
from prefect_helpers import (
    Served,
    executions,
    fix_input,
    retry_like_the_ui,
    start_failing_run,
    start_serving,
    wait_final,
)

from poolflow.tasks.xlsx import read_sheet

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_retry_through_the_ui_api_reruns_only_the_failed_item(served: Served, prefect_server: str) -> None:
    flow_run_id = start_failing_run(served).id
    assert executions(flow_run_id) == {"ran": 4, "failed": 1}
    # A run whose items failed is a clean Failed state: Prefect's engine resolves it into the
    # run's exception without complaint (the item's own error is logged, no engine traceback).
    serve_log = (served.out.parent / "serve.log").read_text(errors="replace")
    assert "Engine execution exited with unexpected exception" not in serve_log
    assert "Unexpected result for failed state" not in serve_log
    assert "Task run failed with exception" in serve_log  # the item's failure, logged as such
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
        # Runs due every 5 s wait for the one running: none starts beside it and fails on the
        # output folder's lock.
        failed = [r.state.message for r in ours if r.state is not None and r.state.is_failed()]
        assert failed == [], failed
    finally:
        stop_process_group(serving.process)


def test_retry_cache_key_ignores_a_change_to_the_task_code() -> None:
    """A fix to the task's code between a failure and the UI retry keeps finished items reused."""
    from uuid import uuid4

    from prefect import task
    from prefect.cache_policies import DEFAULT
    from prefect.context import TaskRunContext

    from poolflow.flows.wiki_report import RETRY_REUSE

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
