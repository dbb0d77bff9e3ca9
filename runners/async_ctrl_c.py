"""Ctrl-C interrupts an async flow that waits on its task runs, as it interrupts a sync one.

``asyncio.run`` (Python 3.11 and later) replaces Python's Ctrl-C handler by one that only
cancels the main task, which takes effect at that task's next ``await``. A flow's body waits
on its futures with ``result()``, which blocks the event loop's thread without awaiting: the
Ctrl-C then waits until every task run of the flow has finished, and the flow never learns of
it. While a runner is entered on the thread of such a loop (the main thread), Ctrl-C raises
``KeyboardInterrupt`` there, as in a sync flow and as ``asyncio.run`` did before 3.11; the
runner then stops its workers at once. asyncio's handler is put back when the runner exits.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import threading
from collections.abc import Callable


def _unchanged() -> None:
    """Nothing to put back."""


def interrupt_waiting_loop() -> Callable[[], None]:
    """If this is the main thread and an ``asyncio.Runner``'s Ctrl-C handler is installed,
    install Python's default one; return what puts the previous handler back."""
    runner_class = getattr(asyncio, "Runner", None)  # Python 3.11 and later
    handler = signal.getsignal(signal.SIGINT)
    method = handler.func if isinstance(handler, functools.partial) else handler  # the Runner's, bound
    if (
        runner_class is None
        or threading.current_thread() is not threading.main_thread()
        or not isinstance(getattr(method, "__self__", None), runner_class)
    ):
        return _unchanged
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def restore() -> None:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, handler)

    return restore
