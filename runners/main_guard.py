"""Refuse a flow that runs from a script's top level outside ``if __name__ == "__main__":``.

Workers started with ``forkserver`` or ``spawn`` import the script that started the flow (as
``__mp_main__``), so its top-level statements run again in each of them; only a block under
``if __name__ == "__main__":`` does not. A flow called outside such a block would run again
in every worker, each starting its own flow run (and, without an API URL, its own Prefect
server), each worker dying and its replacement doing the same. Python's own pools fail in
the worker with a message naming the guard; this check fails in the flow's own process,
before any worker starts, with the script's path and line.

The check reads the main thread's stack when the runner starts: a frame running the main
script's top level (``<module>`` of ``__main__``) at a line outside every ``__name__ ==
"__main__"`` block means the flow was called from unguarded top-level code. Scripts that
workers do not import are not checked: an interactive session, ``python -c``, and a
package's ``__main__`` run with ``python -m`` (multiprocessing skips those too).
"""

from __future__ import annotations

import ast
import functools
import sys
import threading
from types import FrameType

GUARD = 'if __name__ == "__main__":'


class MissingMainGuardError(SystemExit):
    """The flow runs from a script's top level outside ``if __name__ == "__main__":``.

    A ``SystemExit``: the script cannot work as written, so it ends with this one message
    (exit status 1, no traceback), and Prefect's engine, which treats it as a crash, marks
    the flow run Crashed rather than leaving it Running.
    """


def check_main_guard() -> None:
    """Raise ``MissingMainGuardError`` if the main thread runs the main script's top level
    outside its ``__main__`` guard."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if main is None or not path or (spec is not None and spec.name.split(".")[-1] == "__main__"):
        return
    frame: FrameType | None = sys._current_frames().get(threading.main_thread().ident or 0)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is vars(main):
            line = frame.f_lineno
            if not any(first <= line <= last for first, last in _guarded_lines(path)):
                raise MissingMainGuardError(
                    f"poolflow: {path}, line {line}, runs a flow on MultiprocessingTaskRunner at the "
                    "top level of the script. Its worker processes import the script, so each would "
                    f"run the flow again: put the call under {GUARD}"
                )
            return
        frame = frame.f_back


@functools.lru_cache(maxsize=8)
def _guarded_lines(path: str) -> tuple[tuple[int, int], ...]:
    """The line ranges of ``path``'s top-level ``if __name__ == "__main__":`` blocks."""
    try:
        with open(path, "rb") as source:
            tree = ast.parse(source.read(), path)
    except (OSError, SyntaxError, ValueError):
        return ((1, sys.maxsize),)  # unreadable: nothing to check against, so do not refuse
    return tuple(
        (node.lineno, node.end_lineno or node.lineno)
        for node in tree.body
        if isinstance(node, ast.If) and _is_main_test(node.test)
    )


def _is_main_test(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [side.id for side in sides if isinstance(side, ast.Name)]
    strings = [side.value for side in sides if isinstance(side, ast.Constant)]
    return names == ["__name__"] and strings == ["__main__"]
