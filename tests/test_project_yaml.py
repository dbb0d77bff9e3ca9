"""prefect.yaml is generated from deployments/definitions.py and says what `poolflow serve` serves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_prefect_yaml_is_what_the_definitions_generate() -> None:
    generated = subprocess.run(
        [sys.executable, "-m", "poolflow.deployments.project_yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (REPO / "prefect.yaml").read_text() == generated, (
        "prefect.yaml is stale: python -m poolflow.deployments.project_yaml > prefect.yaml"
    )


def test_each_entrypoint_loads_the_flow_that_serve_deploys() -> None:
    from prefect.flows import load_flow_from_entrypoint

    from poolflow.deployments.definitions import DeploymentSettings, build_deployments

    served = {d.name: d for d in build_deployments(DeploymentSettings())}
    project = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert [d["name"] for d in project["deployments"]] == list(served)
    for deployment in project["deployments"]:
        flow = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
        assert flow.name == served[deployment["name"]].flow_name
        assert set(deployment["parameters"]) <= set(flow.parameters.properties)
