"""``map_task``: ``TaskRunner.map`` for a synchronous task, with the types it really has.

Prefect annotates ``TaskRunner.map`` as taking a ``Task[P, R | Coroutine[Any, Any, R]]``, which a
``Task[P, R]`` is not (``Task`` is invariant in ``R``), and as returning ``PrefectFutureList[F]``,
a list of futures *of futures*. At run time it takes any task and returns one ``PrefectFuture[R]``
per parameter set; this function says so once, so flows keep their result types.
"""

from __future__ import annotations

from typing import Any, ParamSpec, TypeVar, cast

from prefect import Task
from prefect.futures import PrefectFutureList
from prefect.task_runners import TaskRunner

P = ParamSpec("P")
R = TypeVar("R")


def map_task(runner: TaskRunner[Any], task: Task[P, R], parameters: dict[str, Any]) -> PrefectFutureList[R]:
    """``runner.map(task, parameters)``: one future of ``task``'s result per parameter set, in order."""
    # Prefect's annotation wants a task that may return a coroutine; any task is accepted at run time.
    futures = runner.map(task, parameters)  # type: ignore[arg-type]
    # PrefectFutureList[F] is annotated as holding futures of F; it holds futures of R.
    return cast("PrefectFutureList[R]", futures)
