"""``demo``: the old ``count`` example — items sleeping at random on ``processes`` workers."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task

from poolflow.flows.task_map import map_task
from poolflow.runners.multiprocessing_runner import MultiprocessingTaskRunner
from poolflow.tasks.demo import count

count_task = task(name="count", task_run_name="count({name})", log_prints=True)(count)


@flow(name="demo")
def demo(items: int = 10, processes: int = 6, max_seconds: float = 2.0) -> list[tuple[str, int, float]]:
    """Run ``items`` sleeping tasks on ``processes`` workers and log the wall time."""
    started = time.perf_counter()
    names = [f"item{i}" for i in range(1, items + 1)]
    with MultiprocessingTaskRunner(processes) as runner:
        futures = map_task(runner, count_task, {"name": names, "max_seconds": max_seconds})
        results: list[tuple[str, int, float]] = [future.result() for future in futures]
    logger = get_run_logger()
    pids = {pid for _, pid, _ in results}
    slept = sum(seconds for _, _, seconds in results)
    logger.info("%d items on %d worker processes slept %.2f s in total", items, len(pids), slept)
    logger.info("--- %s seconds ---", round(time.perf_counter() - started, 4))
    return results
