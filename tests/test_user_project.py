"""poolflow in a user's own project folder, whose modules have everyday names.

Installing poolflow adds one import package, ``poolflow``; a project's own ``tasks.py``,
``runners.py``, ``flows/`` and ``deployments/`` stay the project's, in the flow process and in
the runner's worker processes, and the ``poolflow`` command works from that folder too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import prefect_free_env

POOLFLOW = str(Path(sys.executable).parent / "poolflow")

USER_FILES = {
    "tasks.py": "def double(x):\n    return 2 * x\n",
    "runners.py": "RUNNER_NAME = 'the user s own runners module'\n",
    "flows/__init__.py": "",
    "flows/offsets.py": "def offset():\n    return 1000\n",
    "deployments/__init__.py": "SCHEDULE = 'nightly'\n",
    "my_flow.py": """\
import sys

from prefect import flow, task

import deployments
import runners
import tasks
from flows.offsets import offset
from poolflow import MultiprocessingTaskRunner


@task
def work(x):
    # Runs in a worker process: the user's modules must be the user's there too.
    return tasks.double(x) + offset(), sys.modules["tasks"].__file__


@flow(task_runner=MultiprocessingTaskRunner(processes=2))
def my_flow(n):
    return [future.result() for future in work.map(range(n))]


if __name__ == "__main__":
    results = my_flow(6)
    print("values", [value for value, _ in results])
    print("worker tasks modules", sorted({path for _, path in results}))
    print("runners", runners.RUNNER_NAME, deployments.SCHEDULE)
""",
}


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    for name, text in USER_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def _env(tmp_path: Path, api_url: str) -> dict[str, str]:
    return prefect_free_env(tmp_path / "home", PREFECT_API_URL=api_url)


def test_a_flow_script_in_a_project_with_its_own_tasks_runners_flows_and_deployments(
    user_project: Path, tmp_path: Path, prefect_server: str
) -> None:
    done = subprocess.run(
        [sys.executable, "my_flow.py"],
        cwd=user_project,
        env=_env(tmp_path, prefect_server),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "values [1000, 1002, 1004, 1006, 1008, 1010]" in lines
    assert f"worker tasks modules ['{user_project / 'tasks.py'}']" in lines
    assert "runners the user s own runners module nightly" in lines


def test_the_poolflow_command_from_that_project_folder(
    user_project: Path, tmp_path: Path, prefect_server: str
) -> None:
    env = _env(tmp_path, prefect_server)
    subprocess.run(
        [POOLFLOW, "sample", "corpus", "--files", "2", "--docs", "3"], cwd=user_project, env=env, check=True
    )
    done = subprocess.run(
        [POOLFLOW, "run", "corpus", "-o", "out", "--processes", "2"],
        cwd=user_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (user_project / "out" / "report.xlsx").stat().st_size > 0
    assert sorted(p.name for p in (user_project / "out" / "items" / "AA").iterdir()) == [
        "wiki_00.xlsx",
        "wiki_01.xlsx",
    ]


def test_nothing_but_poolflow_is_installed_as_a_top_level_package() -> None:
    from importlib.metadata import distribution

    top_level = distribution("poolflow").read_text("top_level.txt")
    assert top_level is not None and top_level.split() == ["poolflow"]
    for name in ("tasks", "flows", "runners", "deployments"):
        found = subprocess.run(
            [sys.executable, "-c", f"import importlib.util; print(importlib.util.find_spec({name!r}))"],
            cwd="/",
            capture_output=True,
            text=True,
            check=True,
        )
        assert found.stdout.strip() == "None"
