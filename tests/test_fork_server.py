"""The fork server starts when a script makes its runner, so it imports Prefect while the
script goes on to start its flow run; a worker importing the script starts none of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """\
import json, sys, time
import psutil
from prefect import flow, task
from poolflow import MultiprocessingTaskRunner

runner = MultiprocessingTaskRunner(2, start_method=sys.argv[1])
made = [" ".join(child.cmdline()) for child in psutil.Process().children()]


@task
def children_of_worker(x: int) -> list[str]:
    return [" ".join(child.cmdline()) for child in psutil.Process().children()]


@flow(task_runner=runner)
def look() -> list[list[str]]:
    return [future.result() for future in [children_of_worker.submit(x) for x in range(2)]]


if __name__ == "__main__":
    print(json.dumps({"made": made, "workers": look()}))
"""


@pytest.mark.usefixtures("prefect_api")
@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_the_fork_server_starts_with_the_runner_and_no_worker_starts_one(
    start_method: str, tmp_path: Path
) -> None:
    script = tmp_path / "my_flow.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), start_method],
        cwd=tmp_path,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    servers = [command for command in seen["made"] if "forkserver" in command]
    assert len(servers) == (1 if start_method == "forkserver" else 0), seen["made"]
    assert seen["workers"] == [[], []]  # no worker started a fork server (or anything else)
