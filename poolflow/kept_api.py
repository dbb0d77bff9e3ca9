"""Prefect's API server kept between ``poolflow`` commands while it is used, then ended.

A command's own server (``poolflow.local_api``) costs about 3 s of start-up before the first
task, on every command: the whole gap between a short run and a raw ``multiprocessing.Pool``.
So the server a command starts outlives it by ``POOLFLOW_API_IDLE`` seconds (600; 0 ends it
with its command, as before), and the next command on the same ``PREFECT_HOME`` with the same
settings uses it. Its files, in ``PREFECT_HOME/.poolflow-api/``:

- ``server.json``: the kept server's PID, port and settings fingerprint, written by the
  command that started it, under the start lock.
- ``gate``: every command using the kept server holds a shared ``flock`` on it (the kernel
  drops it when the command dies, ``kill -9`` included) and leaves a marker for that server in
  ``users/``, which it removes when it ends cleanly, touching the gate. The server's idle watch
  (``watch_idle``, in the server process) looks whenever it can take the gate exclusively, i.e.
  no command uses it. A marker left means a command was killed, interrupted or failed, and a
  gate never touched since the server started means its starting command died before leaving
  one: either way the server ends at once, as a command's own server did ("no orphans").
  Otherwise it ends once the last clean end is that many seconds ago. It removes
  ``server.json`` first and holds the gate until it has exited, so a command waiting for the
  gate finds no server rather than a stopping one.

```
command A ──starts──► server (own session, no parent-death signal) ◄── command B, C, ...
  │ shared flock on gate while it runs, marker in users/ until a clean end
  └ server.json {pid, port, fingerprint}     idle watch, gate taken exclusively: a marker left,
                                             no clean end yet, or IDLE s since the last one
                                             → remove server.json, SIGTERM itself
```

A command uses the kept server only if its process is a poolflow API server, it answers
``/health``, it holds the database file that is there now, and its fingerprint is the
command's: the Python, poolflow and Prefect versions, the newest modification time of
poolflow's modules, the ``PREFECT_*`` environment and the bytes of every file Prefect reads
settings from (``poolflow.prefect_settings.settings_files``). Otherwise the command starts a
new server and records it; a server no longer recorded ends once idle. ``poolflow stop-api``
(``end``) stops the kept server now.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from poolflow.command_environment import TERMINAL_ONLY
from poolflow.prefect_settings import settings_files
from poolflow.tasks.atomic import written_atomically

DEFAULT_IDLE = 600.0


def idle_seconds() -> float:
    """How long a server a command starts now is kept once idle (``POOLFLOW_API_IDLE``)."""
    text = os.environ.get("POOLFLOW_API_IDLE", "")
    try:
        return float(text) if text else DEFAULT_IDLE
    except ValueError:
        raise ValueError(f"POOLFLOW_API_IDLE must be a number of seconds, not {text!r}") from None


STATE_DIR = ".poolflow-api"
_HEALTH_TIMEOUT = 2.0  # seconds a kept server gets to answer before a new one is started
_WATCH_EVERY = 1.0  # seconds between the idle watch's looks at the lease
_EXIT_GRACE = 10.0  # seconds an idle server gets to shut down before it exits regardless


@dataclass(frozen=True)
class KeptServer:
    """The server ``server.json`` records."""

    pid: int
    port: int
    fingerprint: str


def state_dir(home: Path) -> Path:
    path = home / STATE_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


# Settings a server is started without, or that it does not read.
_NOT_THE_SERVERS = frozenset({"PREFECT_API_URL", "POOLFLOW_API_IDLE", *TERMINAL_ONLY})


def fingerprint(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> str:
    """What a server started here (in ``cwd``, with ``environ``; by default this process's)
    would serve with: equal fingerprints, interchangeable servers."""
    digest = hashlib.sha256()
    versions = [sys.executable, _version("poolflow"), _version("prefect"), _code_stamp()]
    environment = sorted(
        f"{name}={value}"
        for name, value in (os.environ if environ is None else environ).items()
        if name.startswith(("PREFECT_", "POOLFLOW_")) and name not in _NOT_THE_SERVERS
    )
    for part in [*versions, *environment]:
        digest.update(part.encode(errors="surrogateescape") + b"\0")
    for path in settings_files(cwd, environ):
        with contextlib.suppress(OSError):
            digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def _version(distribution: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:  # run from a source tree
        return "not installed"


def _code_stamp() -> str:
    """The newest modification time of poolflow's modules: a server started before an edit of
    an editable install runs the old code."""
    package = Path(__file__).parent
    newest = max(
        (
            os.stat(os.path.join(folder, name)).st_mtime_ns
            for folder, _, names in os.walk(package, followlinks=True)
            for name in names
            if name.endswith(".py")
        ),
        default=0,
    )
    return str(newest)


def record(home: Path, server: KeptServer) -> None:
    """Name ``server`` as the one the next commands on ``home`` use."""
    with written_atomically(state_dir(home) / "server.json") as file:
        file.write(json.dumps(asdict(server)).encode())


def recorded(home: Path) -> KeptServer | None:
    """The server ``server.json`` names (alive or not), or None."""
    try:
        return KeptServer(**json.loads((home / STATE_DIR / "server.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def find(home: Path, wanted: str, database: Path | None) -> KeptServer | None:
    """The recorded server, if it is alive, has the ``wanted`` fingerprint, serves the
    ``database`` file there is now (not one deleted or replaced since) and answers."""
    server = recorded(home)
    if server is None or server.fingerprint != wanted or not _is_api_server(server.pid):
        return None
    if database is not None and not _serves_file(server.pid, database):
        return None
    return server if _answers(server.port) else None


def end(home: Path) -> KeptServer | None:
    """Ask the server kept on ``home`` to stop now (as its idle watch would); the one asked."""
    server = recorded(home)
    if server is None:
        return None
    (home / STATE_DIR / "server.json").unlink(missing_ok=True)
    if not _is_api_server(server.pid):
        return None
    os.kill(server.pid, signal.SIGTERM)
    return server


def _is_api_server(pid: int) -> bool:
    """Whether ``pid`` is a poolflow API server (not a process that reused a dead one's PID)."""
    try:
        return b"poolflow.api_server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _serves_file(pid: int, path: Path) -> bool:
    """Whether ``path`` exists and every descriptor process ``pid`` opened on that name is
    that very file (SQLite keeps a deleted database open, and writes to it)."""
    try:
        now = path.stat()
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    name = str(path.resolve())
    for descriptor in descriptors:
        with contextlib.suppress(OSError):
            if os.readlink(descriptor) in (name, f"{name} (deleted)"):
                opened = descriptor.stat()
                if (opened.st_dev, opened.st_ino) != (now.st_dev, now.st_ino):
                    return False
    return True


def _answers(port: int) -> bool:
    import http.client  # here: a command handed to the warm interpreter never asks

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=_HEALTH_TIMEOUT)
    try:
        connection.request("GET", "/api/health")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


class Lease:
    """A command's hold on the kept server of ``home``: no idle watch ends it meanwhile."""

    def __init__(self, home: Path) -> None:
        directory = state_dir(home)
        self._gate: IO[bytes] | None = open(directory / "gate", "ab")  # noqa: SIM115 - held until release()
        # Blocks only while a server that found itself unused is exiting (at most _EXIT_GRACE).
        fcntl.flock(self._gate, fcntl.LOCK_SH)
        self._users = directory / "users"
        self._marker: Path | None = None

    def use(self, server_pid: int) -> None:
        """Leave this command's marker for the server ``server_pid``."""
        self._users.mkdir(exist_ok=True)
        self._marker = self._users / f"{server_pid}.{os.getpid()}.{id(self)}"
        self._marker.touch()

    def release(self, clean: bool) -> None:
        """Let go. After a ``clean`` end the server's idle time starts now; after any other
        (an interrupt, an error, or a ``kill -9`` that never got here) it ends once unused."""
        if self._gate is None:
            return
        if clean:
            if self._marker is not None:
                self._marker.unlink(missing_ok=True)
            os.utime(self._gate.fileno())
        self._gate.close()
        self._gate = None


def watch_idle(home: Path, idle: float) -> None:
    """In the server process: end the server once unused, at once if a command that used it
    ended without a clean release (or none ever did: the command that started it died before
    leaving its marker), else after ``idle`` seconds."""
    directory = state_dir(home)
    (directory / "gate").touch()
    started = (directory / "gate").stat().st_mtime_ns

    def watch() -> None:
        with open(directory / "gate", "ab") as gate:
            while True:
                time.sleep(_WATCH_EVERY)
                try:
                    fcntl.flock(gate, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a command uses the server
                # With the gate held, a user's marker left means its command did not end cleanly.
                abandoned = list((directory / "users").glob(f"{os.getpid()}.*"))
                for marker in abandoned:
                    marker.unlink(missing_ok=True)
                released = os.fstat(gate.fileno()).st_mtime_ns
                if abandoned or released == started or time.time() - released / 1e9 >= idle:
                    break
                fcntl.flock(gate, fcntl.LOCK_UN)
            _forget(home)
            os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown
            time.sleep(_EXIT_GRACE)
            os._exit(1)  # the gate goes with the process

    threading.Thread(target=watch, name="poolflow-idle-watch", daemon=True).start()


def _forget(home: Path) -> None:
    """Remove ``server.json`` if it names this process."""
    server = recorded(home)
    if server is not None and server.pid == os.getpid():
        (home / STATE_DIR / "server.json").unlink(missing_ok=True)
