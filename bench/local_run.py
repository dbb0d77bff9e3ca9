"""Run a benchmark's Prefect flow as a ``poolflow`` command would: against the API server the
command starts, with Prefect imported and the flow built while that server starts."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from poolflow.local_api import local_api
from poolflow.startup_gc import building_long_lived_objects

Result = TypeVar("Result")


def run_on_local_api(build: Callable[[], Callable[[], Result]]) -> Result:
    """Start the local API, call ``build`` (imports Prefect, returns the flow) meanwhile, run the flow."""
    built: list[Callable[[], Result]] = []

    def build_while_starting() -> None:
        with building_long_lived_objects():
            built.append(build())

    with local_api(say=lambda message: None, while_starting=build_while_starting):
        return built[0]()
