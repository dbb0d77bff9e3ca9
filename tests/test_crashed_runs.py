"""A flow run whose poolflow process was killed is marked Crashed when the next one starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

from poolflow.crashed_runs import ProcessTag

POOLFLOW = str(Path(sys.executable).parent / "poolflow")


def _runs_tagged(tag: str) -> list[tuple[UUID, str]]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))
        return [(run.id, run.state.type.value if run.state else "") for run in runs]


@pytest.mark.soak
def test_the_next_command_marks_a_killed_commands_run_crashed(prefect_api: str) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    doomed = subprocess.Popen(
        [POOLFLOW, "demo", "--items", "2", "--processes", "2", "--max-seconds", "120"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    tag = str(ProcessTag(socket.gethostname(), doomed.pid, psutil.Process(doomed.pid).create_time()))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and [s for _, s in _runs_tagged(tag)] != ["RUNNING"]:
        time.sleep(0.5)
    assert [s for _, s in _runs_tagged(tag)] == ["RUNNING"]
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    assert [s for _, s in _runs_tagged(tag)] == ["RUNNING"]  # nobody told the server

    nxt = subprocess.run(
        [POOLFLOW, "demo", "--items", "1", "--processes", "1", "--max-seconds", "0.1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert nxt.returncode == 0, nxt.stderr[-2000:]
    assert "was left running by a killed poolflow process: marked Crashed" in nxt.stderr
    assert [s for _, s in _runs_tagged(tag)] == ["CRASHED"]
