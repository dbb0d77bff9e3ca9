"""The settings a ``poolflow`` command adds to its environment before Prefect is imported.

Prefect reads its settings, its logging configuration among them, as it is imported, so the
command sets these first: no telemetry, and Prefect's log lines on the terminal only for
``run --verbose`` (and every other command). They follow from the arguments alone, read here
without the command's parser: the warm interpreter (``poolflow.warm_interpreter``) imported
Prefect with one such environment, and the command's own process works out which one it needs
in a few milliseconds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

# Every log line still reaches the API and the UI; the terminal shows the bar and a summary
# instead of two lines per task run and a traceback per failure. Prefect's internal services
# log each failed event batch (a whole event, thousands of characters) on the debug handler.
_QUIET = {
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
    "PREFECT_LOGGING_HANDLERS_DEBUG_LEVEL": "CRITICAL",
}
TERMINAL_ONLY = frozenset(_QUIET)
"""Settings that change only what a process prints on its terminal: an API server does not
get them, so one server serves quiet and verbose commands alike (``poolflow.kept_api``)."""
# The embedded API's telemetry heartbeat races its own SQLite start-up and logs a "database is
# locked" traceback; poolflow runs do not need it.
_ALWAYS = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def verbose(argv: Sequence[str]) -> bool:
    """Whether the command ``argv`` (without the program name) prints Prefect's log lines:
    every command but ``run``, and ``run`` given ``-v`` or ``--verbose`` (or an abbreviation,
    as its parser accepts; nothing after ``--``)."""
    if argv[:1] != ["run"]:
        return True
    options = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    return any(
        (token.startswith("-v") or (token.startswith("--v") and "--verbose".startswith(token)))
        for token in options
    )


def command_environment(argv: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with the settings the command ``argv`` adds where ``environ`` has none."""
    added = _ALWAYS if verbose(argv) else {**_ALWAYS, **_QUIET}
    return {**added, **environ}


def set_command_environment(argv: Sequence[str]) -> None:
    """Add them to this process's environment."""
    for name, value in command_environment(argv, os.environ).items():
        os.environ.setdefault(name, value)
