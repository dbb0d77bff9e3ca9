"""Job functions for the fault tests; a module of its own so every start method can import it."""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import stat
import time
from pathlib import Path


def square(x: int) -> int:
    time.sleep(0.01)
    return x * x


def pid_of_worker(_: int = 0) -> int:
    return os.getpid()


def die(how: str) -> None:
    """End the worker process abruptly, the way real crashes do."""
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "segfault":
        ctypes.string_at(0)
    elif how == "exit":
        os._exit(3)
    time.sleep(60)


def spin(seconds: float) -> None:
    """Burn CPU without ever yielding, for ``seconds`` (forever if negative)."""
    deadline = time.monotonic() + seconds
    while seconds < 0 or time.monotonic() < deadline:
        pass


def fault_job(index: int, kill_every: int, spin_every: int) -> int:
    """The soak test's job: most return their index, some kill their worker, some spin."""
    if index % kill_every == kill_every // 2:
        os.kill(os.getpid(), signal.SIGKILL)
    if index % spin_every == spin_every // 3:
        spin(-1)
    return index


def die_first_time(marker: str) -> str:
    """Kill the worker on the first attempt; succeed on the next (a retried crash)."""
    path = Path(marker)
    if not path.exists():
        path.write_text("died once")
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


def die_first_time_once_sent_a_job(marker: str) -> None:
    """As an initializer: the first worker waits until the pool has sent it a job (its pipe,
    the worker's only socket, turns readable), then is killed before it could take it."""
    path = Path(marker)
    if path.exists():
        return
    fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    sockets = [fd for fd in fds if _is_socket(fd)]
    select.select(sockets, [], [], 120)
    path.write_text("died once")
    os.kill(os.getpid(), signal.SIGKILL)


def _is_socket(fd: int) -> bool:
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:  # the listing's own descriptor, closed by now
        return False


class KeywordOnlyError(Exception):
    """An exception that pickles but cannot be rebuilt from its pickle (as pydantic's errors)."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


def fail_unrebuildably(code: int) -> None:
    """Raise an exception the parent cannot unpickle."""
    raise KeywordOnlyError(f"failed with code {code}", code=code)


def chatty(x: int) -> int:
    """Log a line and print one, then return ``2 * x`` (what the protocol test reads back)."""
    logging.getLogger("poolflow.test").warning("logged %d", x)
    print(f"printed {x}")
    return 2 * x


def fail(message: str) -> None:
    raise ValueError(message)


def touch(path: str) -> str:
    """Create the file ``path``; returns it (a job whose running shows from outside)."""
    Path(path).touch()
    return path


def touch_after(seconds: float, path: str) -> str:
    """Sleep ``seconds``, then create the file ``path`` (a job whose finishing shows from outside)."""
    time.sleep(seconds)
    return touch(path)


def die_after(seconds: float) -> None:
    """Sleep ``seconds``, then kill the worker with SIGKILL."""
    time.sleep(seconds)
    die("sigkill")


def first_and_identity(values: list[int]) -> tuple[int, int, int]:
    """(the first value, the list's identity, this worker's PID): the identity shows whether a
    worker built the list once for all its jobs."""
    time.sleep(0.01)
    return values[0], id(values), os.getpid()
