"""``poolflow exec -- CMD`` and ``prefect_api()``: a user's own flows on the command's API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
from helpers import prefect_free_env, seeded_home

POOLFLOW = str(Path(sys.executable).parent / "poolflow")

FLOW_SCRIPT = """\
from prefect import flow, task
from prefect.settings import PREFECT_API_URL

from poolflow import MultiprocessingTaskRunner


@task
def square(x):
    return x * x


@flow(task_runner=MultiprocessingTaskRunner(processes=2))
def squares(n):
    return sum(future.result() for future in square.map(range(n)))


if __name__ == "__main__":
    print("sum", squares(20))
    print("api", PREFECT_API_URL.value())
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "my_flow.py").write_text(FLOW_SCRIPT)
    return tmp_path


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    return prefect_free_env(tmp_path / "home", **settings)


def _lines(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)


def test_exec_runs_a_flow_script_on_the_commands_own_api_and_leaves_nothing_behind(project: Path) -> None:
    before = {p.pid for p in psutil.process_iter()}
    done = subprocess.run(
        [POOLFLOW, "exec", "--", sys.executable, "my_flow.py"],
        cwd=project,
        env=_env(project),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = _lines(done)
    assert lines["sum"] == str(sum(x * x for x in range(20)))
    assert lines["api"].startswith("http://127.0.0.1:") and lines["api"].endswith("/api")
    assert "Starting temporary server" not in done.stderr  # not Prefect's ephemeral server
    assert (project / "home" / "prefect.db").stat().st_size > 0
    # The server finishes its shutdown on its own, within its 10 s grace; workers are gone.
    ours = [p for p in psutil.process_iter() if p.pid not in before and _home_of(p) == str(project / "home")]
    _, alive = psutil.wait_procs(ours, timeout=15)
    assert [p.cmdline() for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


def _home_of(process: psutil.Process) -> str | None:
    """The ``PREFECT_HOME`` a process runs with (None if it is gone or not readable)."""
    try:
        return process.environ().get("PREFECT_HOME")
    except psutil.Error:
        return None


def test_exec_keeps_the_commands_exit_code(project: Path) -> None:
    seeded_home(project / "home")
    code = "import sys; sys.exit(7)"
    done = subprocess.run(
        [POOLFLOW, "exec", "--", sys.executable, "-c", code], env=_env(project), timeout=120
    )
    assert done.returncode == 7


def test_exec_with_a_configured_api_runs_the_script_against_it(project: Path, prefect_server: str) -> None:
    count = httpx.post(f"{prefect_server}/flow_runs/count", json={}, timeout=30).json()
    done = subprocess.run(
        [POOLFLOW, "exec", "--", sys.executable, "my_flow.py"],
        cwd=project,
        env=_env(project, PREFECT_API_URL=prefect_server),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert _lines(done)["api"] == prefect_server
    assert httpx.post(f"{prefect_server}/flow_runs/count", json={}, timeout=30).json() == count + 1
    assert not (project / "home" / "prefect.db").exists()


def test_prefect_api_points_this_processes_prefect_at_the_commands_server(project: Path) -> None:
    seeded_home(project / "home")
    script = (
        "import runpy\n"
        "from poolflow import prefect_api\n"
        "with prefect_api() as url:\n"
        "    print('url', url)\n"
        "    runpy.run_path('my_flow.py', run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=project,
        env=_env(project),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = _lines(done)
    assert lines["url"] == lines["api"] and lines["api"].startswith("http://127.0.0.1:")
    assert lines["sum"] == str(sum(x * x for x in range(20)))
