"""The interpreter kept with the API server (``poolflow.warm_interpreter``): a command handed to
it runs as it would in its own process — arguments, environment, folder, streams, exit code,
signals — and a command it must not take runs in its own process, as before."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from helpers import prefect_free_env, seeded_home

from poolflow import kept_api, warm_interpreter
from poolflow.cli import _parser
from poolflow.command_environment import command_environment, verbose

POOLFLOW = str(Path(sys.executable).parent / "poolflow")

# The command handed over: reports what it was given, then does what its first argument says.
TARGET = """\
import json, os, signal, sys, time
PRELOADED = "prefect" in sys.modules  # imported by the interpreter before this command came


def main():
    try:  # a Ctrl-C any time after the report below is this command's to handle
        line = sys.stdin.readline()
        print(json.dumps({
            "preloaded": PRELOADED, "pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(),
            "argv": sys.argv[1:], "mine": os.environ.get("MY_SETTING"), "stdin": line,
        }), flush=True)
        print("to stderr", file=sys.stderr, flush=True)
        what = sys.argv[1]
        if what == "signal":
            os.kill(os.getpid(), signal.SIGTERM)
        if what == "sleep":
            time.sleep(120)
        return int(what)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 130
"""
# The command's own process: hands ``warm_target:main`` over, or says it runs it here.
CLIENT = """\
import sys
from poolflow.command_environment import command_environment
from poolflow.warm_interpreter import run_warm
run_warm("warm_target:main", command_environment)
print("here", flush=True)
"""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A project folder with the command's files and a current Prefect home; every process
    started on that home is killed at the end."""
    (tmp_path / "warm_target.py").write_text(TARGET)
    (tmp_path / "client.py").write_text(CLIENT)
    seeded_home(tmp_path / "home")
    yield tmp_path
    for process in psutil.process_iter(["cmdline"]):
        if str(tmp_path / "home") in (process.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                process.kill()


def _env(project: Path, **settings: str) -> dict[str, str]:
    return prefect_free_env(project / "home", POOLFLOW_API_IDLE="600", **settings)


def _warm(project: Path, env: dict[str, str]) -> psutil.Process:
    """Run a first command (it keeps the server and the interpreter); the interpreter, once
    it takes commands."""
    first = [POOLFLOW, "demo", "--items", "2", "--max-seconds", "0.1", "--processes", "2"]
    done = subprocess.run(first, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    server = kept_api.recorded(project / "home")
    assert server is not None
    name = warm_interpreter.socket_name(project / "home", server.pid, command_environment(["demo"], env))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
            if probe.connect_ex(name) == 0:
                break
        time.sleep(0.2)
    else:
        raise AssertionError("the warm interpreter never took commands")
    (interpreter,) = [
        p for p in _interpreters(project) if p.ppid() not in {q.pid for q in _interpreters(project)}
    ]
    return interpreter


def _interpreters(project: Path) -> list[psutil.Process]:
    """The warm interpreter of the project's home and the copies it forked."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if str(project / "home") in cmdline and any("warm_interpreter" in part for part in cmdline):
            found.append(process)
    return found


def _client(project: Path, env: dict[str, str], *argv: str, **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "client.py", *argv],
        cwd=project,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def test_a_command_runs_in_a_copy_of_the_interpreter_with_what_its_own_process_had(project: Path) -> None:
    env = _env(project, MY_SETTING="mine")
    interpreter = _warm(project, env)
    client = _client(project, env, "3", "more")
    out, err = client.communicate("a line\n", timeout=120)
    assert client.returncode == 3, err
    report = json.loads(out.splitlines()[0])
    assert report["preloaded"] and report["ppid"] == interpreter.pid != client.pid
    assert report["argv"] == ["3", "more"] and report["cwd"] == str(project)
    assert report["mine"] == "mine" and report["stdin"] == "a line\n"
    assert err == "to stderr\n"

    died = _client(project, env, "signal")
    out, _ = died.communicate("\n", timeout=120)
    assert json.loads(out)["preloaded"] and died.returncode == -signal.SIGTERM


def test_ctrl_c_reaches_the_command_and_kill_9_of_its_process_ends_it(project: Path) -> None:
    env = _env(project)
    _warm(project, env)
    interrupted = _client(
        project,
        env,
        "sleep",
        start_new_session=True,  # a group of its own, as a terminal's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert interrupted.stdin is not None and interrupted.stdout is not None
    interrupted.stdin.write("\n")
    interrupted.stdin.flush()
    assert json.loads(interrupted.stdout.readline())["preloaded"]
    os.killpg(interrupted.pid, signal.SIGINT)
    assert interrupted.wait(timeout=60) == 130
    assert interrupted.stdout.read() == "interrupted\n"

    killed = _client(project, env, "sleep")
    assert killed.stdin is not None and killed.stdout is not None
    killed.stdin.write("\n")
    killed.stdin.flush()
    copy = psutil.Process(json.loads(killed.stdout.readline())["pid"])
    killed.kill()
    killed.wait(timeout=60)
    copy.wait(timeout=30)  # raises if it outlives its command's process


def test_a_real_command_interrupted_in_the_copy_stops_with_its_workers(project: Path) -> None:
    env = _env(project)
    interpreter = _warm(project, env)
    slow = [POOLFLOW, "demo", "--items", "4", "--max-seconds", "60", "--processes", "2"]
    command = subprocess.Popen(
        slow,
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while len(_command_processes(interpreter)) < 3:  # the copy, its fork server, workers
        assert time.monotonic() < deadline and command.poll() is None, "it never ran in a copy"
        time.sleep(0.2)
    assert not psutil.Process(command.pid).children(), "the command's own process only relays"
    os.killpg(command.pid, signal.SIGINT)
    _, err = command.communicate(timeout=120)
    assert command.returncode == 130 and "interrupted; rerun the same command" in err
    deadline = time.monotonic() + 30
    while interpreter.children(recursive=True):  # the resource tracker too, once the interpreter ends
        assert time.monotonic() < deadline, "no orphans: the copy's workers end with it"
        time.sleep(0.2)


def _command_processes(interpreter: psutil.Process) -> list[psutil.Process]:
    """The interpreter's descendants but the resource tracker it keeps for its copies."""
    found = []
    for process in interpreter.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if not any("resource_tracker" in part for part in process.cmdline()):
                found.append(process)
    return found


# What the interpreter did once for its copies, as a copy finds it before its command starts.
PREPARED = """\
import json, os, psutil
from prefect.client.schemas.actions import FlowRunCreate
from poolflow import local_api, prefect_settings


def main():
    tracker = [
        child.pid for child in psutil.Process(os.getppid()).children()
        if any("resource_tracker" in part for part in child.cmdline())
    ]
    print(json.dumps({
        "prefects_own": int(prefect_settings._read_ahead._kept is not None),
        "pointed_at": int(local_api._pointed_ahead._kept is not None),
        "tracker": tracker, "models": FlowRunCreate.__pydantic_complete__,
    }))
    return 0
"""


def test_a_copy_starts_with_prefects_settings_read_and_pointed_at_the_server(project: Path) -> None:
    (project / "prepared.py").write_text(PREPARED)
    (project / "prepared_client.py").write_text(CLIENT.replace("warm_target:main", "prepared:main"))
    env = _env(project)
    _warm(project, env)
    reports = []
    for _ in range(2):
        command = [sys.executable, "prepared_client.py"]
        done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        reports.append(json.loads(done.stdout))
    assert reports[0]["prefects_own"] == reports[0]["pointed_at"] == 1, "read once, before the fork"
    assert reports[0]["models"], "the flow run's model is built before the fork, not at its first use"
    assert len(reports[0]["tracker"]) == 1 and reports[1] == reports[0], "one tracker, for every copy"

    kept = kept_api.recorded(project / "home")
    assert kept is not None
    script = (
        "import json\nfrom prefect.settings import get_current_settings\n"
        "from poolflow.local_api import pointed_at, prepare_pointed_at\n"
        "from pathlib import Path\n"
        "url, home = 'http://127.0.0.1:9/api', Path('elsewhere')\n"
        "prepare_pointed_at(url, home)\n"
        "made = pointed_at(url, home)\n"
        "fresh = pointed_at(url, home)\n"
        "print(json.dumps([made == fresh, made.api.url, made.flows.heartbeat_frequency,\n"
        "    made.api.ssl_cert_file is not None, get_current_settings().api.url]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=project, env=env, capture_output=True, text=True
    )
    assert json.loads(done.stdout) == [True, "http://127.0.0.1:9/api", None, True, None], done.stderr


@pytest.mark.parametrize(
    "why", ["a module by an imported name", "other Prefect settings", "a prefect.toml", "a lower ulimit"]
)
def test_a_command_the_interpreter_must_not_take_runs_in_its_own_process(project: Path, why: str) -> None:
    env = _env(project)
    _warm(project, env)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = {"preexec_fn": lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))}
    if why == "a module by an imported name":
        (project / "prefect.py").write_text("raise ImportError('a user module, not Prefect')\n")
    elif why == "other Prefect settings":
        env["PREFECT_LOGGING_LEVEL"] = "WARNING"
    else:
        (project / "prefect.toml").write_text("[logging]\nlevel = 'WARNING'\n")
    client = _client(project, env, "0", **(lowered if why == "a lower ulimit" else {}))
    out, err = client.communicate("\n", timeout=120)
    assert (client.returncode, out) == (0, "here\n"), err
    (project / "prefect.py").unlink(missing_ok=True)
    (project / "prefect.toml").unlink(missing_ok=True)
    taken = _client(project, _env(project), "0")
    assert json.loads(taken.communicate("\n", timeout=120)[0])["preloaded"], "taken once they match"


def test_the_interpreter_ends_with_its_server(project: Path) -> None:
    env = _env(project)
    interpreter = _warm(project, env)
    done = subprocess.run([POOLFLOW, "stop-api"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    interpreter.wait(timeout=60)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "in", "-o", "out"],
        ["run", "in", "-o", "out", "-v"],
        ["run", "-v", "in", "-o", "out"],
        ["run", "in", "--verbose", "-o", "out"],
        ["run", "in", "--verb", "-o", "out"],
        ["run", "in", "-vo", "out"],
        ["run", "in", "-o=-v"],
        ["run", "in", "--output", "x", "--parquet"],
        ["demo"],
        ["serve", "--input-dir", "x"],
        ["sample", "x"],
    ],
)
def test_verbosity_is_read_from_the_arguments_as_the_parser_reads_them(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    assert verbose(argv) == (args.command != "run" or args.verbose)
