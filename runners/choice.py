"""The one place that turns a runner name into a Prefect task runner."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

RUNNERS = ("multiprocessing", "process", "thread")


def make_task_runner(name: str = "multiprocessing", processes: int | None = None) -> TaskRunner[Any]:
    """A fresh task runner: ``multiprocessing`` (poolflow's), or Prefect's ``process``/``thread``."""
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    from runners.multiprocessing_runner import MultiprocessingTaskRunner

    if name == "multiprocessing":
        return MultiprocessingTaskRunner(processes)
    if name == "process":
        return ProcessPoolTaskRunner(max_workers=processes)
    if name == "thread":
        return ThreadPoolTaskRunner(max_workers=processes)
    raise ValueError(f"unknown runner {name!r}; choose one of {', '.join(RUNNERS)}")
