"""The command's fast API for a user's own flows: ``poolflow exec -- CMD`` and ``prefect_api()``.

Without an API URL, a flow script run as ``python my_flow.py`` makes Prefect start its
ephemeral server, many seconds before the first task. ``poolflow exec -- python
my_flow.py`` runs the script against the API server the ``poolflow`` command uses instead
(``poolflow.local_api``: one an earlier command kept, or a few seconds; the first run's
database creation waited for; a server that a killed command used ends with it). With an API
URL in Prefect's settings, the script runs as it is, against that API.

```
poolflow exec ──► API server (listening socket made here, handed over: early clients wait)
      └──► CMD with PREFECT_API_URL=http://127.0.0.1:PORT/api, started at once when the
           database is current (else once the server answers), in this terminal's group
```

Signals: a terminal's Ctrl-C reaches the command and ``CMD`` alike; this process lets ``CMD``
handle it and waits for it, then stops the server, so ``CMD`` can still record its flow
run's end. SIGTERM sent to this process alone is passed on to ``CMD``. The exit code is
``CMD``'s (128 + N when a signal N ended it).

``prefect_api()`` does the same for Python callers: inside the block, this process's
Prefect settings point at the command's server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

from poolflow.local_api import LocalApiServer, Say, local_api, say_on_stderr, start_lock
from poolflow.loopback_ca import loopback_ca_file
from poolflow.prefect_settings import read_api_settings


@contextlib.contextmanager
def prefect_api(say: Say = say_on_stderr) -> Iterator[str | None]:
    """Inside the block, Prefect's client uses the command's API server (yields its URL), or
    the API Prefect's settings name (yields None)."""
    with local_api(say) as url:
        yield url


def run_command(command: Sequence[str], say: Say = say_on_stderr) -> int:
    """Run ``command`` against the command's API (or the configured one); its exit code."""
    settings = read_api_settings()
    if settings.api_url:
        return _wait(_spawn(command, {}))
    server = LocalApiServer(say)
    code = -1
    try:
        with start_lock(settings.home, say):
            server.start(settings)
            if server.migrating:  # a migration may take longer than a client waits: start CMD after it
                server.wait_ready()
        env = {
            "PREFECT_API_URL": server.api_url,
            "PREFECT_API_SSL_CERT_FILE": str(loopback_ca_file(settings.home)),
        }
        code = _wait(_spawn(command, env))
        return code
    finally:
        server.stop(clean=0 <= code < 128)  # not ended by a signal: a kept server stays


def _spawn(command: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(list(command), env={**os.environ, **env})
    except OSError as exc:
        raise CommandError(f"cannot run {command[0]!r}: {exc.strerror or exc}") from None


class CommandError(RuntimeError):
    """``poolflow exec``'s command could not be started; the message says why."""


def _wait(child: subprocess.Popen[bytes]) -> int:
    """Wait for ``child``: Ctrl-C is the child's to handle, SIGTERM is passed on to it."""
    handlers: dict[int, Any] = {}

    def pass_on(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    handlers[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    handlers[signal.SIGTERM] = signal.signal(signal.SIGTERM, pass_on)
    try:
        code = child.wait()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return 128 - code if code < 0 else code


def main(argv: Sequence[str]) -> int:
    """``poolflow exec -- CMD ...``."""
    command = list(argv[1:] if argv and argv[0] == "--" else argv)
    if not command:
        print(
            "poolflow exec: error: name a command to run, e.g. poolflow exec -- python my_flow.py",
            file=sys.stderr,
        )
        return 2
    return run_command(command)
