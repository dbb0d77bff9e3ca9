"""What ``poolflow.runners.prefect_compat`` relies on is still there in the installed Prefect.

Each test names the installed Prefect when it fails, so that a new release that moves or
renames what the runner depends on is found here, not by a silent slowdown elsewhere.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import prefect
import pytest
from prefect.client.schemas.objects import TaskRun
from prefect.settings import PREFECT_TASKS_RUNNER_PROCESS_POOL_MAX_WORKERS, temporary_settings

from poolflow.runners import prefect_compat

INSTALLED = f"Prefect {prefect.__version__}"


def test_process_pool_max_workers_reads_prefects_setting() -> None:
    from prefect.settings import get_current_settings

    runner_settings = get_current_settings().tasks.runner
    assert hasattr(runner_settings, "process_pool_max_workers"), (
        f"{INSTALLED} has no tasks.runner.process_pool_max_workers setting"
    )
    with temporary_settings(updates={PREFECT_TASKS_RUNNER_PROCESS_POOL_MAX_WORKERS: 7}):
        assert prefect_compat.process_pool_max_workers() == 7, INSTALLED
    with temporary_settings(restore_defaults={PREFECT_TASKS_RUNNER_PROCESS_POOL_MAX_WORKERS}):
        assert prefect_compat.process_pool_max_workers() is None, INSTALLED


def test_flush_events_finds_prefects_events_workers() -> None:
    from prefect.events.worker import EventsWorker

    gone = f"Prefect {prefect.__version__}: QueueService.%s is gone; update prefect_compat.flush_events"
    assert isinstance(getattr(EventsWorker, "_instances", None), dict), gone % "_instances"
    assert hasattr(getattr(EventsWorker, "_instance_lock", None), "__enter__"), gone % "_instance_lock"
    prefect_compat.flush_events()  # no events worker in this process: returns at once


def test_run_context_models_complete_in_a_process_that_only_unpickled_a_task_run() -> None:
    """A fresh interpreter holding just a task run builds a TaskRunContext after the rebuild."""
    script = (
        "import pickle, sys\n"
        f"task_run = pickle.loads({pickle.dumps(TaskRun(name='t', task_key='k', dynamic_key='1'))!r})\n"
        "assert 'prefect.tasks' not in sys.modules\n"
        "from prefect.context import TaskRunContext\n"
        "from poolflow.runners.prefect_compat import complete_run_context_models\n"
        "complete_run_context_models()\n"
        "from prefect.results import ResultStore\n"
        "from prefect.tasks import Task\n"
        "from prefect.client.orchestration import get_client\n"
        "TaskRunContext(task=Task(fn=lambda: None), task_run=task_run, parameters={},\n"
        "               result_store=ResultStore(), client=get_client(sync_client=True))\n"
    )
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}  # never reached
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert run.returncode == 0, f"Prefect {prefect.__version__}: {run.stderr[-2000:]}"


def test_prefects_api_server_still_reads_the_ephemeral_variable() -> None:
    """``EPHEMERAL_SERVER_ENVIRONMENT`` keeps the command's server to the services Prefect's own
    temporary server runs; if ``create_app`` stopped reading it, that server would silently
    run every service."""
    import inspect

    from prefect.server.api import server

    (name,) = prefect_compat.EPHEMERAL_SERVER_ENVIRONMENT
    assert f'os.getenv("{name}")' in inspect.getsource(server.create_app), (
        f"{INSTALLED}: create_app no longer reads {name}; update prefect_compat.EPHEMERAL_SERVER_ENVIRONMENT"
    )


def test_the_recorder_patch_refuses_a_consumer_it_does_not_know(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Prefect whose recorder consumer takes other arguments stops the API server at start-up."""
    from prefect.server.services import task_run_recorder

    def consumer(batch_size: int, interval: float) -> None: ...

    monkeypatch.setattr(task_run_recorder, "consumer", consumer)
    changed = f"Prefect {prefect.__version__} changed task_run_recorder.consumer"
    with pytest.raises(RuntimeError, match=changed):
        prefect_compat.honour_recorder_flush_interval()
    assert task_run_recorder.consumer is consumer


def test_result_record_metadata_lives_where_complete_run_context_models_takes_it() -> None:
    import prefect.results

    try:
        from prefect._internal.result_records import ResultRecordMetadata
    except ImportError as exc:
        pytest.fail(f"{INSTALLED}: prefect._internal.result_records is gone ({exc})")
    assert prefect.results.ResultRecordMetadata is ResultRecordMetadata, (
        f"{INSTALLED}: ResultRecordMetadata moved"
    )


def test_task_result_store_is_the_tasks_store_even_inside_an_async_context(prefect_api: str) -> None:
    """Built synchronously from a coroutine too (where Prefect's dispatch would otherwise hand
    back a coroutine), with the task's own serializer and storage key. (Prefect asks the API
    for its default storage.)"""
    import asyncio

    from prefect import task
    from prefect.results import ResultStore
    from prefect.serializers import JSONSerializer

    @task(result_serializer="json", result_storage_key="item-{parameters[n]}")
    def keyed(n: int) -> int:
        return n

    async def in_a_coroutine() -> object:
        return prefect_compat.task_result_store(keyed)

    store = asyncio.run(in_a_coroutine())
    assert isinstance(store, ResultStore), f"{INSTALLED}: {store!r}"
    assert isinstance(store.serializer, JSONSerializer), f"{INSTALLED}: the task's serializer is not used"
    assert store.storage_key_fn != ResultStore().storage_key_fn, f"{INSTALLED}: the task's key is not used"
