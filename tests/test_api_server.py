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

import httpx
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
from poolflow.runners.prefect_compat import honour_recorder_flush_interval, retry_lock_conflicts_soon


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


def _lost_lock_race(kind: str, folder: Path) -> Exception:
    """A real lost race for SQLite's write lock, as SQLAlchemy raises it: a transaction read,
    then wrote while another connection held the write lock (``held``) or after it committed
    (``committed``)."""
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{folder / 'race.db'}", isolation_level="AUTOCOMMIT")
    with engine.connect() as setup:
        setup.exec_driver_sql("PRAGMA journal_mode = WAL")
        setup.exec_driver_sql("CREATE TABLE t (x)")
    with engine.connect() as reader, engine.connect() as writer:
        reader.exec_driver_sql("BEGIN DEFERRED")
        reader.exec_driver_sql("SELECT * FROM t").fetchall()
        if kind == "held":
            writer.exec_driver_sql("BEGIN IMMEDIATE")
        writer.exec_driver_sql("INSERT INTO t VALUES (1)")
        try:
            reader.exec_driver_sql("INSERT INTO t VALUES (2)")
        except sa.exc.OperationalError as exc:
            return exc
    raise AssertionError("SQLite let the reader write")


def _retried_request(app: Any, error: Exception) -> tuple[httpx.Response, list[float]]:
    """GET a route of ``app``'s API that raises ``error`` on its first call, through Prefect's
    own retrying client; the response and the times of the route's calls."""
    import asyncio

    from prefect.client.base import PrefectHttpxAsyncClient

    calls: list[float] = []

    async def racing() -> dict[str, int]:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise error
        return {"calls": len(calls)}

    app.api_app.add_api_route("/poolflow-race", racing, methods=["GET"])

    async def request() -> httpx.Response:
        # As under uvicorn: an error Prefect's handler answered is not raised in the client too.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with PrefectHttpxAsyncClient(transport=transport, base_url="http://test/api") as client:
            return await client.get("/poolflow-race")

    return asyncio.run(request()), calls


def _prefects_app() -> Any:
    from prefect.server.api.server import create_app
    from prefect.settings import PREFECT_UI_ENABLED

    with temporary_settings(updates={PREFECT_UI_ENABLED: False}):
        return create_app(ignore_cache=True)


@pytest.mark.parametrize("race", [("held", "SQLITE_BUSY"), ("committed", "SQLITE_BUSY_SNAPSHOT")])
@pytest.mark.parametrize("answer", ["poolflow's", "Prefect's"])
def test_a_lost_lock_race_is_retried_at_once_not_after_prefects_backoff(
    answer: str, race: tuple[str, str], tmp_path: Path
) -> None:
    """The command's server tells Prefect's client to repeat such a request soon; Prefect's own
    answer (the control) leaves the client to its backoff of about two seconds."""
    kind, name = race
    conflict = _lost_lock_race(kind, tmp_path)
    assert getattr(getattr(conflict, "orig", None), "sqlite_errorname", None) == name
    app = _prefects_app()
    if answer == "poolflow's":
        retry_lock_conflicts_soon(app)
    response, calls = _retried_request(app, conflict)
    assert response.status_code == 200 and response.json() == {"calls": 2}
    waited = calls[1] - calls[0]
    if answer == "poolflow's":
        assert waited < 1.0, f"the retry came {waited:.2f} s after the conflict"
    else:
        assert waited >= 1.5, f"Prefect's client retried after {waited:.2f} s: drop the workaround?"


def test_other_database_errors_keep_prefects_answer() -> None:
    import sqlalchemy as sa

    engine = sa.create_engine("sqlite://")
    with engine.connect() as connection, pytest.raises(sa.exc.OperationalError) as raised:
        connection.exec_driver_sql("SELECT * FROM no_such_table")
    app = _prefects_app()
    retry_lock_conflicts_soon(app)
    from prefect.exceptions import PrefectHTTPStatusError

    with pytest.raises(PrefectHTTPStatusError) as answered:
        _retried_request(app, raised.value)
    response = answered.value.response
    assert response.status_code == 500 and "retry-after" not in response.headers


def test_the_lock_answer_needs_prefects_api_mount() -> None:
    """An app without Prefect's ``api`` mount is refused at start-up, not served differently."""
    from fastapi import FastAPI

    with pytest.raises(RuntimeError, match=r"Prefect \S+ no longer mounts its API app"):
        retry_lock_conflicts_soon(FastAPI())
