"""``prefect.yaml`` written from ``poolflow.deployments.definitions``, so the two cannot disagree.

``prefect deploy --all`` reads prefect.yaml; ``poolflow serve`` builds the same deployments
in Python. The file is generated (``python -m poolflow.deployments.project_yaml > prefect.yaml``)
and a test checks that the committed one is what this module writes.
"""

from __future__ import annotations

from typing import Any

import yaml
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.deployments.runner import RunnerDeployment

from poolflow.deployments.definitions import DeploymentSettings, build_deployments

HEADER = """\
# Generated from deployments/definitions.py: python -m poolflow.deployments.project_yaml > prefect.yaml
# `prefect deploy --all` registers poolflow's deployments on a process work pool:
#   prefect work-pool create poolflow --type process
#   prefect worker start --pool poolflow        (on each machine, in this directory)
"""
# Where a site's data lives; `poolflow serve` takes them as options instead.
SITE = DeploymentSettings(
    input_dir="/data/text", output_dir="/data/out", tuple_output="/data/out/tuples.xlsx"
)
WORK_POOL = "poolflow"


def _schedule(schedule: Any) -> dict[str, Any]:
    inner = schedule.schedule
    if isinstance(inner, CronSchedule):
        return {"cron": inner.cron, "timezone": inner.timezone, "active": schedule.active}
    if isinstance(inner, IntervalSchedule):
        return {"interval": inner.interval.total_seconds(), "active": schedule.active}
    raise TypeError(f"no prefect.yaml form for {inner!r}")


def _deployment(deployment: RunnerDeployment) -> dict[str, Any]:
    return {
        "name": deployment.name,
        "entrypoint": deployment.entrypoint,
        "description": deployment.description,
        "work_pool": {"name": WORK_POOL},
        "parameters": deployment.parameters,
        "schedules": [_schedule(s) for s in deployment.schedules or []],
        "tags": deployment.tags,
    }


def render(settings: DeploymentSettings = SITE) -> str:
    """The text of prefect.yaml for ``settings``."""
    from prefect import __version__

    project = {
        "name": "poolflow",
        "prefect-version": __version__,
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $POOLFLOW_HOME }}"}}],
        "deployments": [_deployment(d) for d in build_deployments(settings)],
    }
    # PyYAML ships no types (its functions are Any to mypy); safe_dump with no stream returns a str.
    body: str = yaml.safe_dump(project, sort_keys=False, allow_unicode=True, width=100)
    return HEADER + body


if __name__ == "__main__":
    print(render(), end="")
