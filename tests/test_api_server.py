"""The process serving a command's API: its quick start and its recorder's flush interval."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import alive, seeded_home
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.server.services import task_run_recorder
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL,
    temporary_settings,
)

from poolflow import database_stamp
from poolflow.local_api import LIBRARY_SETTINGS, RECORDER_SETTINGS, local_api
from poolflow.runners.prefect_compat import honour_recorder_flush_interval


def test_prefect_still_truncates_the_recorder_interval_as_the_launcher_expects() -> None:
    """Pins what ``honour_recorder_flush_interval`` works around; when this fails, Prefect
    changed its task-run recorder: drop the workaround if it now honours fractions."""
    start = inspect.getsource(task_run_recorder.TaskRunRecorder.start)
    assert "flush_every=int(self.service_settings().flush_interval)" in start
    parameters = list(inspect.signature(task_run_recorder.consumer).parameters)
    assert parameters[:2] == ["write_batch_size", "flush_every"]


def test_the_launcher_hands_the_recorder_its_fractional_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def consumer(write_batch_size: int, flush_every: int, **options: Any) -> None:
        calls.append({"write_batch_size": write_batch_size, "flush_every": flush_every, **options})

    monkeypatch.setattr(task_run_recorder, "consumer", consumer)
    honour_recorder_flush_interval()
    with temporary_settings(updates={PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL: 0.1}):
        task_run_recorder.consumer(write_batch_size=500, flush_every=0, max_persist_retries=3)
    assert calls == [{"write_batch_size": 500, "flush_every": 0.1, "max_persist_retries": 3}]
    assert float(RECORDER_SETTINGS["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL"]) < 1


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "home"
    monkeypatch.setenv("PREFECT_HOME", str(home))
    yield home


@pytest.fixture
def current_home(fresh_home: Path) -> Path:
    """A new home whose Prefect database exists and is current."""
    return seeded_home(fresh_home)


def _server_environment() -> dict[str, str]:
    """The environment of this process's API server child."""
    (server,) = [p for p in psutil.Process().children() if "poolflow.api_server" in p.cmdline()]
    return server.environ()


@pytest.mark.slow
def test_a_current_database_skips_migrations_and_keeps_every_task_run(fresh_home: Path) -> None:
    from poolflow.flows.demo import demo

    database = fresh_home / "prefect.db"
    with local_api(say=lambda message: None):
        assert "PREFECT_API_DATABASE_MIGRATE_ON_START" not in _server_environment()
        first = demo(items=6, processes=2, max_seconds=0.05, return_state=True)
    assert database_stamp.is_current(fresh_home, database)

    with local_api(say=lambda message: None):
        skipped = {name: _server_environment().get(name) for name in database_stamp.SKIP_SETTINGS}
        assert skipped == database_stamp.SKIP_SETTINGS
        second = demo(items=6, processes=2, max_seconds=0.05, return_state=True)
        with get_client(sync_client=True) as client:
            ids = [first.state_details.flow_run_id, second.state_details.flow_run_id]
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
            assert sorted(run.state_name or "" for run in runs) == ["Completed", "Completed"]
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=100
            )
    # the task runs of both flows (6 items each, some sharing a chunk), stored in a final
    # state before each server stopped
    assert {run.flow_run_id for run in task_runs} == set(ids) and len(task_runs) >= 6
    assert all(run.state is not None and run.state.is_completed() for run in task_runs)


