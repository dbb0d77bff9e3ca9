"""An interpreter kept with the API server, Prefect and poolflow imported, that commands fork from.

A command that reuses a kept API server (``poolflow.kept_api``) still spends about 2 s before its
first task importing Prefect, poolflow's flows and their libraries, on one core while the other
waits. So the first command's clean end leaves (``keep``) a process that imports them once and
then waits on a Unix socket named after the home and the server (``socket_name``). The next
``poolflow`` command (``run_warm``, the script's first step) hands it the command: its argument
list, environment, working directory, ``sys.path``, umask and its standard input, output and
error (passed as descriptors). The interpreter forks; the copy takes all of that on, becomes a
process group of its own and runs the command, which goes on as any command does, on the kept
server. The command's own process only relays: the signals it gets go to that group (as a
terminal's Ctrl-C goes to its foreground group), and it ends as the copy ended, with its exit
code or by its signal.

```
poolflow run …  ──request + fds 0, 1, 2──►  warm interpreter (Prefect imported, one thread)
  │ relays SIGINT, SIGTERM, SIGHUP,             │ fork ─► copy: setpgid, dup2, chdir, environ,
  │ SIGQUIT, SIGUSR1, SIGUSR2 to the group      │         argv, sys.path ─► the command
  ◄── started (pid) … ended (exit code or signal) ── waitpid via pidfd
```

The interpreter declines (the command then runs in its own process, as before) unless the
request matches the interpreter's own start: the same Python executable, version and flags, the
same ``sys.path`` apart from its first entry (which must not hold a module the interpreter has
imported: a user's ``tasks.py`` stays theirs), the same ``PREFECT_*``, ``POOLFLOW_*``,
``PYTHON*`` and locale environment, and the fingerprint the kept server was started with
(``kept_api.fingerprint``: versions, poolflow's code, the settings files where the command
runs). Only its own user may connect (``SO_PEERCRED``). A command whose process dies (``kill
-9``) has its copy's group killed, as the interpreter sees the socket close; an interpreter that
dies ends its commands the same way, through the command's process. It stops taking commands
once its server has exited and exits when its last command has.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from poolflow import kept_api
from poolflow.prefect_settings import read_api_settings

# What a command would import before its first task (``poolflow.warm_start.FLOW_RUN_MODULES``
# are imported with them).
WARM_MODULES = (
    "prefect",
    "poolflow.cli",
    "poolflow.flows.wiki_report",
    "poolflow.flows.demo",
    "poolflow.flows.tuple_report",
    "poolflow.tasks.items",
)
RELAYED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
_SAME_ENVIRONMENT = ("PREFECT_", "POOLFLOW_", "PYTHON", "LANG", "LC_")
_NOT_COMPARED = ("POOLFLOW_API_IDLE",)  # read by the command itself, not at import
_MESSAGE_LIMIT = 1 << 22  # bytes of one request: its environment and sys.path


# The environment a command's arguments and environment give it when it imports Prefect.
Environment = Callable[[list[str], Mapping[str, str]], dict[str, str]]


def socket_name(home: Path, server_pid: int, environ: Mapping[str, str]) -> bytes:
    """The abstract socket of the interpreter kept with server ``server_pid`` on ``home`` that
    imported Prefect with ``environ``: one per environment, as commands differ in the
    settings they set before importing Prefect (``poolflow.command_environment``)."""
    digest = hashlib.sha256(str(home.resolve()).encode(errors="surrogateescape"))
    digest.update(json.dumps(_compared_environment(environ), sort_keys=True).encode(errors="surrogateescape"))
    return f"\0poolflow-warm-{digest.hexdigest()[:24]}-{server_pid}".encode()


@dataclass(frozen=True)
class Request:
    """A command to run: what a fresh interpreter running it would have been given."""

    target: str  # "module:function", called with no arguments; returns the exit code
    argv: list[str]
    env: dict[str, str]
    cwd: str
    path: list[str]
    umask: int
    interpreter: list[str]  # executable, version, flags: compared, not applied
    process: list[str]  # cgroup, resource limits, priority: compared, not applied

    @classmethod
    def here(cls, target: str, env: dict[str, str]) -> Request:
        umask = os.umask(0)
        os.umask(umask)
        return cls(target, sys.argv, env, os.getcwd(), sys.path, umask, _interpreter(), _process())


def _interpreter() -> list[str]:
    return [sys.executable, sys.version, repr(tuple(sys.flags)), repr(sys.warnoptions)]


def _process() -> list[str]:
    """What the kernel holds this process to: a copy must not escape the command's cgroup
    (``systemd-run -p CPUQuota=…``), limits (``ulimit``) or priority (``nice``)."""
    import resource

    with open("/proc/self/cgroup") as cgroup:
        groups = cgroup.read()
    limits = [
        resource.getrlimit(getattr(resource, name))
        for name in sorted(dir(resource))
        if name.startswith("RLIMIT_")
    ]
    return [groups, repr(limits), str(os.getpriority(os.PRIO_PROCESS, 0))]


def _compared_environment(env: Mapping[str, str]) -> dict[str, str]:
    return {
        name: value
        for name, value in env.items()
        if name.startswith(_SAME_ENVIRONMENT) and name not in _NOT_COMPARED
    }


# --- the command's side


def run_warm(target: str, environment: Environment = lambda argv, environ: dict(environ)) -> None:
    """Run ``target`` in the interpreter kept with this home's API server and exit as it
    ended; return at once, having done nothing, where there is none or it declines.
    ``environment`` gives the environment the command has when it imports Prefect."""
    try:
        settings = read_api_settings()
    except Exception:  # the command itself reports unreadable settings
        return
    server = None if settings.api_url else kept_api.recorded(settings.home)
    if server is None:
        return
    env = environment(sys.argv[1:], os.environ)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # Held from the hand-over until they can be relayed; a declined command gets them itself.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, RELAYED_SIGNALS)
    try:
        connection.connect(socket_name(settings.home, server.pid, env))
        socket.send_fds(connection, [json.dumps(asdict(Request.here(target, env))).encode()], [0, 1, 2])
        reply = json.loads(connection.recv(_MESSAGE_LIMIT) or b"{}")
    except (OSError, ValueError):
        reply = {}
    if "started" not in reply:
        connection.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return
    _follow(connection, int(reply["started"]), held)


def _follow(connection: socket.socket, group: int, mask: Iterable[int]) -> None:
    """Relay signals to the command's process group ``group`` until it ends (those that came
    meanwhile once the signal ``mask`` is back); end the same way."""

    def relay(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signum)

    for signum in RELAYED_SIGNALS:
        signal.signal(signum, relay)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    ended = json.loads(connection.recv(_MESSAGE_LIMIT) or b"{}")
    # os._exit: this process only relayed; it holds nothing to flush or tear down.
    if "exit" in ended:
        os._exit(int(ended["exit"]))
    if "signal" in ended:
        died_of = int(ended["signal"])
        signal.signal(died_of, signal.SIG_DFL)
        os.kill(os.getpid(), died_of)
        os._exit(128 + died_of)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    print("poolflow: the warm interpreter running this command died; run it again", file=sys.stderr)
    os._exit(1)


def keep(home: Path, server_pid: int) -> None:
    """Start the interpreter for server ``server_pid`` on ``home`` unless one answers; it
    imports on its own time, after this command."""
    env = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        probe.connect(socket_name(home, server_pid, env))
        return  # it is there (it sees a connection close without a request)
    except OSError:
        pass
    finally:
        probe.close()
    subprocess.Popen(
        [sys.executable, "-c", _BOOT, str(home), str(server_pid)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


# Its own first sys.path entry is the command's working directory: dropped, so that nothing
# there is imported in place of what the interpreter imports.
_BOOT = "import sys; del sys.path[0]; from poolflow.warm_interpreter import main; main(sys.argv[1:])"


# --- the interpreter's side


def main(argv: list[str]) -> None:
    """Import, wait for commands, and in each forked copy run its command and exit."""
    from poolflow.startup_gc import building_long_lived_objects
    from poolflow.warm_start import FLOW_RUN_MODULES

    home, server = Path(argv[0]), int(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with building_long_lived_objects():
        for module in (*WARM_MODULES, *FLOW_RUN_MODULES):
            importlib.import_module(module)
        _prepare_copies(home, server)
    if threading.active_count() != 1:
        return  # a fork would copy another thread's locks mid-use
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        server_exit = os.pidfd_open(server)
        listener.bind(socket_name(home, server, os.environ))  # taken: another interpreter serves it
    except OSError:
        return
    listener.listen(16)
    started = _Interpreter(listener, server_exit).serve()
    sys.exit(started.run())


def _prepare_copies(home: Path, server: int) -> None:
    """Do once, for every copy, what each command would do first: Prefect's own reading of its
    settings (``remember_prefects_own``) and its settings pointed at the kept server
    (``prepare_pointed_at``), the pydantic models built on first use, and multiprocessing's
    resource tracker, a new Python process that each command's worker pool would otherwise
    start (a copy inherits its pipe, so the tracker ends after the interpreter and its last
    copy)."""
    from poolflow.local_api import loopback_api_url, prepare_pointed_at
    from poolflow.prefect_settings import remember_prefects_own
    from poolflow.runners.multiprocessing_compat import start_resource_tracker

    remember_prefects_own()
    kept = kept_api.recorded(home)
    if kept is not None and kept.pid == server:
        prepare_pointed_at(loopback_api_url(kept.port), home)
    _build_deferred_models()
    start_resource_tracker()


def _build_deferred_models() -> None:
    """Build the pydantic models that build on first use (Prefect's client schemas among them:
    the flow run's, its logs', its events'), so no copy builds them while its flow run starts."""
    from pydantic import BaseModel

    pending = BaseModel.__subclasses__()
    while pending:
        model = pending.pop()
        pending.extend(model.__subclasses__())
        if not model.__pydantic_complete__:
            with contextlib.suppress(Exception):  # references that do not resolve: built on use, as before
                model.model_rebuild()


@dataclass
class _Command:
    """A started command, known to the interpreter by its pidfd."""

    pid: int
    connection: socket.socket


class _Interpreter:
    """The serving loop: accepts requests, forks a copy per command, reports how each ended.

    One thread owns everything; a copy leaves the loop (``serve`` returns its request there).
    """

    def __init__(self, listener: socket.socket, server_exit: int) -> None:
        self.listener: socket.socket | None = listener
        self.server_exit = server_exit
        self.environment = _compared_environment(dict(os.environ))
        self.path = sys.path[:]
        self.selector = selectors.EpollSelector()
        self.selector.register(listener, selectors.EVENT_READ, "listener")
        self.selector.register(server_exit, selectors.EVENT_READ, "server")
        self.commands: dict[int, _Command] = {}  # by pidfd
        self.fingerprint = kept_api.fingerprint()

    def serve(self) -> _Started:
        while self.listener is not None or self.commands:
            for key, _ in self.selector.select():
                if key.data == "listener":
                    started = self._accept()
                    if started is not None:
                        return started
                elif key.data == "server":
                    self._stop_taking()
                elif isinstance(key.data, _Command):
                    self._lost(key.data)
                else:
                    self._ended(key.fd)
        sys.exit(0)

    def _stop_taking(self) -> None:
        assert self.listener is not None
        self.selector.unregister(self.listener)
        self.selector.unregister(self.server_exit)
        self.listener.close()
        self.listener = None

    def _accept(self) -> _Started | None:
        assert self.listener is not None
        connection, _ = self.listener.accept()
        try:
            message, fds, _, _ = socket.recv_fds(connection, _MESSAGE_LIMIT, 3)
        except OSError:
            connection.close()
            return None
        try:
            request = Request(**json.loads(message)) if message else None
            refusal = "no request" if request is None else self._refusal(connection, request, fds)
        except (TypeError, ValueError):
            request, refusal = None, "a malformed request"
        if request is None or refusal is not None:
            _send(connection, {"declined": refusal})
            _close_all(fds)
            connection.close()
            return None
        # A signal relayed to the copy before it has its handlers waits for them.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, RELAYED_SIGNALS)
        pid = os.fork()
        if pid == 0:
            self._close(connection)
            return _Started(request, fds, mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        _close_all(fds)
        _send(connection, {"started": pid})
        command = _Command(pid, connection)
        pidfd = os.pidfd_open(pid)
        self.commands[pidfd] = command
        self.selector.register(pidfd, selectors.EVENT_READ, pidfd)
        self.selector.register(connection, selectors.EVENT_READ, command)
        return None

    def _refusal(self, connection: socket.socket, request: Request, fds: list[int]) -> str | None:
        """Why ``request`` cannot run here, or None."""
        credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        if struct.unpack("3i", credentials)[1] != os.getuid():
            return "another user"
        if len(fds) != 3:
            return "no standard streams"
        if request.interpreter != _interpreter():
            return "another Python"
        if request.process != _process():
            return "another cgroup, limit or priority"
        if request.path[1:] != self.path or _shadows(request.path[0] if request.path else ""):
            return "another sys.path"
        if _compared_environment(request.env) != self.environment:
            return "other settings"
        if kept_api.fingerprint(Path(request.cwd), request.env) != self.fingerprint:
            return "another fingerprint"
        return None

    def _close(self, connection: socket.socket) -> None:
        """In a copy: close what the loop holds, ``connection`` among it."""
        connection.close()
        for pidfd, command in self.commands.items():
            os.close(pidfd)
            command.connection.close()
        os.close(self.server_exit)
        if self.listener is not None:
            self.listener.close()
        self.selector.close()

    def _lost(self, command: _Command) -> None:
        """The command's process closed its end (it died): its group dies too."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(command.pid, signal.SIGKILL)
        self.selector.unregister(command.connection)

    def _ended(self, pidfd: int) -> None:
        command = self.commands.pop(pidfd)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(command.pid, 0)
        if os.WIFSIGNALED(status):
            _send(command.connection, {"signal": os.WTERMSIG(status)})
        else:
            _send(command.connection, {"exit": os.waitstatus_to_exitcode(status)})
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(command.connection)
        command.connection.close()


def _shadows(folder: str) -> bool:
    """Whether ``folder`` (a script's folder or the working directory, first on its
    ``sys.path``) holds a module or package by the name of one imported here from elsewhere."""
    try:
        entries = list(os.scandir(folder or "."))
    except OSError:
        return False
    for entry in entries:
        name = entry.name.removesuffix(".py") if entry.is_file() else entry.name
        module = sys.modules.get(name) if entry.is_dir() or entry.name.endswith(".py") else None
        if module is None:
            continue
        place = os.path.realpath(entry.path)
        origin = os.path.realpath(getattr(module, "__file__", None) or "")
        if os.path.commonpath([origin, place]) != place:  # imported from somewhere else
            return True
    return False


def _send(connection: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the command's process is gone
        connection.send(json.dumps(message).encode())


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


@dataclass
class _Started:
    """In a forked copy: the command, its standard streams and the signal mask."""

    request: Request
    streams: list[int]
    mask: Iterable[int]  # the signal mask to restore once the handlers are the command's

    def run(self) -> int:
        """Become the process the command would have had, then run it."""
        os.setpgid(0, 0)
        for number, fd in enumerate(self.streams):
            os.dup2(fd, number)
        _close_all(self.streams)
        request = self.request
        os.chdir(request.cwd)
        os.umask(request.umask)
        os.environ.clear()
        os.environ.update(request.env)
        tempfile.tempdir = None  # found again from TMPDIR and the like when next asked
        time.tzset()  # TZ
        sys.argv[:] = request.argv
        sys.path[:] = request.path
        for signum in RELAYED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
        sys.stdout.reconfigure(line_buffering=sys.stdout.isatty())  # type: ignore[union-attr]
        module, _, function = request.target.partition(":")
        code = getattr(importlib.import_module(module), function)()
        return int(code or 0)
