"""What ``poolflow.runners.prefect_compat`` relies on is still there in the installed Prefect.

Each test names the installed Prefect when it fails, so that a new release that moves or
renames what the runner depends on is found here, not by a silent slowdown elsewhere.
"""

from __future__ import annotations

import prefect
from prefect.settings import PREFECT_TASKS_RUNNER_PROCESS_POOL_MAX_WORKERS, temporary_settings

from poolflow.runners import prefect_compat

INSTALLED = f"Prefect {prefect.__version__}"


def test_process_pool_max_workers_reads_prefects_setting() -> None:
    from prefect.settings import get_current_settings

    runner_settings = get_current_settings().tasks.runner
    assert hasattr(runner_settings, "process_pool_max_workers"), (
        f"{INSTALLED} has no tasks.runner.process_pool_max_workers setting"
    )
    with temporary_settings(updates={PREFECT_TASKS_RUNNER_PROCESS_POOL_MAX_WORKERS: 7}):
        assert prefect_compat.process_pool_max_workers() == 7, INSTALLED
    with temporary_settings(restore_defaults={PREFECT_TASKS_RUNNER_PROCESS_POOL_MAX_WORKERS}):
        assert prefect_compat.process_pool_max_workers() is None, INSTALLED
