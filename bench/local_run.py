"""Run a benchmark's Prefect flow as a ``poolflow`` command would: against the API server the
command starts, with Prefect imported, the flow built and poolflow's worker pool started
while that server starts."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TypeVar

from poolflow.local_api import local_api
from poolflow.startup_gc import building_long_lived_objects
from runners.warm_pool import prestarted

Result = TypeVar("Result")


def run_on_local_api(build: Callable[[], Callable[[], Result]], pool_processes: int | None) -> Result:
    """Start the local API; meanwhile start a worker pool of ``pool_processes`` (None: the flow
    does not run on poolflow's runner) and call ``build`` (imports Prefect, returns the flow);
    then run the flow."""
    built: list[Callable[[], Result]] = []
    with contextlib.ExitStack() as warm:

        def build_while_starting() -> None:
            if pool_processes is not None:
                warm.enter_context(prestarted(pool_processes))
            with building_long_lived_objects():
                built.append(build())

        with local_api(say=lambda message: None, while_starting=build_while_starting):
            return built[0]()
