"""``python -m bench.task_run_cost``: how many task runs a map makes and what they cost the server.

A user's script maps ``--items`` calls of a fixed CPU spin (``--ms`` of ``time.thread_time``,
so the work is the same however busy the machine is) on ``MultiprocessingTaskRunner(2)``,
against a default ``prefect server start`` (``bench.default_server``). Per run: the task runs
the flow run made (read from the API), the script's wall, and the server's CPU seconds over
the run beside what the server spends idle over as long (measured just before it). Each task
run costs the server its state events, whatever the number of items it holds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

from bench.default_server import default_server
from bench.homes import fresh_home

SPIN_TASK = """
@task
def spin(x):
    end = time.thread_time() + float(sys.argv[2]) / 1000
    while time.thread_time() < end:
        pass
    return x
"""
"""A user's task: ``sys.argv[2]`` milliseconds of CPU (``time.thread_time``), returning its argument."""

SCRIPT = (
    """\
import sys
import time

from prefect import flow, task
from prefect.runtime import flow_run

from poolflow import MultiprocessingTaskRunner
"""
    + SPIN_TASK
    + """

@flow(task_runner=MultiprocessingTaskRunner(2))
def spins(n):
    return flow_run.id, sum(future.result() for future in spin.map(range(n)))


if __name__ == "__main__":
    print(spins(int(sys.argv[1]))[0])
"""
)


@contextlib.contextmanager
def spin_script(script: str, items: int, ms: float) -> Iterator[tuple[list[str], Path, dict[str, str], str]]:
    """``script`` (a user's flow mapping ``SPIN_TASK``) in a fresh folder, beside a default
    ``prefect server start``, run once on one item (imports and database warm); yields the
    command mapping ``items`` spins of ``ms``, its folder, its environment and the API URL."""
    folder = Path(tempfile.mkdtemp(prefix="poolflow-spins-"))
    (folder / "spins.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=fresh_home(), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    with default_server(env) as api_url:
        env["PREFECT_API_URL"] = api_url
        command = [sys.executable, "spins.py", str(items), str(ms)]
        subprocess.run([*command[:2], "1", "0"], cwd=folder, env=env, check=True, capture_output=True)
        yield command, folder, env, api_url


def server_cpu(api_url: str) -> float:
    """CPU seconds so far of the ``prefect server start`` listening on ``api_url``'s port."""
    port = str(urlsplit(api_url).port)
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if "server" in command and "start" in command and port in command:
            return float(
                sum(p.cpu_times().user + p.cpu_times().system for p in [process, *process.children(True)])
            )
    raise RuntimeError(f"no prefect server start on port {port}")


def task_runs(api_url: str, flow_run_id: str) -> int:
    body = {"flow_runs": {"id": {"any_": [flow_run_id]}}}
    return int(httpx.post(f"{api_url}/task_runs/count", json=body, timeout=30).json())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--ms", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with spin_script(SCRIPT, args.items, args.ms) as (command, folder, env, api_url):
        for run in range(1, args.runs + 1):
            started, before = time.monotonic(), server_cpu(api_url)
            done = subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True, text=True)
            wall, used = time.monotonic() - started, server_cpu(api_url) - before
            idle_from = server_cpu(api_url)
            time.sleep(wall)
            idle = server_cpu(api_url) - idle_from
            runs = task_runs(api_url, done.stdout.split()[-1])
            print(
                f"run {run}: {args.items} items of {args.ms:g} ms, {runs} task runs, script {wall:.2f} s, "
                f"server {used:.2f} CPU-s over it ({idle:.2f} idle over as long)",
                flush=True,
            )


if __name__ == "__main__":
    main()
