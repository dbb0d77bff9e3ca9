"""The one place that turns a runner name into a Prefect task runner."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

RUNNERS = ("multiprocessing", "dask", "process", "thread")


def make_task_runner(
    name: str = "multiprocessing", processes: int | None = None, dask_address: str | None = None
) -> TaskRunner[Any]:
    """A fresh task runner by name.

    ``multiprocessing`` is poolflow's warm pool; ``dask`` is prefect-dask's ``DaskTaskRunner``
    on the scheduler at ``dask_address`` (or on a local cluster of ``processes`` single-threaded
    workers); ``process`` and ``thread`` are Prefect's own pools.
    """
    if name == "multiprocessing":
        from poolflow.runners.multiprocessing_runner import MultiprocessingTaskRunner

        return MultiprocessingTaskRunner(processes)
    if name == "dask":
        from prefect_dask.task_runners import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": processes, "threads_per_worker": 1})
    if name == "process":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=processes)
    if name == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=processes)
    raise ValueError(f"unknown runner {name!r}; choose one of {', '.join(RUNNERS)}")
