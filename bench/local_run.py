"""Run a benchmark's Prefect flow as a ``poolflow`` command would (``poolflow.warm_start``):
against the API server an earlier command kept, or one it starts, with Prefect imported, the
flow built and poolflow's worker pool started meanwhile."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from poolflow.warm_start import api_with_warm_start

Result = TypeVar("Result")


def run_on_local_api(build: Callable[[], Callable[[], Result]], pool_processes: int | None) -> Result:
    """Start the local API; meanwhile start a pool of ``pool_processes`` workers (None: the
    flow does not run on poolflow's runner) and ``build`` the flow; then run it."""
    built: list[Callable[[], Result]] = []
    with api_with_warm_start(lambda message: None, lambda: built.append(build()), pool_processes):
        return built[0]()
