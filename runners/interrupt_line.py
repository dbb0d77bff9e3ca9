"""A flow script ended by Ctrl-C, or by a cancel from the Prefect UI, prints one line instead
of Prefect's call stack.

An interrupted flow run's ``KeyboardInterrupt`` leaves the flow engine and reaches the
script's top level, where Python prints its traceback: twenty lines of Prefect's engine
and a thread lock, after Prefect has already logged the crash. A run cancelled from the UI
or API while the runner watched it ends the same way, with the ``CancelledError`` of a task
run the runner stopped. When the runner ends such a run in the main thread, it wraps
``sys.excepthook`` so that this ending, if nothing catches it, prints one line. Any other
exception goes to the hook as it was, which is then put back; so does this one if the
script catches it and later fails otherwise. The exit status stays Python's own (killed by
SIGINT for Ctrl-C, 130 in a shell; 1 for the cancel). Nothing is changed unless the flow
run is already ending so.
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType

LINE = "poolflow: interrupted (Ctrl-C); the flow run and its workers stopped"
CANCELLED_LINE = "poolflow: the flow run was cancelled from the Prefect UI or API; its workers stopped"


def one_line_for(ending: BaseException | type[BaseException], line: str = LINE) -> None:
    """Make ``ending`` (an exception, or any exception of that type), if it reaches the top
    level uncaught, print ``line`` instead of its traceback; only from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = sys.excepthook

    def ends_so(value: BaseException) -> bool:
        return isinstance(value, ending) if isinstance(ending, type) else value is ending

    def excepthook(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
        if sys.excepthook is excepthook:
            sys.excepthook = previous
        if ends_so(value):
            print(line, file=sys.stderr, flush=True)
        else:
            previous(kind, value, traceback)

    sys.excepthook = excepthook
