"""The flow run's snapshot a worker rebuilds Prefect's contexts from: made once per flow run,
however many chunks start at the same moment, and carrying the flow's settings as they are."""

from __future__ import annotations

import contextvars
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, task
from prefect.context import get_settings_context
from prefect.settings import PREFECT_API_URL, get_current_settings

from poolflow.runners import worker, worker_context

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_chunks_starting_together_build_one_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[bytes] = []
    build = worker_context._pickle_flow_snapshot

    def counted(*args: Any) -> bytes:
        time.sleep(0.2)  # as long as under load: the other chunks arrive meanwhile
        built.append(build(*args))
        return built[-1]

    monkeypatch.setattr(worker_context, "_pickle_flow_snapshot", counted)

    @flow
    def many_chunks() -> list[bytes]:
        start = threading.Barrier(8)
        seen: list[bytes] = []

        def chunk() -> None:
            start.wait()
            seen.append(worker_context._flow_snapshot())

        threads = [threading.Thread(target=contextvars.copy_context().run, args=(chunk,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return seen

    seen = many_chunks()
    assert len(seen) == 8 and len(set(seen)) == 1
    assert len(built) == 1


def test_the_snapshot_carries_the_flows_settings_with_its_api_and_no_ephemeral_server(
    prefect_api: str,
) -> None:
    @flow
    def snapshot() -> bytes:
        return worker_context._flow_snapshot()

    _, settings, flow_run, name, _, _ = pickle.loads(snapshot())
    assert name == "snapshot" and flow_run is not None
    assert settings.api.url == prefect_api.rstrip("/")
    assert settings.server.ephemeral.enabled is False
    own = get_current_settings()
    # Everything else as the flow process has it.
    left = settings.model_dump(exclude={"api": {"url"}, "server": {"ephemeral": {"enabled"}}})
    assert left == own.model_dump(exclude={"api": {"url"}, "server": {"ephemeral": {"enabled"}}})

    # A client on an API the settings do not name (Prefect's ephemeral server): the URLs
    # Prefect derives from the API's (its UI's) follow it, as Prefect's own update makes them.
    elsewhere = "http://127.0.0.1:9/api"
    context = get_settings_context()
    _, moved, *_ = pickle.loads(worker_context._pickle_flow_snapshot(context, None, elsewhere + "/"))
    assert moved.api.url == elsewhere and moved.server.ephemeral.enabled is False
    assert moved.ui_url == own.copy_with_update(updates={PREFECT_API_URL: elsewhere}).ui_url != own.ui_url


def double(x: int) -> int:
    return 2 * x


def test_a_chunks_item_runs_from_jobs_unpickled_once_and_writes_its_own_record(tmp_path: Path) -> None:
    from prefect.context import TaskRunContext
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore

    from poolflow.runners.item_cache import RecordWriter, plain_local_folder

    store = ResultStore(result_storage=LocalFileSystem(basepath=str(tmp_path / "records")))

    @task
    def in_a_task_run() -> tuple[bool, Any, Any]:
        context = TaskRunContext.get()
        assert context is not None
        jobs = worker_context.ChunkJobs(
            double,
            worker_context.TaskRunInfo.of(context),
            RecordWriter(store, None, plain_local_folder(store)),
        )
        shared = worker.Shared(jobs)
        worker.keep(worker.Share(shared.key, shared.blob))  # as a worker keeps what the pool sends it
        first, second = (pickle.loads(pickle.dumps(shared)) for _ in range(2))
        kept = worker_context.call_chunk_item(first, "double(3)", (3,), {}, "k")
        lost = worker_context.call_chunk_item(second, "double(4)", (4,), {}, "../outside/k")
        return first is second, kept, lost

    @flow
    def chunk() -> tuple[bool, Any, Any]:
        return in_a_task_run()

    same, (_, kept, kept_problem), (_, lost, lost_problem) = chunk()
    assert same  # a worker unpickles a chunk's shared part once
    assert (kept, kept_problem) == (6, None)
    assert store.read("k").result == 6
    assert lost == 8 and lost_problem is not None and "outside" in lost_problem  # the call still succeeded
    assert not (tmp_path / "outside").exists()
