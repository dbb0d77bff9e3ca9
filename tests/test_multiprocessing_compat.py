"""What ``poolflow.runners.multiprocessing_compat`` relies on is still there in this Python."""

from __future__ import annotations

import inspect
import multiprocessing.forkserver
import signal
import subprocess
import sys
import time
from pathlib import Path

from poolflow.runners.multiprocessing_compat import (
    FORK_SERVER_MAIN,
    FORK_SERVER_STATE,
    can_fork_the_fork_server,
)

PYTHON = f"Python {sys.version.split()[0]}"


def test_the_fork_server_still_has_the_private_state_the_preload_reads() -> None:
    server = multiprocessing.forkserver._forkserver
    for name in ("_preload_modules", "_forkserver_pid"):
        assert hasattr(server, name), f"{PYTHON}: ForkServer.{name} is gone; update multiprocessing_compat"


def test_the_fork_server_is_still_the_one_a_copy_of_the_script_can_become() -> None:
    """Else every script's fork server is the spawned one again: correct, a second slower."""
    server = multiprocessing.forkserver._forkserver
    assert set(vars(server)) == FORK_SERVER_STATE, f"{PYTHON}: ForkServer's state is {sorted(vars(server))}"
    parameters = tuple(inspect.signature(multiprocessing.forkserver.main).parameters)
    assert parameters == FORK_SERVER_MAIN, f"{PYTHON}: forkserver.main takes {parameters}"
    assert can_fork_the_fork_server(), f"{PYTHON}: not a fork server this module can start"


def test_a_preloaded_module_is_in_every_worker_and_a_running_server_is_left_alone() -> None:
    """In a fresh interpreter: a module the workers never import themselves is there in them
    when the fork server preloaded it; once the server runs, a new preload changes nothing."""
    script = """\
import multiprocessing, sys
from poolflow.runners.multiprocessing_compat import preload_in_fork_server

if __name__ == "__main__":
    assert preload_in_fork_server(["colorsys"])
    context = multiprocessing.get_context("forkserver")
    with context.Pool(1) as pool:
        print(pool.apply(eval, ("'colorsys' in __import__('sys').modules",)))
        print(preload_in_fork_server(["wave"]), preload_in_fork_server(["colorsys"]))
        print(pool.apply(eval, ("'wave' in __import__('sys').modules",)))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "True", "False"], (PYTHON, out.stdout, out.stderr)


def test_a_forked_copy_uses_the_resource_tracker_it_inherited() -> None:
    """In a fresh interpreter: after ``start_resource_tracker``, a fork asking for a tracker
    (as its worker pool does) gets the same process, not a new one."""
    script = """\
import os
from multiprocessing import resource_tracker
from poolflow.runners.multiprocessing_compat import start_resource_tracker
start_resource_tracker()
tracker = resource_tracker._resource_tracker._pid
read, write = os.pipe()
child = os.fork()
if child == 0:
    resource_tracker.ensure_running()
    os.write(write, str(resource_tracker._resource_tracker._pid).encode())
    os._exit(0)
os.waitpid(child, 0)
print(tracker, os.read(read, 64).decode())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    tracker, in_copy = done.stdout.split()
    assert tracker == in_copy != "None", f"{PYTHON}: a forked copy started its own resource tracker"


def test_a_forked_fork_server_removes_its_socket_folder_when_the_script_ends_with_os_exit() -> None:
    """A command ends with ``os._exit``, which skips multiprocessing's removal of its folders."""
    script = """\
import multiprocessing.forkserver, os
from poolflow.runners.multiprocessing_compat import fork_the_fork_server
assert fork_the_fork_server([])
print(multiprocessing.forkserver._forkserver._forkserver_address, flush=True)
os._exit(0)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    folder = Path(done.stdout.strip()).parent
    assert folder.name.startswith("poolflow-forkserver-"), done.stderr
    deadline = time.monotonic() + 30
    while folder.exists():
        assert time.monotonic() < deadline, f"{PYTHON}: the fork server left {folder}"
        time.sleep(0.1)


def test_a_forked_fork_server_ended_by_sigterm_removes_its_socket_folder() -> None:
    """A terminal's ``kill`` reaches the fork server with the rest of the process group: it
    dies of it, as a spawned one does, and takes its socket's folder with it."""
    script = """\
import multiprocessing.forkserver, os, signal
from poolflow.runners.multiprocessing_compat import fork_the_fork_server
assert fork_the_fork_server([])
server = multiprocessing.forkserver._forkserver
print(server._forkserver_address, flush=True)
os.kill(server._forkserver_pid, signal.SIGTERM)
_, status = os.waitpid(server._forkserver_pid, 0)
print(os.WTERMSIG(status) if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}", flush=True)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    address, ended = done.stdout.split()
    folder = Path(address).parent
    assert folder.name.startswith("poolflow-forkserver-"), done.stderr
    assert ended == str(int(signal.SIGTERM)), f"{PYTHON}: the fork server ended with {ended}"
    assert not folder.exists(), f"{PYTHON}: the fork server left {folder}"
