"""What the worker pool needs from ``multiprocessing`` beyond its public API, in one place.

Relies on ``multiprocessing.forkserver._forkserver``, the process-wide ``ForkServer`` whose
public face is ``set_forkserver_preload``: its ``_preload_modules`` (the list that function
replaces) and ``_forkserver_pid`` (set while a fork server runs); to start that server by
forking, also on the rest of its state (``FORK_SERVER_STATE``) and on ``forkserver.main``'s
parameters (``FORK_SERVER_MAIN``); to share one resource tracker with forked copies, on
``resource_tracker.ensure_running`` keeping a tracker a fork inherited.
``tests/test_multiprocessing_compat.py`` fails, naming the Python, when they change; a Python
whose fork server differs gets the fork server ``multiprocessing`` starts itself.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import multiprocessing.forkserver
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence
from multiprocessing import resource_tracker
from typing import Any, NoReturn

FORK_SERVER_STATE = frozenset(
    {
        "_forkserver_address",
        "_forkserver_alive_fd",
        "_forkserver_pid",
        "_inherited_fds",
        "_lock",
        "_preload_modules",
    }
)
FORK_SERVER_MAIN = ("listener_fd", "alive_r", "preload", "main_path", "sys_path")


def preload_in_fork_server(modules: Sequence[str]) -> bool:
    """Have the fork server import ``modules`` when it starts, besides what it already would.

    Workers are forked from the fork server, so a module it imported is in every worker at
    no cost, where each worker would otherwise import it again (a worker imports the script
    that started it, and with it Prefect). The list is the process's: another user of the
    fork server in this process gets these imports too, and nothing else. Once a fork server
    runs its modules are fixed, and this does nothing; True if the modules will be loaded.
    """
    server: Any = multiprocessing.forkserver._forkserver
    if server._forkserver_pid is not None:
        return all(module in server._preload_modules for module in modules)
    wanted = list(server._preload_modules)
    wanted += [module for module in modules if module not in wanted]
    multiprocessing.forkserver.set_forkserver_preload(wanted)
    return True


def can_fork_the_fork_server() -> bool:
    """Whether this Python's fork server is the one ``fork_the_fork_server`` knows how to start."""
    server: Any = multiprocessing.forkserver._forkserver
    return (
        sys.platform.startswith("linux")
        and set(vars(server)) == FORK_SERVER_STATE
        and tuple(inspect.signature(multiprocessing.forkserver.main).parameters) == FORK_SERVER_MAIN
    )


def _single_threaded() -> bool:
    """This process has one OS thread (libraries' own threads counted, not only Python's)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def start_resource_tracker() -> None:
    """Start ``multiprocessing``'s resource tracker now, in a process that will fork copies:
    they inherit its pipe and use it rather than each starting a tracker (a new Python process)
    of their own. It ends once this process and every copy have exited."""
    resource_tracker.ensure_running()


def fork_the_fork_server(preload: Sequence[str]) -> bool:
    """Start this process's fork server as a copy of this process; False if it cannot be now.

    ``multiprocessing`` starts its fork server as a fresh interpreter that imports ``preload``
    and the script (``__main__``) before it forks its first worker: a script that makes its
    runner after importing Prefect waits for the second import of Prefect before its first
    result. A copy of the script's process has them already and is ready at once. Its workers
    start from the script as it stood when the copy was made, where a fresh fork server runs
    the whole script first: task functions, arguments and results travel by cloudpickle,
    which sends what ``__main__`` defines by value.

    Only a process with a single OS thread is copied (another thread could hold a lock the
    copy would never see released), only while no fork server runs, and only in a Python
    whose fork server is the expected one (``can_fork_the_fork_server``).
    """
    server: Any = multiprocessing.forkserver._forkserver
    if not (can_fork_the_fork_server() and _single_threaded()):
        return False
    with server._lock:
        if server._forkserver_pid is not None:
            return False
        resource_tracker.ensure_running()
        # Not in multiprocessing's folder for this process: that is removed at a normal exit
        # only, and a command ends with os._exit. The fork server removes this one as it ends.
        folder = tempfile.mkdtemp(prefix="poolflow-forkserver-")
        address = os.path.join(folder, "listener")
        with socket.socket(socket.AF_UNIX) as listener:
            try:
                listener.bind(address)  # fails if the temp folder's path is too long for a socket
            except OSError:
                shutil.rmtree(folder, ignore_errors=True)
                return False
            os.chmod(address, 0o600)
            listener.listen()
            alive_r, alive_w = os.pipe()
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:
                    stream.flush()  # or each worker would print the script's buffered output again
            # The copy is born ignoring Ctrl-C (a Ctrl-C before it could ignore it would end
            # it) and holding SIGTERM back until its handler for it is set.
            handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            try:
                pid = os.fork()
                if pid == 0:
                    _serve_forks(listener.fileno(), alive_r, preload, folder, mask)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                signal.signal(signal.SIGINT, handler)
            os.close(alive_r)
        server._forkserver_address = address
        server._forkserver_alive_fd = alive_w
        server._forkserver_pid = pid
    return True


def _serve_forks(
    listener_fd: int, alive_r: int, preload: Sequence[str], folder: str, mask: Iterable[int]
) -> NoReturn:
    """In the copy: become a fork server like the one ``multiprocessing`` spawns, never return.

    It keeps only what a spawned fork server gets (standard streams, the listening socket,
    the read end of the alive pipe, the resource tracker's pipe), so it holds none of the
    script's files, sockets or locks; Ctrl-C is for the script to handle, as there; every
    other signal the script handled in Python takes its default action. It ends once every
    process holding the alive pipe's write end (the script, the workers) has, and removes the
    ``folder`` of its listening socket as it does; a SIGTERM (a terminal's ``kill`` to the
    process group) ends it as it ends a spawned fork server, its folder removed first.
    """
    try:
        keep = {0, 1, 2, listener_fd, alive_r, resource_tracker.getfd()}
        for name in os.listdir("/proc/self/fd"):
            if int(name) not in keep:
                with contextlib.suppress(OSError):  # the descriptor listdir used, already closed
                    os.close(int(name))
        for number in signal.valid_signals():
            if callable(signal.getsignal(number)):
                signal.signal(number, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, functools.partial(_end_by_signal, os.getpid(), folder))
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a SIGTERM held back arrives now
        server: Any = multiprocessing.forkserver._forkserver
        server._lock = threading.Lock()  # the script's thread held it when the copy was made
        gc.freeze()  # the script's objects stay as they are: none is collected (or closes a descriptor) here
        gc.enable()  # as in a fork server multiprocessing spawns, whatever the script's collector was doing
        multiprocessing.forkserver.main(listener_fd, alive_r, list(preload))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os._exit(0)


def _end_by_signal(server_pid: int, folder: str, number: int, frame: object) -> None:
    """Die of signal ``number`` as with no handler; in the fork server, remove ``folder`` first.
    A worker inherits the handler until it ignores SIGTERM itself: it leaves the folder be."""
    if os.getpid() == server_pid:
        shutil.rmtree(folder, ignore_errors=True)
    signal.signal(number, signal.SIG_DFL)
    os.kill(os.getpid(), number)
