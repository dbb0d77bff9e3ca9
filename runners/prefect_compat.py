"""What poolflow's runner needs from Prefect where Prefect's releases differ.

The project supports the Prefect releases ``pyproject.toml`` declares; where a name or a
signature differs between them, the function here decides once, so that the rest of the
runner reads one way. Each function's docstring names what it relies on, and
``tests/test_prefect_compat.py`` fails, naming the installed Prefect, when that changes.
"""

from __future__ import annotations


def process_pool_max_workers() -> int | None:
    """``PREFECT_TASKS_RUNNER_PROCESS_POOL_MAX_WORKERS``: the default worker count of Prefect's
    ``ProcessPoolTaskRunner`` (``settings.tasks.runner.process_pool_max_workers``), or None."""
    from prefect.settings import get_current_settings

    runner_settings = get_current_settings().tasks.runner
    value = getattr(runner_settings, "process_pool_max_workers", None)
    return int(value) if value else None
