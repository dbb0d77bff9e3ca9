"""The API server a ``poolflow`` command starts: first runs start, and it dies with the command."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

POOLFLOW = str(Path(sys.executable).parent / "poolflow")
FIRST_RUN_TIMEOUT = 900  # generous: the point is that poolflow itself does not give up


def _env(prefect_home: Path) -> dict[str, str]:
    env = {**os.environ, "PREFECT_HOME": str(prefect_home)}
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", None)
    return env


@pytest.fixture
def busy_cores() -> Iterator[None]:
    """Both cores kept busy by other work, as on a machine where something else runs."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)
    ]
    yield
    for spinner in spinners:
        spinner.kill()
        spinner.wait()


@pytest.mark.slow
@pytest.mark.soak
def test_first_runs_start_with_fresh_prefect_homes_on_a_busy_machine(
    tmp_path: Path, busy_cores: None
) -> None:
    """run, demo and tuple-report, each with a new PREFECT_HOME, at once, with both cores busy."""
    corpus = tmp_path / "corpus"
    subprocess.run([POOLFLOW, "sample", str(corpus), "--files", "3", "--docs", "4"], check=True)
    commands = {
        "run": ["run", str(corpus), "-o", str(tmp_path / "out"), "--processes", "2"],
        "demo": ["demo", "--items", "2", "--processes", "2", "--max-seconds", "0.1"],
        "tuple-report": ["tuple-report", "-o", str(tmp_path / "abc.xlsx"), "--processes", "2"],
    }
    started = {
        name: subprocess.Popen(
            [POOLFLOW, *args],
            env=_env(tmp_path / f"home-{name}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in commands.items()
    }
    for name, process in started.items():
        _, stderr = process.communicate(timeout=FIRST_RUN_TIMEOUT)
        assert process.returncode == 0, f"{name}: {stderr[-3000:]}"
        assert "creating Prefect's database" in stderr, name
        assert (tmp_path / f"home-{name}" / "prefect.db").exists()
    assert (tmp_path / "out" / "report.xlsx").exists()
    assert (tmp_path / "abc.xlsx").exists()


@pytest.mark.slow
@pytest.mark.soak
def test_two_first_runs_on_one_new_prefect_home_both_start(tmp_path: Path) -> None:
    """The second waits for the first to create the database instead of racing its migrations."""
    env = _env(tmp_path / "home")
    args = [POOLFLOW, "demo", "--items", "2", "--processes", "1", "--max-seconds", "0.1"]
    runs = [subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    stderrs = [run.communicate(timeout=FIRST_RUN_TIMEOUT)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], stderrs
    assert sum("creating Prefect's database" in stderr for stderr in stderrs) == 1


def _api_server_of(command: psutil.Process, timeout: float) -> psutil.Process:
    """The ``poolflow.api_server`` child serving ``command``'s API, once it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in command.children(recursive=True):
            try:
                if "poolflow.api_server" in child.cmdline():
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.2)
    raise TimeoutError("the command's API server did not appear")


def _copies_of(command: psutil.Process) -> list[psutil.Process]:
    """``command``'s descendants running its own command line: forked, not started anew."""
    copies = []
    for child in command.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.cmdline() == command.cmdline():
                copies.append(child)
    return copies


def test_sigkill_of_the_command_takes_its_api_server_and_workers_along(tmp_path: Path) -> None:
    env = _env(tmp_path / "home")
    command = subprocess.Popen(
        [POOLFLOW, "demo", "--items", "4", "--processes", "2", "--max-seconds", "60"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    parent = psutil.Process(command.pid)
    server = _api_server_of(parent, timeout=FIRST_RUN_TIMEOUT)
    # The fork server and the two workers are copies of the command, made once it imported
    # Prefect, not an interpreter importing it again while the API server starts
    # (poolflow.warm_start).
    deadline = time.monotonic() + FIRST_RUN_TIMEOUT
    while len(_copies_of(parent)) < 3 and command.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    family = parent.children(recursive=True)
    assert server in family and len(_copies_of(parent)) >= 3, [p.cmdline() for p in family]
    os.kill(command.pid, signal.SIGKILL)
    command.wait()
    gone, alive = psutil.wait_procs(family, timeout=20)
    assert alive == [], [p.cmdline() for p in alive]
    assert server in gone
