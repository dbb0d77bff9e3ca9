"""The threads on which a runner's task-run engines run, none of which can hold up an exit.

``ThreadPoolExecutor`` joins its threads when the interpreter exits, and its ``shutdown``
can only wait for them without limit. An engine thread may not finish for a long time:
Prefect's engine sleeps through a task's retry delay on it, and after a second Ctrl-C or
SIGTERM it can wait forever on a future's lock that the signal's exception left held in
the main thread (raised inside that lock's ``with`` block exit). An interrupted flow must
still end within seconds, so these threads are daemons and ``shutdown`` takes a time limit.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_Call = tuple[Future[Any], Callable[[], Any]]


class EngineThreads:
    """``count`` daemon threads running submitted calls in order of submission."""

    def __init__(self, count: int, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()  # a call queued after shutdown's sweep would never settle
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}_{i}", daemon=True) for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Queue ``fn(*args, **kwargs)``; its future. Refused once shut down."""
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new engine runs after shutdown")
            self._calls.put((future, functools.partial(fn, *args, **kwargs)))
        return future

    def shutdown(self, timeout: float | None = None) -> list[str]:
        """Cancel the calls not yet started and wait up to ``timeout`` seconds (None: without
        limit) for the running ones; the names of the threads still running after it."""
        with self._lock:
            self._closed = True
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                break
            if call is not None:
                call[0].cancel()
        for _ in self._threads:
            self._calls.put(None)
        waited = [thread for thread in self._threads if thread is not threading.current_thread()]
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in waited:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return [thread.name for thread in waited if thread.is_alive()]

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:  # the engine's own interrupt, as ThreadPoolExecutor does
                future.set_exception(exc)
            else:
                future.set_result(result)
