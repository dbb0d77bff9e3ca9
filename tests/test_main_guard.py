"""A flow script without ``if __name__ == "__main__":`` fails at once, naming the guard."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from helpers import prefect_free_env

from poolflow.runners.main_guard import GUARD

SCRIPT = """\
from prefect import flow, task

from poolflow import MultiprocessingTaskRunner


@task
def square(x):
    return x * x


@flow(name="{name}", task_runner=MultiprocessingTaskRunner(processes=2))
def squares(n):
    return sum(future.result() for future in square.map(range(n)))


def main():
    print("sum", squares(5))

"""
UNGUARDED = "main()\n"
GUARDED = 'if __name__ == "__main__":\n    main()\n'


def _flow_run_states(api_url: str, flow_name: str) -> list[str]:
    body = {"flows": {"name": {"any_": [flow_name]}}}
    runs = httpx.post(f"{api_url}/flow_runs/filter", json=body, timeout=30).json()
    return sorted(run["state_type"] for run in runs)


def _run(
    tmp_path: Path, text: str, api_url: str
) -> tuple[subprocess.CompletedProcess[str], float, list[int]]:
    script = tmp_path / "my_flow.py"
    script.write_text(text)
    env = prefect_free_env(tmp_path / "home", PREFECT_API_URL=api_url)
    before = {p.pid for p in psutil.process_iter()}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    seconds = time.monotonic() - started
    new = [p for p in psutil.process_iter() if p.pid not in before]
    left = [p.pid for p in new if _cwd_of(p) == str(tmp_path)]
    return done, seconds, left


def _cwd_of(process: psutil.Process) -> str | None:
    try:
        return process.cwd()
    except psutil.Error:
        return None


def test_a_script_without_the_guard_fails_in_seconds_with_one_line_naming_it(
    tmp_path: Path, prefect_server: str
) -> None:
    name = f"unguarded-{tmp_path.name}"
    text = SCRIPT.format(name=name) + UNGUARDED
    call_line = len(text.splitlines())
    done, seconds, left = _run(tmp_path, text, prefect_server)
    assert done.returncode == 1
    assert seconds < 60
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"poolflow: {tmp_path / 'my_flow.py'}, line {call_line}, runs a flow")
    assert last.endswith(f"put the call under {GUARD}")
    assert _flow_run_states(prefect_server, name) == ["CRASHED"]
    assert left == []


@pytest.mark.parametrize("guarded", [GUARDED, 'if "__main__" == __name__:\n    main()\n'])
def test_a_guarded_script_runs(tmp_path: Path, prefect_server: str, guarded: str) -> None:
    name = f"guarded-{tmp_path.name}"
    done, _, _ = _run(tmp_path, SCRIPT.format(name=name) + guarded, prefect_server)
    assert done.returncode == 0, done.stderr
    assert "sum 30" in done.stdout.splitlines()
    assert _flow_run_states(prefect_server, name) == ["COMPLETED"]
