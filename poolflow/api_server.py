"""The process that serves Prefect's API for ``poolflow`` commands (see ``local_api``).

Usage: ``python -m poolflow.api_server FD --parent PID`` (ends with the command ``PID``) or
``FD --idle SECONDS HOME`` (kept for later commands, ``poolflow.kept_api``).

Prefect's own app (``create_app``) under uvicorn, serving on the listening socket ``FD`` that
``local_api`` made and passed on (clients that connect before the app is built wait in its
backlog), with these differences from ``prefect server start``:

- The app is imported and built with the collector paused (``poolflow.startup_gc``), which
  shortens the server's start-up.
- Before it serves, one request for a path no route has walks the whole router: FastAPI
  builds each route's request handling when a request first passes it, which would
  otherwise slow the command's first real requests.
- The task-run recorder writes its batch every ``flush_interval`` seconds as set, where
  Prefect truncates the setting to whole seconds (``int(flush_interval)``, so 0.5 became
  0: a loop spinning a core). The command waits at its end for its last task runs to be
  stored, on average half an interval: ``local_api`` sets 0.1 s
  (``poolflow.runners.prefect_compat.honour_recorder_flush_interval``).
- A request that lost a race for SQLite's write lock (a transaction that read, then could not
  write while another connection wrote) is answered with a short ``Retry-After``, so Prefect's
  client repeats it at once instead of after its backoff of seconds
  (``poolflow.runners.prefect_compat.retry_lock_conflicts_soon``).

Once its command is gone, a server not kept has 10 s to finish its shutdown
(``exit_if_left_shutting_down``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from poolflow.kept_api import watch_idle
from poolflow.runners.prefect_compat import honour_recorder_flush_interval, retry_lock_conflicts_soon
from poolflow.startup_gc import building_long_lived_objects


def walk_every_route(app: Any) -> None:
    """Pass one request through all of ``app``'s routes (a path none matches)."""
    import asyncio

    import httpx

    async def unmatched() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://poolflow") as client:
            response = await client.get("/api/poolflow-warm-up-matches-no-route")
        if response.status_code != 404:
            raise RuntimeError(f"the warm-up request got {response.status_code}, not 404")

    asyncio.run(unmatched())


def exit_if_left_shutting_down(parent: int, grace: float = 10.0) -> None:
    """Once ``parent``, the command that started this server, is gone, give the server
    ``grace`` seconds, then end it. The command does not wait for its server's shutdown
    (``local_api``), and its death sends the server SIGTERM (a second one is harmless:
    uvicorn forces an exit only on a repeated SIGINT); a shutdown that hangs must not leave
    the server behind. The command passes its PID: ``os.getppid()`` read here would already
    be another process's if the command died while this one started."""
    import os
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        time.sleep(grace)
        os._exit(1)

    threading.Thread(target=watch, name="poolflow-orphan-watch", daemon=True).start()


def main(argv: list[str]) -> None:
    import socket

    fd, life, *what = argv
    if life == "--idle":  # kept between commands (poolflow.kept_api)
        idle, home = what
        watch_idle(Path(home), float(idle))
    else:
        exit_if_left_shutting_down(int(what[0]))
    listening = socket.socket(fileno=int(fd))
    with building_long_lived_objects():
        import uvicorn
        from prefect.server.api.server import create_app

        app = create_app()
        retry_lock_conflicts_soon(app)  # before the walk builds the app's middleware
        walk_every_route(app)
        honour_recorder_flush_interval()
    # A client gone without closing its websocket (a served runner's event subscription) would
    # hold the shutdown until the watchdog's end: such handlers get a second, then are cancelled.
    config = uvicorn.Config(app, log_level="error", lifespan="on", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    server.run(sockets=[listening])


if __name__ == "__main__":
    main(sys.argv[1:])