@pytest.mark.slow
def test_a_process_that_reported_to_another_api_reports_to_the_local_one(
    current_home: Path, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefect's event and log workers are per process and keep the API they started with: a
    flow run against another server first must not leave the local API's runs unrecorded."""
    from prefect import flow, task

    from poolflow.flows.demo import demo

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow
    def plain() -> list[int]:  # Prefect's own thread pool: nothing of ours drains its workers
        return double.map([1, 2]).result()

    with monkeypatch.context() as elsewhere:
        elsewhere.setenv("PREFECT_API_URL", prefect_server)
        with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
            assert plain() == [2, 4]
    with local_api(say=lambda message: None):
        state = demo(items=6, processes=2, max_seconds=0.05, return_state=True)
        with get_client(sync_client=True) as client:
            flow_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            task_runs = client.read_task_runs(flow_run_filter=flow_run, limit=100)
    assert task_runs and all(run.state is not None and run.state.is_completed() for run in task_runs)


def test_a_stamp_stops_matching_when_the_database_or_prefect_changes(
    fresh_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    database = fresh_home / "prefect.db"
    fresh_home.mkdir()
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE alembic_version (version_num TEXT)")
        db.execute("INSERT INTO alembic_version VALUES ('aaa111')")
    assert not database_stamp.is_current(fresh_home, database)  # no stamp yet
    database_stamp.write_stamp(fresh_home, database)
    assert database_stamp.is_current(fresh_home, database)
    with sqlite3.connect(database) as db:
        db.execute("UPDATE alembic_version SET version_num = 'bbb222'")  # migrated by another Prefect
    assert not database_stamp.is_current(fresh_home, database)
    database_stamp.write_stamp(fresh_home, database)
    with monkeypatch.context() as upgraded:
        upgraded.setattr(database_stamp, "prefect_distributions", lambda: ["prefect-9.9.9.dist-info"])
        assert not database_stamp.is_current(fresh_home, database)
    assert database_stamp.is_current(fresh_home, database)
    database.unlink()
    assert not database_stamp.is_current(fresh_home, database)


def test_prefect_reads_each_setting_a_current_database_skips_as_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.settings
    from prefect.settings import Settings

    for name, value in database_stamp.SKIP_SETTINGS.items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # read from this environment, as the server's are
    for name in database_stamp.SKIP_SETTINGS:
        assert getattr(prefect.settings, name).value_from(settings) is False, name


def test_the_server_settings_turn_off_py_key_value_type_checks() -> None:
    show = "import key_value.aio as kv; print(kv.strategy.name)"
    default = {name: value for name, value in os.environ.items() if name not in LIBRARY_SETTINGS}
    runs = [
        subprocess.run([sys.executable, "-c", show], env=env, capture_output=True, text=True, check=True)
        for env in (default, {**default, **LIBRARY_SETTINGS})
    ]
    strategies = [run.stdout.strip() for run in runs]
    assert strategies == ["O1", "O0"]  # checked by default; not with the server's settings


def test_clients_of_the_local_api_load_a_one_certificate_ca_file(current_home: Path) -> None:
    import ssl

    from prefect.settings import PREFECT_API_SSL_CERT_FILE

    before = PREFECT_API_SSL_CERT_FILE.value()
    with local_api(say=lambda message: None):
        ca_file = PREFECT_API_SSL_CERT_FILE.value()
        assert ca_file is not None and Path(ca_file).parent == current_home
        # what each Prefect client loads when it is made: one certificate, not certifi's ~150
        assert ssl.create_default_context(cafile=ca_file).cert_store_stats()["x509_ca"] == 1
        with get_client(sync_client=True) as client:
            assert client.api_healthcheck() is None  # the plain-HTTP API answers these clients
    assert PREFECT_API_SSL_CERT_FILE.value() == before


def test_leaving_the_local_api_does_not_wait_for_its_server_which_still_ends(current_home: Path) -> None:
    with local_api(say=lambda message: None):
        (server,) = [p for p in psutil.Process().children() if "poolflow.api_server" in p.cmdline()]
    deadline = time.monotonic() + 30
    while alive([server.pid]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive([server.pid]) == []  # ended on its own


def test_a_server_left_behind_by_its_command_ends_after_its_grace() -> None:
    """The watchdog of ``poolflow.api_server``: a process whose parent is gone exits, also when
    the parent is gone before the watchdog starts (here it exits at once)."""
    child = (
        "from poolflow.api_server import exit_if_left_shutting_down; import sys, time; "
        "exit_if_left_shutting_down(int(sys.argv[1]), grace=1.0); time.sleep(120)"
    )
    parent = (
        "import os, subprocess, sys; "
        f"p = subprocess.Popen([sys.executable, '-c', {child!r}, str(os.getpid())]); print(p.pid, flush=True)"
    )
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True)
    orphan = psutil.Process(int(out.stdout))  # its parent has exited; init reaps it
    gone, left = psutil.wait_procs([orphan], timeout=30)
    assert left == [] and gone == [orphan]
    assert time.monotonic() - started < 60, "it outlived its grace"
