"""Ctrl-C and SIGTERM as a terminal sends them: to the whole foreground process group.

Each command runs on a real pseudo-terminal (``pty.fork``) with no API configured, so the
command starts its own API server; the signal goes to the terminal's process group.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
from helpers import prefect_free_env
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName

from poolflow.runners.interrupt_line import LINE

BIN = Path(sys.executable).parent
POOLFLOW = str(BIN / "poolflow")

USER_FLOW = """\
import time

from prefect import flow, task

from poolflow import MultiprocessingTaskRunner


@task
def nap(x):
    time.sleep(0.5)
    return x


@flow(task_runner=MultiprocessingTaskRunner(processes=2))
def long_flow():
    return [future.result() for future in nap.map(range(400))]


if __name__ == "__main__":
    long_flow()
"""


class Terminal:
    """A command on a pseudo-terminal of its own, its output collected."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the terminal's session leader
            # As a shell does for a foreground job: Ctrl-C's default action, even when the
            # tests themselves were started in the background (which ignores SIGINT).
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        self.output = b""
        self.code: int | None = None
        self.seconds = 0.0  # from the signal to the exit

    def read(self, seconds: float, until: bytes | None = None) -> None:
        """Collect output for ``seconds``, or until ``until`` appears or the terminal closes."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and until in self.output):
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    return
                if not data:
                    return
                self.output += data

    def signal_group(self, signum: int) -> None:
        os.killpg(self.pid, signum)

    def wait(self, seconds: float) -> int:
        self.read(seconds)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
                return self.code
            time.sleep(0.05)
        # The whole group: a process left running would fail the next tests, which share
        # this module's Prefect home.
        os.killpg(self.pid, signal.SIGKILL)
        raise AssertionError(f"still running {seconds} s after the signal:\n{self.text[-2000:]}")

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace").replace("\r\n", "\n")


def _left_behind(home: Path) -> list[str]:
    """Processes still running with this ``PREFECT_HOME`` (the command's server, workers, ...)."""
    left = []
    for process in psutil.process_iter():
        try:
            if (
                process.environ().get("PREFECT_HOME") == str(home)
                and process.status() != psutil.STATUS_ZOMBIE
            ):
                left.append(" ".join(process.cmdline()))
        except psutil.Error:
            continue
    return left


def _flow_run_states(home: Path) -> list[str]:
    with sqlite3.connect(home / "prefect.db") as db:
        return [row[0] for row in db.execute("select state_type from flow_run")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    os.system(f"{POOLFLOW} sample {folder} --files 60 --docs 150 >/dev/null")
    return folder


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Prefect home for the module: its database is created once."""
    return tmp_path_factory.mktemp("prefect-home")


def _env(home: Path) -> dict[str, str]:
    return prefect_free_env(home, TERM="dumb")


def _interrupt(
    argv: list[str],
    home: Path,
    cwd: Path,
    signum: int,
    ready: bytes | Path,
    twice: bool = False,
    api_url: str | None = None,
) -> Terminal:
    """Run ``argv`` on a terminal until ``ready`` (a line it prints, or an output folder holding
    three artifacts), then send ``signum`` to its group (twice: a second time 0.2 s later).
    With ``api_url``, the command runs against that API."""
    env = _env(home) if api_url is None else {**_env(home), "PREFECT_API_URL": api_url}
    terminal = Terminal(argv, env, cwd)
    if isinstance(ready, bytes):
        terminal.read(300, until=ready)
        assert ready in terminal.output, terminal.text[-2000:]
        terminal.read(1.5)
    else:
        deadline = time.monotonic() + 300
        while len(list(ready.rglob("*.xlsx"))) < 3 and time.monotonic() < deadline:
            terminal.read(0.1)
    started = time.monotonic()
    terminal.signal_group(signum)
    if twice:
        time.sleep(0.2)
        terminal.signal_group(signum)
    terminal.wait(30)
    terminal.seconds = time.monotonic() - started
    return terminal


CASES = [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]


@pytest.mark.soak
@pytest.mark.parametrize(("signum", "code", "word"), CASES)
def test_poolflow_run_stops_within_seconds_marks_its_run_and_resumes(
    tmp_path: Path, corpus: Path, home: Path, signum: int, code: int, word: str
) -> None:
    out = tmp_path / "out"
    argv = [POOLFLOW, "run", str(corpus), "-o", str(out), "--processes", "2"]
    terminal = _interrupt(argv, home, tmp_path, signum, ready=out)
    assert terminal.code == code, terminal.text[-2000:]
    assert terminal.seconds < 8
    assert "Traceback" not in terminal.text
    assert terminal.text.strip().splitlines()[-1] == f"poolflow: {word}; rerun the same command to resume"
    time.sleep(0.5)
    assert _left_behind(home) == []
    assert "RUNNING" not in _flow_run_states(home)
    assert not [p for p in out.rglob("*") if p.name.startswith(".") and p.is_file() and "tmp" in p.name]
    done = [p for p in out.rglob("*.xlsx") if not p.name.startswith(".")]

    rerun = Terminal(argv, _env(home), tmp_path)
    assert rerun.wait(300) == 0, rerun.text[-2000:]
    assert f"{len(done)} skipped as current" in rerun.text


def test_a_second_ctrl_c_stops_at_once(tmp_path: Path, corpus: Path, home: Path) -> None:
    out = tmp_path / "out"
    argv = [POOLFLOW, "run", str(corpus), "-o", str(out), "--processes", "2"]
    terminal = _interrupt(argv, home, tmp_path, signal.SIGINT, ready=out, twice=True)
    assert terminal.code == 130
    assert terminal.seconds < 8
    time.sleep(0.5)
    assert _left_behind(home) == []


@pytest.mark.parametrize(("signum", "code", "word"), CASES)
def test_poolflow_demo_stops_within_seconds(
    tmp_path: Path, home: Path, signum: int, code: int, word: str
) -> None:
    argv = [POOLFLOW, "demo", "--items", "400", "--processes", "2", "--max-seconds", "1"]
    terminal = _interrupt(argv, home, tmp_path, signum, ready=b"Beginning flow run")
    assert terminal.code == code, terminal.text[-2000:]
    assert terminal.seconds < 8
    assert terminal.text.strip().splitlines()[-1] == f"poolflow: {word}; rerun the same command to resume"
    time.sleep(0.5)
    assert _left_behind(home) == []
    assert "RUNNING" not in _flow_run_states(home)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_users_script_under_poolflow_exec_stops_within_seconds(
    tmp_path: Path, home: Path, signum: int, code: int
) -> None:
    (tmp_path / "long_flow.py").write_text(USER_FLOW)
    argv = [POOLFLOW, "exec", "--", sys.executable, "long_flow.py"]
    terminal = _interrupt(argv, home, tmp_path, signum, ready=b"Beginning flow run")
    assert terminal.code == code, terminal.text[-2000:]
    assert terminal.seconds < 8
    time.sleep(0.5)
    assert _left_behind(home) == []
    assert "RUNNING" not in _flow_run_states(home)


def _async_flow(script: str) -> str:
    """``script`` with its flow ``async``, run by ``asyncio.run``."""
    return (
        script.replace("import time", "import asyncio\nimport time")
        .replace("def long_flow", "async def long_flow")
        .replace("    long_flow()", "    asyncio.run(long_flow())")
    )


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_users_plain_script_stops_within_seconds_and_its_run_ends(
    tmp_path: Path, home: Path, prefect_api: str, signum: int, kind: str
) -> None:
    """``python long_flow.py`` against a real ``prefect server start``: ended by the signal, as
    Python ends (a shell shows 128 + signum), with no traceback: the task runs in flight end
    Crashed as the flow run does, each in one log line, not failed (SIGTERM also reaches
    multiprocessing's fork server, which dies; the workers ignore it and are stopped by the
    script). After Ctrl-C the last line is ours; after SIGTERM, Prefect's crash line. The same
    for an async flow, whose body waits on its futures without awaiting: Ctrl-C is not left to
    ``asyncio.run``'s handler, which would act only at the flow's next ``await``."""
    name = f"long-flow-{uuid.uuid4().hex[:8]}"
    script = USER_FLOW if kind == "sync" else _async_flow(USER_FLOW)
    assert kind == "sync" or "asyncio.run(long_flow())" in script
    (tmp_path / "long_flow.py").write_text(script.replace("@flow(", f"@flow(name={name!r}, "))
    argv = [sys.executable, "long_flow.py"]
    # Once items finish, the script's main thread waits on them: a signal that lands while it
    # still imports Prefect's modules fails that import, which is Python's doing, not ours.
    ready = b"Finished in state Completed"
    terminal = _interrupt(argv, home, tmp_path, signum, ready=ready, api_url=prefect_api)
    assert terminal.code == -signum, terminal.text[-2000:]
    assert terminal.seconds < 5
    assert "Traceback" not in terminal.text and "Error" not in terminal.text, terminal.text[-3000:]
    last = terminal.text.strip().splitlines()[-1]
    if signum == signal.SIGINT:
        assert last == LINE
    else:  # Prefect's engine ends the process by the signal itself, after its crash line
        assert last.endswith("Finished in state Crashed('Execution was aborted by a termination signal.')")
    crashed = terminal.text.count("Crash detected! Execution was aborted by")
    assert crashed >= 2, "the task runs in flight and the flow run"
    time.sleep(0.5)
    assert _left_behind(home) == []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))
    assert [run.state_type.value if run.state_type else None for run in runs] == ["CRASHED"]


RETRYING_FLOW = """\
import sys

from prefect import flow, task
from prefect.task_runners import ProcessPoolTaskRunner

from poolflow import MultiprocessingTaskRunner


@task(retries=1, retry_delay_seconds=600)
def fails_once(x):
    raise ValueError("the first attempt fails")


RUNNER = MultiprocessingTaskRunner(2) if sys.argv[1] == "poolflow" else ProcessPoolTaskRunner(2)


@flow(name=sys.argv[2], task_runner=RUNNER)
def retrying():
    return [future.result() for future in fails_once.map(range(2))]


if __name__ == "__main__":
    retrying()
"""


# Prefect's own runner is the control for SIGTERM only: on Ctrl-C it waits out the delay.
@pytest.mark.parametrize(
    ("runner", "signum"),
    [("poolflow", signal.SIGINT), ("poolflow", signal.SIGTERM), ("prefect", signal.SIGTERM)],
)
def test_a_flow_waiting_out_a_retry_delay_stops_within_seconds(
    tmp_path: Path, home: Path, prefect_api: str, runner: str, signum: int
) -> None:
    """Task runs whose retry is ten minutes away do not hold up a script ended by a signal: it
    ends as Python ends, and its flow run is recorded Crashed."""
    name = f"retrying-{uuid.uuid4().hex[:8]}"
    (tmp_path / "retrying.py").write_text(RETRYING_FLOW)
    argv = [sys.executable, "retrying.py", runner, name]
    terminal = _interrupt(argv, home, tmp_path, signum, ready=b"Retry 1/1 will start", api_url=prefect_api)
    assert terminal.code == -signum, terminal.text[-2000:]
    assert terminal.seconds < 8
    time.sleep(0.5)
    assert _left_behind(home) == []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))
    assert [run.state_type.value if run.state_type else None for run in runs] == ["CRASHED"]


@pytest.mark.parametrize(("signum", "code", "word"), CASES)
def test_poolflow_serve_stops_within_seconds_and_pauses_its_deployments(
    tmp_path: Path, corpus: Path, home: Path, signum: int, code: int, word: str
) -> None:
    argv = [POOLFLOW, "serve", "--input-dir", str(corpus), "--output-dir", str(tmp_path / "out")]
    terminal = _interrupt(argv, home, tmp_path, signum, ready=b"prefect deployment run")
    assert terminal.code == code, terminal.text[-2000:]
    assert terminal.seconds < 8
    assert "Traceback" not in terminal.text, terminal.text[-2000:]
    last = terminal.text.strip().splitlines()[-1]
    assert last == f"poolflow: {word}; the deployments are paused until the next serve"
    # The API server cancels the runner's event subscription after a second of shutdown.
    deadline = time.monotonic() + 5 - terminal.seconds
    while _left_behind(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _left_behind(home) == [], "still running 5 s after the signal"
    with sqlite3.connect(home / "prefect.db") as db:
        paused = [row[0] for row in db.execute("select paused from deployment")]
    assert paused and all(paused), "every served deployment is paused"


CAUGHT = """\
import sys

from prefect import flow

from poolflow import MultiprocessingTaskRunner


@flow(task_runner=MultiprocessingTaskRunner(processes=1))
def interrupted():
    raise KeyboardInterrupt


if __name__ == "__main__":
    hook = sys.excepthook
    try:
        interrupted()
    except KeyboardInterrupt:
        print("caught; hook restored on the next exception")
    raise ValueError("the script's own error")
"""


PREFECT_LOG_LINE = re.compile(r"\d\d:\d\d:\d\d\.\d{3} \| [A-Z]+ +\| ")


def test_a_ctrl_c_the_script_catches_leaves_its_other_errors_as_python_prints_them(
    tmp_path: Path, prefect_api: str
) -> None:
    (tmp_path / "caught.py").write_text(CAUGHT)
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    script = subprocess.run(
        [sys.executable, "caught.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert script.returncode == 1, script.stderr[-3000:]
    assert "caught; hook restored" in script.stdout
    # Python's traceback, then at most the log lines Prefect's exit writes (its events worker
    # warns when a flow run's heartbeat is still queued, as a plain Prefect flow's does).
    lines = script.stderr.splitlines()
    assert "ValueError: the script's own error" in lines, script.stderr[-3000:]
    after = lines[lines.index("ValueError: the script's own error") + 1 :]
    assert all(PREFECT_LOG_LINE.match(line) for line in after), script.stderr[-3000:]
    assert "Traceback" in script.stderr and LINE not in script.stderr
