"""Inside a task body, Prefect behaves as Prefect: the same cases with our runner (chunked and
``chunksize=1``) and with Prefect's own ``ProcessPoolTaskRunner`` as the control.

Rows of issue 26's table: the runtime context and tags, tasks that submit, map and call
tasks, and what a task sends to the API (artifacts, events, variables, a client), with the
API URL set in the environment or with ``temporary_settings``. Each runner runs the cases as
a user's script does, in a fresh interpreter (``python tests/test_task_context.py KIND
SOURCE URL``): process-wide state Prefect keeps (its events worker) must not carry over from
other tests. This test process then reads what reached the API.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import run_temp_folder
from prefect import flow, get_client, get_run_logger, tags, task
from prefect.artifacts import create_markdown_artifact
from prefect.blocks.system import Secret
from prefect.cache_policies import INPUTS
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.events import emit_event
from prefect.futures import as_completed
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner
from prefect.variables import Variable

from poolflow import MultiprocessingTaskRunner

RUNNERS: dict[str, Callable[[], TaskRunner[Any]]] = {
    "chunked": lambda: MultiprocessingTaskRunner(2),
    "chunksize-1": lambda: MultiprocessingTaskRunner(2, chunksize=1),
    # One worker: the cases are about what Prefect does inside and around a task run, not about
    # parallelism, and each worker Prefect spawns imports Prefect and this module anew.
    "prefect": lambda: ProcessPoolTaskRunner(1),
}
# Prefect's process pool starts its workers from the environment, so a URL set with
# ``temporary_settings`` does not reach them (they start a temporary server): no control there.
CASES = [("chunked", "environment"), ("chunksize-1", "environment"), ("prefect", "environment")]
CASES += [("chunked", "temporary_settings"), ("chunksize-1", "temporary_settings")]
FAN_OUT = [1, 2, 3]
DEPTH = 2

# ------------------------------------------------------------------ the user's tasks


@task(tags=["nightly"])
def introspect(x: int, scale: int = 1) -> dict[str, Any]:
    """What the task body sees of its run and its flow run."""
    from prefect.context import TagsContext
    from prefect.runtime import flow_run, task_run

    return {
        "x": x,
        "task_run_id": task_run.id,
        "task_run_name": task_run.name,
        "task_run_tags": sorted(task_run.tags),
        "task_run_parameters": task_run.parameters,
        "task_run_count": task_run.run_count,
        "task_name": task_run.task_name,
        "current_tags": sorted(TagsContext.get().current_tags),
        "flow_run_id": flow_run.id,
        "flow_run_name": flow_run.name,
        "flow_name": flow_run.flow_name,
    }


@task
def double(x: int) -> int:
    return 2 * x


@task
def fan_out(x: int) -> int:
    """A task that submits, maps and calls a task."""
    submitted = double.submit(x).result()
    mapped = sum(future.result() for future in double.map([x, x + 1]))
    return submitted + mapped + double(x)


@task
def nest(depth: int) -> int:
    """Submits itself ``depth`` levels deep."""
    return 0 if depth == 0 else nest.submit(depth - 1).result() + 1


@task
def report(x: int, key: str) -> list[str]:
    """Sends an artifact, an event and a variable to the API, reads its flow run with a client
    and loads a block; returns its task run's id and the block's secret."""
    from prefect.runtime import flow_run, task_run

    create_markdown_artifact(f"item {x}", key=f"{key}-{x}")
    emit_event(event=f"poolflow.test.{key}", resource={"prefect.resource.id": f"poolflow.item.{key}.{x}"})
    Variable.set(f"{key}-{x}", {"x": x})
    with get_client(sync_client=True) as client:
        client.read_flow_run(uuid.UUID(flow_run.id))
    return [str(task_run.id), Secret.load(f"{key}-secret").get()]


@task(retries=1)
def flaky(marker: str) -> str:
    """Fails its first attempt (a marker file remembers it), succeeds on the retry."""
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise ValueError("the first attempt fails")
    return "retried"


@task(timeout_seconds=2)
def overrun() -> None:
    time.sleep(60)


@task(cache_policy=INPUTS, persist_result=True)
def stamp(x: int, key: str) -> int:
    """A value that differs every time it is computed."""
    return time.time_ns() + x


@task
def logs(x: int, key: str) -> int:
    get_run_logger().info("%s logged from item %d", key, x)
    return x


@task
async def later(x: int) -> int:
    await asyncio.sleep(0.01)
    return x + 100


@task
def reverse(blob: bytes) -> bytes:
    return blob[::-1]


def run_cases(kind: str, key: str, only: str | None = None) -> dict[str, Any]:
    """The flows of this module (or the one named ``only``) on runner ``kind``, as a user's
    script runs them."""
    marker = run_temp_folder() / f"{key}-flaky"

    @flow(name="introspection", task_runner=RUNNERS[kind]())
    def introspection() -> dict[str, Any]:
        from prefect.runtime import flow_run

        with tags("etl"):
            futures = [*introspect.map([1, 2, 3], scale=2), introspect.submit(4)]
        seen = [(str(future.task_run_id), future.result()) for future in futures]
        return {"flow_run": {"id": flow_run.id, "name": flow_run.name}, "seen": seen}

    @flow(task_runner=RUNNERS[kind]())
    def nesting() -> dict[str, Any]:
        from prefect.runtime import flow_run

        fanned = [future.result() for future in fan_out.map(FAN_OUT)]
        return {"fanned": fanned, "depth": nest.submit(DEPTH).result(), "flow_run_id": flow_run.id}

    @flow(task_runner=RUNNERS[kind]())
    def reporting() -> list[list[str]]:
        return [future.result() for future in report.map([1, 2, 3], key=key)]

    @flow(task_runner=RUNNERS[kind]())
    def behaviours() -> dict[str, Any]:
        from prefect.runtime import flow_run

        chained = double.submit(double.submit(1))  # a future as an argument
        ordered = double.submit(5, wait_for=[chained])
        finished = [future.result() for future in as_completed([double.submit(x) for x in (7, 8, 9)])]
        stamps = [stamp.submit(1, key)]
        stamps[0].wait()  # the second run reads what the first wrote
        stamps.append(stamp.submit(1, key))
        timed_out = overrun.submit()
        timed_out.wait()
        blob = bytes(range(256)) * 40_000  # 10 MB each way
        return {
            "flow_run_id": flow_run.id,
            "chained": chained.result(),
            "ordered": ordered.result(),
            "as_completed": sorted(finished),
            "retried": flaky.submit(str(marker)).result(),
            "timeout": [timed_out.state.type.value, timed_out.state.message or ""],
            "cached": [stamps[0].result() == stamps[1].result(), stamps[1].state.name],
            "logged": [future.result() for future in logs.map([1, 2], key=key)],
            "async": [future.result() for future in later.map([1, 2])],
            "large": reverse.submit(blob).result() == blob[::-1],
        }

    flows = {
        "introspection": introspection,
        "nesting": nesting,
        "reporting": reporting,
        "behaviours": behaviours,
    }
    try:
        return {name: run() for name, run in flows.items() if only in (None, name)}
    finally:
        marker.unlink(missing_ok=True)


def main(kind: str, source: str, api_url: str, key: str) -> None:
    """A user's script: the API URL comes from the environment (every flow) or from
    ``temporary_settings`` (the flow whose tasks send to the API: the only one that test reads)."""
    if source == "environment":
        assert os.environ["PREFECT_API_URL"] == api_url
        outcome = run_cases(kind, key)
    else:
        assert "PREFECT_API_URL" not in os.environ
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            outcome = run_cases(kind, key, only="reporting")
    print("OUTCOME " + json.dumps(outcome))


# ------------------------------------------------------------------------- the tests

_outcomes: dict[tuple[str, str], dict[str, Any]] = {}
RUN_MARK = "POOLFLOW_TEST_RUN"  # set to each script's key in its environment


@pytest.fixture
def outcome(request: pytest.FixtureRequest, prefect_api: str) -> dict[str, Any]:
    """What the script of ``(kind, source)`` saw, with the servers before it and its key; run once."""
    kind, source = request.param
    if (kind, source) not in _outcomes:
        key = f"k{uuid.uuid4().hex[:12]}"
        env = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
        if source == "environment":
            env["PREFECT_API_URL"] = prefect_api
        env[RUN_MARK] = key
        Secret(value=f"secret of {key}").save(f"{key}-secret")
        script = subprocess.run(
            [sys.executable, __file__, kind, source, prefect_api, key],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        lines = [line for line in script.stdout.splitlines() if line.startswith("OUTCOME ")]
        assert script.returncode == 0 and lines, script.stdout[-3000:] + script.stderr[-5000:]
        _outcomes[kind, source] = {
            **json.loads(lines[-1].removeprefix("OUTCOME ")),
            "key": key,
            "stderr": script.stderr,
        }
    return _outcomes[kind, source]


def _cases(only_environment: bool = False) -> pytest.MarkDecorator:
    chosen = [case for case in CASES if not only_environment or case[1] == "environment"]
    return pytest.mark.parametrize("outcome", chosen, indirect=True, ids=["-".join(case) for case in chosen])


@_cases(only_environment=True)
def test_the_task_run_context_in_the_worker_is_the_real_one(outcome: dict[str, Any]) -> None:
    flow_run = outcome["introspection"]["flow_run"]
    for task_run_id, body in outcome["introspection"]["seen"]:
        assert body["task_run_id"] == task_run_id
        assert body["task_run_tags"] == ["etl", "nightly"], "@task(tags=…) and tags(…) around the submit"
        assert "etl" in body["current_tags"]
        assert body["task_run_parameters"] == {"x": body["x"], "scale": 1 if body["x"] == 4 else 2}
        assert body["task_run_count"] == 1
        assert body["task_name"] == "introspect"
        assert body["task_run_name"].startswith("introspect")
        assert (body["flow_run_id"], body["flow_run_name"]) == (flow_run["id"], flow_run["name"])
        assert body["flow_name"] == "introspection"


@_cases(only_environment=True)
def test_a_task_submits_maps_and_calls_tasks(outcome: dict[str, Any]) -> None:
    nesting = outcome["nesting"]
    assert nesting["fanned"] == [2 * x + 2 * x + 2 * (x + 1) + 2 * x for x in FAN_OUT]
    assert nesting["depth"] == DEPTH
    expected = {"double-": 4 * len(FAN_OUT), "nest-": DEPTH + 1}
    assert _recorded_task_runs(nesting["flow_run_id"], expected) == expected, "every nested run is recorded"


@_cases(only_environment=True)
def test_prefects_task_behaviours_hold(outcome: dict[str, Any]) -> None:
    """Retries, timeouts, caching, logging, ``wait_for``, ``as_completed``, futures as arguments,
    async tasks, and 10 MB parameters and results."""
    seen = outcome["behaviours"]
    assert (seen["chained"], seen["ordered"], seen["as_completed"]) == (4, 10, [14, 16, 18])
    assert seen["retried"] == "retried"
    state, message = seen["timeout"]
    assert state == "FAILED" and re.search(r"time(d)? ?out", message, re.IGNORECASE), message
    assert seen["cached"] == [True, "Cached"]
    assert seen["logged"] == [1, 2] and seen["async"] == [101, 102] and seen["large"]
    lines = [f"{outcome['key']} logged from item {x}" for x in (1, 2)]
    assert _logged(seen["flow_run_id"], lines) == lines, "get_run_logger() lines reach the API"


@_cases()
def test_what_a_task_sends_reaches_the_flows_api(outcome: dict[str, Any], prefect_api: str) -> None:
    key = outcome["key"]
    task_run_ids = [task_run_id for task_run_id, _ in outcome["reporting"]]
    assert [secret for _, secret in outcome["reporting"]] == [f"secret of {key}"] * 3, "blocks load"
    with get_client(sync_client=True) as client:
        artifacts = {artifact.key: artifact for artifact in client.read_latest_artifacts()}
    events = _events(prefect_api, f"poolflow.test.{key}", expected=len(task_run_ids))
    for x, task_run_id in enumerate(task_run_ids, start=1):
        assert Variable.get(f"{key}-{x}") == {"x": x}
        assert str(artifacts[f"{key}-{x}"].task_run_id) == task_run_id
        related = {
            resource["prefect.resource.id"] for resource in events[f"poolflow.item.{key}.{x}"]["related"]
        }
        assert f"prefect.task-run.{task_run_id}" in related
    assert "Starting temporary server" not in outcome["stderr"]
    assert not _api_servers(outcome["key"]), "no worker left an API server of its own"


def _recorded_task_runs(flow_run_id: str, expected: dict[str, int]) -> dict[str, int]:
    """How many task runs of the flow run the API holds per name prefix, once ``expected`` or a
    minute has passed (the API records task runs from their events, a moment later)."""
    deadline = time.monotonic() + 60
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)]))
            )
        counts = {prefix: sum(run.name.startswith(prefix) for run in runs) for prefix in expected}
        if counts == expected or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)


def _logged(flow_run_id: str, lines: list[str]) -> list[str]:
    """Which of ``lines`` the flow run's logs in the API hold, once all or a minute has passed."""
    deadline = time.monotonic() + 60
    while True:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(flow_run_id)])))
        found = [line for line in lines if any(line in log.message for log in logs)]
        if found == lines or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _events(api_url: str, name: str, expected: int) -> dict[str, dict[str, Any]]:
    """The events named ``name`` in the API by resource id, once ``expected`` of them arrived."""
    deadline = time.monotonic() + 60
    found: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        response = httpx.post(
            f"{api_url}/events/filter",
            json={
                "filter": {"event": {"name": [name]}, "occurred": {"since": "2020-01-01T00:00:00Z"}},
                "limit": 50,
            },
        )
        response.raise_for_status()
        found = {event["resource"]["prefect.resource.id"]: event for event in response.json()["events"]}
        if len(found) >= expected:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{len(found)} of {expected} events named {name} reached the API")


def _api_servers(key: str) -> set[int]:
    """Processes started by the script of ``key`` (its mark is in their environment, which every
    descendant inherits, orphaned or not) that run a Prefect API server under uvicorn. Other
    tests' servers, in this process or beside it, carry no such mark."""
    mark = f"{RUN_MARK}={key}".encode()
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"uvicorn" in command and b"prefect" in command and mark in environment:
            pids.add(int(entry.name))
    return pids


if __name__ == "__main__":
    main(*sys.argv[1:5])
