"""Helpers the tests share: real servers started and stopped, ports, HTTP waits."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import psutil


def alive(pids: list[int]) -> list[int]:
    """The processes of ``pids`` still running: not gone, not a zombie, not being torn down
    (``/proc/PID`` still there without its ``stat``: psutil re-raises that FileNotFoundError)."""
    return [pid for pid in pids if _running(pid)]


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, FileNotFoundError):
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout: float = 90.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200 or ``timeout`` passes; with ``process`` (the server),
    fail at once if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the server of {url} exited with {process.returncode}") from None
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Stop ``process`` and every process it started (it leads its own group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


class PrefectServer:
    """``prefect server start`` on ``port`` with its database in ``home``; restartable."""

    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.port = port
        self.api_url = f"http://127.0.0.1:{port}/api"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": self.api_url,  # the UI's pages call back here
        }
        env.pop("PREFECT_API_URL", None)
        self._log = open(self.home / "server.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # A first start creates the database: minutes on a loaded 2-core machine (CI's four
        # test processes each start one), so it gets as long as it lives, within reason.
        try:
            wait_for_http(f"{self.api_url}/health", timeout=600, process=self.process)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}; its log:\n{(self.home / 'server.log').read_text()[-3000:]}") from exc

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None


def run_without_file_permission_override(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run Python ``script`` so that file modes apply: as root, without CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH (through which root reads anything)."""
    caps = "-dac_override,-dac_read_search"
    drop = ["setpriv", "--bounding-set", caps, "--inh-caps", caps, "--"] if os.geteuid() == 0 else []
    return subprocess.run([*drop, sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd)


def prefect_free_env(home: Path, **settings: str) -> dict[str, str]:
    """This process's environment without any Prefect setting, with ``home`` as Prefect's home,
    analytics off and ``settings`` added: a user's shell with nothing configured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", **settings)
    return env


POWER_TASKS = """\
@task
def square(x):
    return x * x


@task
async def cube(x):
    await asyncio.sleep(0.01)
    return x * x * x
"""
"""A user script's two tasks, one sync and one async (the script imports ``asyncio`` and
``task``)."""


def run_user_script(
    folder: Path, name: str, text: str, api_url: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """Write ``text`` as ``folder/name`` and run it as a user would, ``python name args``, from
    ``folder`` in a shell whose only Prefect setting is ``api_url``; its output collected."""
    (folder / name).write_text(text)
    return subprocess.run(
        [sys.executable, name, *args],
        cwd=folder,
        env=prefect_free_env(folder / "home", PREFECT_API_URL=api_url),
        capture_output=True,
        text=True,
        timeout=300,
        # SIGINT as a terminal's shell leaves it, also when the tests were started in the
        # background (a non-interactive shell's background job ignores it, and so would the script).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def run_temp_folder() -> Path:
    """The test run's temp folder, removed at its end (``conftest``; the system's outside pytest)."""
    return Path(os.environ.get("POOLFLOW_TEST_TMP") or tempfile.gettempdir())


@functools.cache
def _migrated_template() -> Path:
    """A Prefect home whose database a command's API server has created: made once per test
    run (pytest-xdist's workers share it, under a lock; the first to ask makes it), then only
    copied. Migrating a new database costs about 10 CPU-seconds, which every test process
    would otherwise pay for each home it starts a server in."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", f"pid{os.getpid()}")
    home = run_temp_folder() / f"poolflow-test-template-{run}"
    made = home / "made"
    with open(f"{home}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not made.exists():
            home.mkdir(exist_ok=True)
            script = "from poolflow.local_api import local_api\nwith local_api(say=print):\n    pass\n"
            command = [sys.executable, "-c", script]
            subprocess.run(command, env=prefect_free_env(home), check=True, capture_output=True, timeout=600)
            made.touch()
    return home


def seeded_home(home: Path) -> Path:
    """``home`` with a current Prefect database in it, as a previous command leaves it.

    For tests of what a command does once Prefect's database exists: creating it (about
    10 CPU-seconds of migrations) is tested where it is the subject (``test_local_api``,
    ``test_a_current_database_skips_migrations_and_keeps_every_task_run``).
    """
    from poolflow import database_stamp

    home.mkdir(parents=True, exist_ok=True)
    with (
        contextlib.closing(sqlite3.connect(_migrated_template() / "prefect.db")) as source,
        contextlib.closing(sqlite3.connect(home / "prefect.db")) as copy,
    ):
        source.backup(copy)
    database_stamp.write_stamp(home, home / "prefect.db")
    return home


def started_workers(pool: Any, timeout: float = 60.0) -> list[int]:
    """The PIDs of ``pool``'s workers once its manager thread has started all of them."""
    deadline = time.monotonic() + timeout
    while len(pids := pool.worker_pids()) < pool.processes and time.monotonic() < deadline:
        time.sleep(0.01)
    return list(pids)
