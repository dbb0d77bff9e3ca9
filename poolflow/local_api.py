"""Prefect's API for ``poolflow`` commands, started by poolflow: kept for the next ones, or tied to one.

Without ``PREFECT_API_URL`` Prefect starts an "ephemeral" API server itself. Three of its
habits hurt a command-line run, so the command starts the same server (Prefect's own app
under uvicorn, on a free loopback port, against the database in ``PREFECT_HOME``) itself:

- **Start-up.** Prefect waits at most 20 s for it to answer, and creating a fresh database
  can take longer on a 2-core machine: a new user's first run failed. Here the wait lasts while
  the server process lives (bounded by ``POOLFLOW_API_START_TIMEOUT``, 600 s), says once
  that the database is being created, and a lock in ``PREFECT_HOME`` keeps two first runs
  from creating the same database at once.
- **Orphans.** Killed with SIGKILL, the parent leaves Prefect's server serving. Here a
  server kept for the next commands (``poolflow.kept_api``) ends once a command using it
  died, and one that is not (``POOLFLOW_API_IDLE=0``) gets a parent-death signal (Linux
  ``PR_SET_PDEATHSIG``), so it goes with the command however the command ends.
- **Write batching.** The server's recorders default to one database write per event;
  ``RECORDER_SETTINGS`` batch them (chosen with ``bench.many_tasks --record``).
- **Start-up time.** Most commands find a server an earlier one kept. A new server builds
  its app with the garbage collector off (``poolflow.api_server``), skips migrations and
  block registration on a database already current (``poolflow.database_stamp``) and runs
  no automation services.

```
poolflow command ──Popen──► python -m poolflow.api_server FD PID  (Prefect's app under uvicorn)
   │  PREFECT_API_URL=http://127.0.0.1:PORT/api     (kept for later commands, or PDEATHSIG)
   └─ flow run, task runs, events ──HTTP/websocket──►  SQLite in PREFECT_HOME
```
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from poolflow import database_stamp, kept_api, warm_interpreter
from poolflow.command_environment import TERMINAL_ONLY
from poolflow.loopback_ca import loopback_ca_file
from poolflow.made_ahead import MadeAhead
from poolflow.prefect_settings import ApiSettings, differs_from_prefect, prefects_own, read_api_settings
from poolflow.runners.prefect_compat import EPHEMERAL_SERVER_ENVIRONMENT
from poolflow.runners.worker import die_with_parent

if TYPE_CHECKING:
    import httpx
    from prefect.settings import Settings

Say = Callable[[str], None]


def say_on_stderr(message: str) -> None:
    """One line for the person at the terminal, on stderr."""
    print(f"poolflow: {message}", file=sys.stderr, flush=True)


# Batched writes of the server's event consumers (Prefect's defaults write one event at a
# time, so a flow of 2,000 task runs waited minutes at exit for its states to be stored).
RECORDER_SETTINGS = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "500",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    # Honoured as a fraction by poolflow.api_server (Prefect truncates it to whole seconds):
    # the command's end waits for the last task runs to be stored, at most this long.
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "0.1",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "500",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "1",
}
# What Prefect's own ephemeral server sets: no UI, only the services a short-lived API needs;
# of those, not the automations' triggers and actions either: they react to events while a
# server lives, which is the job of a long-running server (`prefect server start`), not of
# one command's, and starting them delays the first answer.
EPHEMERAL_SETTINGS = {
    "PREFECT_UI_ENABLED": "0",
    **EPHEMERAL_SERVER_ENVIRONMENT,
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "0",
}
# py-key-value (docket's store, imported with Prefect's server) hooks beartype into the import
# of its whole package, checks that only ever warn and slow the server's start-up.
LIBRARY_SETTINGS = {"PY_KEY_VALUE_DISABLE_BEARTYPE": "true"}
START_TIMEOUT = float(os.environ.get("POOLFLOW_API_START_TIMEOUT", "600"))
REACH_TIMEOUT = 3.0  # seconds a configured API gets to answer before a run starts
_STILL_WAITING_EVERY = 30.0
_POLL_EVERY = 0.02  # seconds between health checks: the flow starts at most this late
_STOP_GRACE = 10.0  # seconds a stopping server gets before it is killed


class ApiStartError(RuntimeError):
    """The API server exited or did not answer; the message says why, in one paragraph."""


def _terminate_with_parent() -> None:
    """In the server process, before exec: SIGTERM it when the poolflow command dies."""
    die_with_parent(signal.SIGTERM)


def _listening_socket() -> socket.socket:
    """A socket listening on a free loopback port, for the server to serve on.

    Made here and handed to the server: clients that connect before the server accepts
    wait in the socket's backlog instead of being refused, so they may start at once.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


