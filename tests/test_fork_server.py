"""The fork server starts when a script makes its runner: a copy of the script's process when
that process has a single thread (Prefect already imported, ready at once; its workers collect
garbage whatever the script's collector did), else the
interpreter multiprocessing starts (which imports Prefect while the script starts its flow
run). No worker starts one of its own, and none of them outlives a script killed with
SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

SCRIPT = """\
import gc, json, multiprocessing.forkserver, sys, threading, time
import psutil
from prefect import flow, task
from poolflow import MultiprocessingTaskRunner

if sys.argv[2] == "threaded":  # a thread of the script's own is running when the runner is made
    threading.Thread(target=time.sleep, args=(3,), daemon=True).start()
if sys.argv[2] == "collector-off":  # the script builds long-lived objects with the collector off
    gc.disable()
runner = MultiprocessingTaskRunner(2, start_method=sys.argv[1])
gc.enable()
server = multiprocessing.forkserver._forkserver._forkserver_pid  # set when the runner is made


@task
def look_at_worker(x: int) -> dict[str, object]:
    children = [" ".join(child.cmdline()) for child in psutil.Process().children()]
    return {"children": children, "collector": gc.isenabled()}


@flow(task_runner=runner)
def look() -> list[dict[str, object]]:
    return [future.result() for future in [look_at_worker.submit(x) for x in range(2)]]


if __name__ == "__main__":
    workers = look()
    # read once workers came from it: a spawned server's command line is empty until it has exec'd
    made = " ".join(psutil.Process(server).cmdline()) if server else None
    print(json.dumps({"server": made, "script": " ".join(psutil.Process().cmdline()), "workers": workers}))
"""


@pytest.mark.usefixtures("prefect_api")
@pytest.mark.parametrize(
    ("start_method", "threads", "server"),
    [
        ("forkserver", "single", "copy"),
        ("forkserver", "collector-off", "copy"),
        ("forkserver", "threaded", "spawned"),
        ("spawn", "single", None),
    ],
)
def test_the_fork_server_starts_with_the_runner_and_no_worker_starts_one(
    start_method: str, threads: str, server: str | None, tmp_path: Path
) -> None:
    script = tmp_path / "my_flow.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), start_method, threads],
        cwd=tmp_path,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    if server is None:
        assert seen["server"] is None
    elif server == "copy":
        assert seen["server"] == seen["script"], seen
    else:
        assert "from multiprocessing.forkserver import main" in seen["server"], seen
    # No worker started a fork server (or anything else), and each collects garbage, as a
    # worker of a spawned fork server does, also when the copy was made with the collector off.
    assert seen["workers"] == [{"children": [], "collector": True}] * 2


SLOW_SCRIPT = """\
import time
from prefect import flow, task
from poolflow import MultiprocessingTaskRunner


@task
def nap(x: int) -> int:
    time.sleep(0.2)
    return x


@flow(task_runner=MultiprocessingTaskRunner(2))
def naps() -> list[int]:
    return [future.result() for future in nap.map(range(1000))]


if __name__ == "__main__":
    naps()
"""


@pytest.mark.usefixtures("prefect_api")
def test_a_script_killed_with_sigkill_leaves_neither_its_fork_server_nor_its_workers(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    script = tmp_path / "my_flow.py"
    script.write_text(SLOW_SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**os.environ, "POOLFLOW_TEST_MARK": mark},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while len(_marked(mark)) < 5:  # the script, its resource tracker, fork server and workers
            assert process.poll() is None and time.monotonic() < deadline, _marked(mark)
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    deadline = time.monotonic() + 30
    while _marked(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _marked(mark) == []


def _marked(mark: str) -> list[str]:
    """The command lines of the live processes started with ``mark`` in their environment."""
    found = []
    for process in psutil.process_iter():
        try:
            if (
                process.environ().get("POOLFLOW_TEST_MARK") == mark
                and process.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(" ".join(process.cmdline()))
        except psutil.Error:
            continue
    return found
