"""A Ctrl-C that ends a user's flow script prints one line instead of Prefect's call stack.

An interrupted flow run's ``KeyboardInterrupt`` leaves the flow engine and reaches the
script's top level, where Python prints its traceback: twenty lines of Prefect's engine
and a thread lock, after Prefect has already logged the crash. When that interrupt passes
through the runner's exit in the main thread, the runner wraps ``sys.excepthook`` so that
this one exception, if nothing catches it, prints one line. Any other exception goes to
the hook as it was, which is then put back; so does this one if the script catches it and
later fails otherwise. The exit status stays Python's own for an uncaught Ctrl-C (killed by
SIGINT, 130 in a shell). Nothing is changed unless the flow run is already ending by Ctrl-C.
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType

LINE = "poolflow: interrupted (Ctrl-C); the flow run and its workers stopped"


def one_line_for(interrupt: BaseException) -> None:
    """Make ``interrupt``, if it is Ctrl-C's and reaches the top level, print one line."""
    if (
        not isinstance(interrupt, KeyboardInterrupt)
        or threading.current_thread() is not threading.main_thread()
    ):
        return
    previous = sys.excepthook

    def excepthook(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
        if sys.excepthook is excepthook:
            sys.excepthook = previous
        if value is interrupt:
            print(LINE, file=sys.stderr, flush=True)
        else:
            previous(kind, value, traceback)

    sys.excepthook = excepthook