@contextlib.contextmanager
def start_lock(home: Path, say: Say) -> Iterator[None]:
    """One API start-up at a time per ``PREFECT_HOME``: migrations must not race."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".poolflow-api-start.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another poolflow command to start Prefect's API on {home}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def loopback_api_url(port: int) -> str:
    """The URL of Prefect's API served on ``port`` of the loopback interface."""
    return f"http://127.0.0.1:{port}/api"


class LocalApiServer:
    """Prefect's API server in a child process of this one, on a free loopback port."""

    def __init__(
        self, say: Say, timeout: float = START_TIMEOUT, keep_for: float | None = None, keep_warm: bool = False
    ) -> None:
        self.say = say
        self.keep_warm = keep_warm  # a kept server also keeps a warm interpreter for commands
        self.timeout = timeout
        try:
            self.keep_for = kept_api.idle_seconds() if keep_for is None else keep_for
        except ValueError as exc:
            raise ApiStartError(str(exc)) from None
        self.port = 0
        self._socket: socket.socket | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._lease: kept_api.Lease | None = None
        self._kept: tuple[Path, int] | None = None  # home, PID of the kept server used
        self.migrating = False
        self._stamp_when_ready: tuple[Path, Path] | None = None  # home, SQLite file migrated
        self.reused = False

    @property
    def api_url(self) -> str:
        return loopback_api_url(self.port)

    def start(self, settings: ApiSettings) -> None:
        """Start the server process on ``settings``' home and database, or take the one kept
        there (``poolflow.kept_api``); ``wait_ready`` then waits until it answers. Called under
        the home's ``start_lock``.

        A database that needs no migrations and block registrations (``poolflow.database_stamp``)
        gets a server that skips them; otherwise ``migrating`` is true until ``wait_ready``
        saw the server answer (and stamped an SQLite database).
        """
        home, database = settings.home, settings.database_path
        if self.keep_for > 0:
            self._lease = kept_api.Lease(home)
            wanted = kept_api.fingerprint()
            kept = kept_api.find(home, wanted, database)
            if kept is not None:
                self._lease.use(kept.pid)
                self._kept = (home, kept.pid)
                self.port, self.reused = kept.port, True
                return
        if database is not None and not database.exists():
            self.say(f"creating Prefect's database at {database} (first run; about half a minute)")
        current = database is not None and database_stamp.is_current(home, database)
        self.migrating = not current
        self._stamp_when_ready = (home, database) if database is not None and not current else None
        self._spawn(home, current)
        if self._lease is not None:
            assert self.process is not None
            self._lease.use(self.process.pid)
            self._kept = (home, self.process.pid)
            kept_api.record(home, kept_api.KeptServer(self.process.pid, self.port, wanted))
            self.say(
                f"Prefect's API server stays up {self.keep_for:g} s after the last command that uses "
                "it, for the next ones (POOLFLOW_API_IDLE=0: it ends with each command)"
            )

    def _spawn(self, home: Path, database_current: bool) -> None:
        self._socket = _listening_socket()
        self.port = int(self._socket.getsockname()[1])
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - the server's life, closed in stop()
        skipped = database_stamp.SKIP_SETTINGS if database_current else {}
        env = {**os.environ, **RECORDER_SETTINGS, **EPHEMERAL_SETTINGS, **LIBRARY_SETTINGS, **skipped}
        for name in ("PREFECT_API_URL", *TERMINAL_ONLY):  # the same server for quiet and verbose commands
            env.pop(name, None)
        # A server kept for later commands ends when idle; any other goes with its command.
        kept = self.keep_for > 0
        life = ["--idle", str(self.keep_for), str(home)] if kept else ["--parent", str(os.getpid())]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "poolflow.api_server", str(self._socket.fileno()), *life],
            env=env,
            pass_fds=(self._socket.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            # only prctl: safe even with threads running
            preexec_fn=None if kept else _terminate_with_parent,
            # Its own session: a terminal's Ctrl-C (sent to the whole foreground group) must not
            # stop the API before the command has recorded how its run ended.
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        """Wait while the server process lives and has not answered ``/health``; stamp a
        database it migrated."""
        if self.reused:
            return  # ``kept_api.find`` has just had it answer
        import httpx  # here: the server starts before the command loads anything it can do without

        started = time.monotonic()
        next_note = started + _STILL_WAITING_EVERY
        with httpx.Client(timeout=2.0, verify=False) as client:  # plain HTTP on loopback: no TLS
            while not self._answers(client):
                now = time.monotonic()
                if self.process is not None and self.process.poll() is not None:
                    raise ApiStartError(self._exit_message())
                if now - started > self.timeout:
                    self.stop(end_kept=True)
                    raise ApiStartError(
                        f"Prefect's API server did not answer within {self.timeout:.0f} s "
                        "(set POOLFLOW_API_START_TIMEOUT to wait longer)"
                    )
                if now >= next_note:
                    self.say(f"still waiting for Prefect's API server ({now - started:.0f} s)")
                    next_note = now + _STILL_WAITING_EVERY
                time.sleep(_POLL_EVERY)
        if self._stamp_when_ready is not None:
            database_stamp.write_stamp(*self._stamp_when_ready)
        self._stamp_when_ready, self.migrating = None, False

    def _answers(self, client: httpx.Client) -> bool:
        import httpx

        try:
            return client.get(f"{self.api_url}/health").status_code == 200
        except httpx.HTTPError:
            return False

    def _exit_message(self) -> str:
        assert self.process is not None and self._stderr is not None
        self._stderr.seek(0)
        tail = self._stderr.read().decode(errors="replace").strip().splitlines()[-5:]
        detail = "; ".join(tail) or "no output"
        return f"Prefect's API server exited with code {self.process.returncode}: {detail}"

    def stop(self, clean: bool = False, end_kept: bool = False) -> None:
        """Let go of a kept server (after a ``clean`` end it ends once idle, after any other
        once unused, ``poolflow.kept_api``), or end it (``end_kept``); ask a server not kept to
        stop (SIGTERM) and return: it finishes its shutdown on its own.

        By then the command has what it needs from the server (its flow run and task runs
        stored, its logs and events sent), and the server stores what it still holds as it
        shuts down, which the command does not wait for. A thread reaps
        it, with SIGKILL after ``_STOP_GRACE`` seconds; should the command end first, the
        server's own watchdog (``poolflow.api_server``) bounds its shutdown the same way.
        """
        process, self.process = self.process, None
        if self._socket is not None:
            self._socket.close()  # the server holds its own copy while it lives
            self._socket = None
        if self._lease is not None:
            self._lease.release(clean)
            self._lease = None
            if clean and not end_kept and self.keep_warm and self._kept is not None:
                warm_interpreter.keep(*self._kept)
        if process is not None and process.poll() is None and (self.keep_for <= 0 or end_kept):
            process.terminate()
            threading.Thread(target=_reap, args=(process,), name="poolflow-api-reaper", daemon=True).start()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Wait for a stopping server to exit; kill it if it takes longer than ``_STOP_GRACE``."""
    try:
        process.wait(timeout=_STOP_GRACE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def local_api(
    say: Say, while_starting: Callable[[], object] = lambda: None, keep_warm: bool = False
) -> Iterator[str | None]:
    """Use the API Prefect is configured with (yields None); otherwise run a local API for the block.

    Prefect's settings are read from all of Prefect's sources (``poolflow.prefect_settings``)
    before Prefect is imported, and checked against Prefect's own once it is: where the two
    differ, Prefect's win. Inside the block Prefect's settings point at the local server
    (yields its URL). ``while_starting`` runs while the server starts (the caller's imports
    of Prefect and its flows: start-up costs the longer of the two, not their sum). A
    ``poolflow`` command's server, when kept, ``keep_warm`` an interpreter for the next
    commands (``poolflow.warm_interpreter``).
    """
    settings = read_api_settings()
    if settings.api_url:
        while_starting()
        settings = prefects_own()
        if settings.api_url:
            check_reachable(settings)
            yield None
            return
        while_starting = _nothing  # it ran
    server = LocalApiServer(say, keep_warm=keep_warm)
    clean = False  # the block ended without an exception
    try:
        settings = _start_server(server, settings, say, while_starting)
        if settings.api_url:
            server.stop(clean=True)
            check_reachable(settings)
            yield None
            return
        from prefect.context import SettingsContext, get_settings_context

        # Prefect's event and log workers are one per process and keep the API they started
        # with: send what they hold there and stop them, so the next ones start on this server.
        flush_to_api()
        context = get_settings_context()  # entered as Prefect's ``temporary_settings`` does
        with SettingsContext(profile=context.profile, settings=pointed_at(server.api_url, settings.home)):
            try:
                yield server.api_url
            finally:
                flush_to_api()
        clean = True
    finally:
        server.stop(clean)


_pointed_ahead: MadeAhead[tuple[str, Path, Settings], Settings] = MadeAhead()


def pointed_at(api_url: str, home: Path) -> Settings:
    """Prefect's current settings with its clients pointed at the local server at ``api_url``
    on ``home`` (as Prefect's ``temporary_settings`` builds them: read again from all sources).

    No flow-run heartbeats: they let a long-lived server notice flow runs whose process died,
    where this server ends with a command that dies (and ``crashed_runs`` marks such runs from
    their process tags); their thread also held up the end of each flow by up to a second, as
    it sleeps in whole seconds between checks. Plain HTTP: the clients' TLS contexts are never
    used, so they load one CA (``loopback_ca``), not ~150.
    """
    from prefect.settings import get_current_settings

    current = get_current_settings()
    made = _pointed_ahead.take((api_url, home, current))
    return made if made is not None else _point(current, api_url, home)


def _point(current: Settings, api_url: str, home: Path) -> Settings:
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY

    updates: Mapping[Any, Any] = {
        PREFECT_API_URL: api_url,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
        PREFECT_API_SSL_CERT_FILE: str(loopback_ca_file(home)),
    }
    return current.copy_with_update(updates=updates)


def prepare_pointed_at(api_url: str, home: Path) -> None:
    """Make ``pointed_at(api_url, home)``'s answer now, for its next call (in the warm
    interpreter: each copy then starts with it made)."""
    from prefect.settings import get_current_settings

    current = get_current_settings()
    _pointed_ahead.keep((api_url, home, current), _point(current, api_url, home))


def check_reachable(settings: ApiSettings, timeout: float = REACH_TIMEOUT) -> None:
    """Raise ``ApiStartError`` unless the configured API answers ``/health`` within ``timeout``.

    A run started against an API that is down would fail seconds later with Prefect's
    traceback; here it fails before anything is written, with what to do.
    """
    import httpx

    assert settings.api_url is not None
    url = settings.api_url.rstrip("/")
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0, headers=headers) as client:
        while True:
            try:
                answer = client.get(f"{url}/health")
                if answer.status_code == 200:
                    return
                problem = f"it answered HTTP {answer.status_code}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if time.monotonic() >= deadline:
                raise ApiStartError(
                    f"Prefect's API at {url} does not answer ({problem}). Start that server "
                    "(prefect server start), point PREFECT_API_URL at one that runs, or unset it "
                    "(environment, .env, prefect.toml, pyproject.toml or profile) to let poolflow "
                    "start its own."
                )
            time.sleep(0.25)


def _nothing() -> None:
    """A ``while_starting`` that has already run."""


def _start_server(
    server: LocalApiServer, settings: ApiSettings, say: Say, while_starting: Callable[[], object]
) -> ApiSettings:
    """Start ``server`` on ``settings``' database, run ``while_starting`` meanwhile, and return
    Prefect's own settings: with an API URL, the caller uses that API instead of the server."""
    while True:
        with start_lock(settings.home, say):
            server.start(settings)
            while_starting()
            while_starting = _nothing
            prefects = prefects_own()
            if not differs_from_prefect(settings, prefects):
                server.wait_ready()
                return settings
            server.stop(clean=True)
        if prefects.api_url:
            return prefects
        settings = prefects  # Prefect keeps its database elsewhere: start again on that one


def flush_to_api() -> None:
    """Send the logs and events still queued in this process (before a server goes, before exit)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    EventsWorker.drain_all(timeout=30)
    APILogWorker.drain_all(timeout=30)
