"""A Prefect server that goes away and comes back mid-run costs no recorded state."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import PrefectServer, free_port
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.settings import PREFECT_API_URL, temporary_settings
from python_calamine import CalamineWorkbook

POOLFLOW = str(Path(sys.executable).parent / "poolflow")
FILES, DOCS = 60, 80


@pytest.mark.soak
def test_a_server_restart_mid_run_is_two_lines_and_loses_no_state(tmp_path: Path) -> None:
    server = PrefectServer(tmp_path / "server-home", free_port())
    server.home.mkdir()
    server.start()
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    subprocess.run([POOLFLOW, "sample", str(corpus), "--files", str(FILES), "--docs", str(DOCS)], check=True)
    env = {**os.environ, "PREFECT_API_URL": server.api_url}
    run = subprocess.Popen(
        [POOLFLOW, "run", str(corpus), "-o", str(out), "--processes", "2"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while len(list(out.rglob("wiki_*.xlsx"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        server.stop()
        time.sleep(3)
        written_while_away = len(list(out.rglob("wiki_*.xlsx")))
        server.start()
        _, stderr = run.communicate(timeout=600)
    finally:
        run.kill()
        server_url = server.api_url
    try:
        assert run.returncode == 0, stderr[-3000:]
        assert stderr.count("is unreachable") == 1, stderr
        assert stderr.count("Prefect's API is back") == 1, stderr
        assert f"{FILES}/{FILES}" in stderr  # the bar reached the end
        assert written_while_away >= 3
        long_lines = [line for line in stderr.splitlines() if len(line) >= 300]
        assert long_lines == [], long_lines[0][:3000]
        docs = CalamineWorkbook.from_path(str(out / "report.xlsx")).get_sheet_by_name("docs")
        assert len(docs.to_python()) == 1 + FILES * DOCS

        flow_run_id = stderr.split("/runs/flow-run/")[1].split()[0]
        with (
            temporary_settings(updates={PREFECT_API_URL: server_url}),
            get_client(sync_client=True) as client,
        ):
            flow_run = client.read_flow_run(flow_run_id)
            assert flow_run.state is not None and flow_run.state.is_completed()
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])), limit=200
            )
            assert task_runs and all(t.state is not None and t.state.is_final() for t in task_runs), [
                (t.name, t.state_type) for t in task_runs if t.state is None or not t.state.is_final()
            ]
    finally:
        server.stop()
