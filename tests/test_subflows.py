"""Runners nested in an async flow: a sync and an async subflow, each with a runner of its own,
called from an async flow whose own runner maps tasks too; Prefect's process runner the control."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from helpers import POWER_TASKS, run_user_script

NESTED = (
    """\
import asyncio
import json
import signal
import sys

from prefect import flow, task
from prefect.task_runners import ProcessPoolTaskRunner

from poolflow import MultiprocessingTaskRunner

KIND = sys.argv[1]
SEEN = []


def runner():
    return MultiprocessingTaskRunner(2) if KIND == "poolflow" else ProcessPoolTaskRunner(max_workers=2)


def ctrl_c():
    handler = signal.getsignal(signal.SIGINT)
    return "python" if handler is signal.default_int_handler else "other"


"""
    + POWER_TASKS
    + """

@flow(name=f"sync-child-{KIND}", task_runner=runner())
def sync_child(n):
    return [future.result() for future in square.map(range(n))]


@flow(name=f"async-child-{KIND}", task_runner=runner())
async def async_child(n):
    SEEN.append(ctrl_c())
    return [future.result() for future in cube.map(range(n))]


@flow(name=f"parent-{KIND}", task_runner=runner())
async def parent(n):
    own = [future.result() for future in square.map(range(n))]
    return {"own": own, "sync": sync_child(n), "async": await async_child(n)}


if __name__ == "__main__":
    results = asyncio.run(parent(6))
    print(json.dumps({"results": results, "ctrl_c": SEEN + [ctrl_c()]}))
"""
)


@pytest.mark.parametrize("kind", ["poolflow", "prefect"])
def test_runners_nested_in_an_async_flow_run_their_subflows_as_prefects_runner_does(
    tmp_path: Path, prefect_server: str, kind: str
) -> None:
    done = run_user_script(tmp_path, "nested.py", NESTED, prefect_server, kind)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["results"] == {
        "own": [x * x for x in range(6)],
        "sync": [x * x for x in range(6)],
        "async": [x**3 for x in range(6)],
    }
    if kind == "poolflow":
        # Inside the async subflow Ctrl-C interrupts the blocking waits; after the run, asyncio.run
        # has put Python's handler back.
        assert report["ctrl_c"] == ["python", "python"]

    def runs(name: str) -> list[dict[str, object]]:
        body = {"flows": {"name": {"any_": [f"{name}-{kind}"]}}}
        found: list[dict[str, object]] = httpx.post(
            f"{prefect_server}/flow_runs/filter", json=body, timeout=30
        ).json()
        return found

    (parent,) = runs("parent")
    children = runs("sync-child") + runs("async-child")
    assert [run["state_type"] for run in [parent, *children]] == ["COMPLETED"] * 3
    assert parent["parent_task_run_id"] is None
    # Each subflow hangs under a task run of the parent's flow run, as Prefect draws it.
    placeholders = [
        httpx.get(f"{prefect_server}/task_runs/{child['parent_task_run_id']}", timeout=30).json()
        for child in children
    ]
    assert [placeholder["flow_run_id"] for placeholder in placeholders] == [parent["id"]] * 2
