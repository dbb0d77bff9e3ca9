"""The API server a command keeps for the next ones (``poolflow.kept_api``): reused while its
settings hold, ended when idle, and at once when a command using it dies."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import psutil
import pytest
from helpers import prefect_free_env, seeded_home
from test_script_api import FLOW_SCRIPT

from poolflow import kept_api
from poolflow.command_environment import TERMINAL_ONLY

POOLFLOW = str(Path(sys.executable).parent / "poolflow")

SUM_OF_SQUARES = str(sum(x * x for x in range(20)))  # what FLOW_SCRIPT prints


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A project folder with a flow script and a current Prefect home; every API server
    started on that home is killed at the end."""
    (tmp_path / "my_flow.py").write_text(FLOW_SCRIPT)
    seeded_home(tmp_path / "home")
    yield tmp_path
    for process in psutil.process_iter(["cmdline"]):
        if str(tmp_path / "home") in (process.info["cmdline"] or []):
            process.kill()


def _env(project: Path, idle: str = "600", **settings: str) -> dict[str, str]:
    return prefect_free_env(project / "home", POOLFLOW_API_IDLE=idle, **settings)


class Run(NamedTuple):
    pid: int  # of the kept server
    api: str  # the URL the flow ran on
    stderr: str


def _exec_flow(project: Path, env: dict[str, str]) -> Run:
    """``poolflow exec -- python my_flow.py``, which must succeed."""
    done = subprocess.run(
        [POOLFLOW, "exec", "--", sys.executable, "my_flow.py"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    assert lines["sum"] == SUM_OF_SQUARES
    return Run(_kept(project).pid, lines["api"], done.stderr)


def _kept(project: Path) -> kept_api.KeptServer:
    server = kept_api.recorded(project / "home")
    assert server is not None, "a server is recorded"
    return server


def _ends_within(pid: int, seconds: float) -> bool:
    try:
        psutil.Process(pid).wait(timeout=seconds)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        return False
    return True


def test_the_next_command_and_a_python_caller_use_the_server_the_first_command_kept(project: Path) -> None:
    env = _env(project)
    first = _exec_flow(project, env)
    assert "stays up 600 s after the last command" in first.stderr
    pid = first.pid
    assert psutil.Process(pid).is_running(), "kept after its command ended"
    second_pid, second_url, said = _exec_flow(project, env)
    assert second_pid == pid and second_url == f"http://127.0.0.1:{_kept(project).port}/api"
    assert "stays up" not in said, "no server started"
    caller = (
        "import runpy\nfrom poolflow import prefect_api\nwith prefect_api() as url:\n"
        "    print('url', url)\n    runpy.run_path('my_flow.py', run_name='__main__')\n"
    )
    caller_command = [sys.executable, "-c", caller]
    done = subprocess.run(caller_command, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"url {second_url}" in done.stdout and "stays up" not in done.stderr
    assert _kept(project).pid == pid
    assert not list((project / "home" / kept_api.STATE_DIR / "users").iterdir()), "clean ends leave no marker"


def test_quiet_and_verbose_commands_share_one_server(project: Path) -> None:
    """``run`` sets quieter terminal logging than other commands (``command_environment``);
    the server does not print to any terminal, so one serves both."""
    env = _env(project)

    def poolflow(*argv: str) -> str:
        done = subprocess.run(
            [POOLFLOW, *argv], cwd=project, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        return done.stderr

    poolflow("sample", "corpus", "--files", "2", "--docs", "3")
    assert "stays up" in poolflow("run", "corpus", "-o", "out")
    pid = _kept(project).pid
    said = poolflow("demo", "--items", "2", "--max-seconds", "0.1", "--processes", "2")
    assert "stays up" not in said and _kept(project).pid == pid
    assert "stays up" not in poolflow("run", "corpus", "-o", "out2", "-v") and _kept(project).pid == pid


def test_poolflow_stop_api_stops_the_kept_server_now(project: Path) -> None:
    env = _env(project)
    pid, url, _ = _exec_flow(project, env)
    done = subprocess.run([POOLFLOW, "stop-api"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and f"stopped the API server on port {url.split(':')[2][:-4]}" in done.stderr
    assert _ends_within(pid, 30)
    again = subprocess.run([POOLFLOW, "stop-api"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "no API server kept on" in again.stderr


def test_an_unused_kept_server_ends_after_the_idle_time(project: Path) -> None:
    pid, _, _ = _exec_flow(project, _env(project, idle="8"))
    assert psutil.Process(pid).is_running()
    assert _ends_within(pid, 90)
    assert not (project / "home" / kept_api.STATE_DIR / "server.json").exists()


@pytest.mark.parametrize("how", ["kill -9 of poolflow exec", "Ctrl-C"])
def test_a_command_that_dies_using_the_kept_server_takes_it_along(project: Path, how: str) -> None:
    env = _env(project)
    pid, _, _ = _exec_flow(project, env)
    waiting = "import time\nprint('ready', flush=True)\ntime.sleep(120)\n"
    command = subprocess.Popen(
        [POOLFLOW, "exec", "--", sys.executable, "-c", waiting],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a group of its own, as a terminal's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert command.stdout is not None and command.stdout.readline() == "ready\n"
        if how == "Ctrl-C":
            os.killpg(command.pid, signal.SIGINT)
            assert command.wait(timeout=60) == 128 + signal.SIGINT
        else:
            command.kill()
            command.wait(timeout=60)
        assert _ends_within(pid, 60), "no orphan: the server went with the command using it"
    finally:
        with contextlib.suppress(ProcessLookupError):  # the sleeping script, if it outlived its command
            os.killpg(command.pid, signal.SIGKILL)
    assert not (project / "home" / kept_api.STATE_DIR / "server.json").exists()
    new_pid, _, _ = _exec_flow(project, env)
    assert new_pid != pid


def test_a_python_caller_whose_block_fails_takes_the_kept_server_along(project: Path) -> None:
    env = _env(project)
    pid, _, _ = _exec_flow(project, env)
    failing = "from poolflow import prefect_api\nwith prefect_api():\n    raise RuntimeError('broke')\n"
    command = [sys.executable, "-c", failing]
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "RuntimeError: broke" in done.stderr
    assert _ends_within(pid, 60)


def test_a_server_whose_starting_command_died_before_its_first_release_ends(project: Path) -> None:
    """Killed between starting the server and leaving its marker, the command never said it
    uses the server, nor ended cleanly: the server ends as soon as it finds the gate free."""
    dies_at_once = (
        "import os\nfrom poolflow import kept_api\nfrom poolflow.local_api import LocalApiServer\n"
        "from poolflow.prefect_settings import read_api_settings\n"
        "kept_api.Lease.use = lambda lease, pid: (print(pid, flush=True), os._exit(9))\n"
        "LocalApiServer(print).start(read_api_settings())\n"
    )
    command = [sys.executable, "-c", dies_at_once]
    done = subprocess.run(command, env=_env(project), capture_output=True, text=True, timeout=300)
    assert done.returncode == 9, done.stderr
    assert _ends_within(int(done.stdout.strip()), 60)


@pytest.mark.soak
def test_a_kept_server_that_died_serves_other_settings_or_an_old_database_is_replaced(project: Path) -> None:
    env = _env(project)
    dead, _, _ = _exec_flow(project, env)
    psutil.Process(dead).kill()
    assert _ends_within(dead, 30)
    replacement, _, _ = _exec_flow(project, env)
    assert replacement != dead

    other_settings, _, _ = _exec_flow(project, {**env, "PREFECT_LOGGING_LEVEL": "WARNING"})
    assert other_settings != replacement
    assert psutil.Process(replacement).is_running(), "left to end once idle, not killed under a user"

    database = project / "home" / "prefect.db"
    copy = database.with_name("copy.db")
    copy.write_bytes(database.read_bytes())
    copy.replace(database)  # a restored backup: another file under the same name
    restored, _, _ = _exec_flow(project, {**env, "PREFECT_LOGGING_LEVEL": "WARNING"})
    assert restored != other_settings


def test_the_fingerprint_follows_prefects_settings_and_not_the_idle_time_or_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = kept_api.fingerprint()
    monkeypatch.setenv("POOLFLOW_API_IDLE", "5")
    for name in TERMINAL_ONLY:
        monkeypatch.setenv(name, "CRITICAL")
    assert kept_api.fingerprint() == before
    (tmp_path / "prefect.toml").write_text('[server.database]\nconnection_url = "sqlite+aiosqlite:///x.db"\n')
    in_toml = kept_api.fingerprint()
    assert in_toml != before
    monkeypatch.setenv("PREFECT_SERVER_DATABASE_TIMEOUT", "20")
    assert kept_api.fingerprint() not in (before, in_toml)
