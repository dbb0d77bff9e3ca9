"""The deployments users run: ``wiki-report``, ``tuple-report`` and ``demo``.

Each has parameter defaults and a schedule. Schedules that would write files nobody asked
for (``wiki-report``, ``tuple-report``) are defined but inactive unless switched on; they
can then be resumed from the UI. ``serve_deployments`` serves them from this process.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron, Interval, Schedule

from poolflow.flows.demo import demo
from poolflow.flows.parameters import DEFAULT_PATTERN
from poolflow.flows.tuple_report import tuple_report
from poolflow.flows.wiki_report import wiki_report


@dataclass(frozen=True)
class DeploymentSettings:
    """What a site changes: where data lives and when the nightly report runs."""

    input_dir: str = "sample-corpus"
    output_dir: str = "out"
    processes: int | None = None
    runner: str = "multiprocessing"
    wiki_cron: str = "0 2 * * *"  # nightly at 02:00
    wiki_interval_seconds: float | None = None  # overrides the cron (used for short test schedules)
    schedules_active: bool = False
    tuple_output: str = "out/tuples.xlsx"
    demo_cron: str = "0 * * * *"  # hourly, harmless: the demo only sleeps


def _wiki_schedule(settings: DeploymentSettings) -> Schedule:
    if settings.wiki_interval_seconds:
        return Interval(timedelta(seconds=settings.wiki_interval_seconds), active=settings.schedules_active)
    return Cron(settings.wiki_cron, timezone="UTC", active=settings.schedules_active)


def _built(deployment: RunnerDeployment | Coroutine[Any, Any, RunnerDeployment]) -> RunnerDeployment:
    """What ``Flow.to_deployment`` returned, narrowed: Prefect types it as maybe a coroutine,
    which it is only when called from async code (``build_deployments`` is sync)."""
    if not isinstance(deployment, RunnerDeployment):
        raise TypeError("to_deployment returned a coroutine: build deployments outside async code")
    return deployment


def build_deployments(settings: DeploymentSettings) -> list[RunnerDeployment]:
    """The three deployments with their schedules and parameter defaults."""
    wiki_parameters: dict[str, Any] = {
        "input_dir": settings.input_dir,
        "output_dir": settings.output_dir,
        "processes": settings.processes,
        "pattern": DEFAULT_PATTERN,
        "parser": "exact",
        "encoding": "utf-8",
        "runner": settings.runner,
    }
    return [
        _built(
            wiki_report.to_deployment(
                name="wiki-report",
                parameters=wiki_parameters,
                schedules=[_wiki_schedule(settings)],
                description="Every WikiExtractor file to xlsx, then one lossless report.xlsx",
                tags=["poolflow"],
            )
        ),
        _built(
            tuple_report.to_deployment(
                name="tuple-report",
                parameters={"output_path": settings.tuple_output, "chunks": 10, "per_chunk": 5},
                schedules=[Cron("30 2 * * *", timezone="UTC", active=settings.schedules_active)],
                tags=["poolflow"],
            )
        ),
        _built(
            demo.to_deployment(
                name="demo",
                parameters={"items": 10, "processes": 6, "max_seconds": 2.0},
                schedules=[Cron(settings.demo_cron, timezone="UTC", active=settings.schedules_active)],
                tags=["poolflow"],
            )
        ),
    ]


def serve_deployments(settings: DeploymentSettings) -> None:
    """Register the deployments and run their flow runs from this process until stopped.

    One flow run at a time: each uses every core, and two runs of ``wiki-report`` share an
    output folder, so a run that comes due while another runs waits for it (Prefect shows it
    ``Late``) instead of starting beside it and failing on the folder's lock. A schedule
    shorter than a run therefore runs back to back rather than piling up processes.

    Note: when ``serve`` stops, Prefect pauses these deployments and deletes their future
    scheduled runs; they come back when serving starts again.
    """
    from prefect import serve

    serve(*build_deployments(settings), limit=1)
