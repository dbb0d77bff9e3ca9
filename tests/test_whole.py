"""Prefect's engine hands a ``Whole`` to the task as it is, without walking into its value."""

from __future__ import annotations

import uuid
from concurrent.futures import Future

from prefect.futures import PrefectConcurrentFuture
from prefect.utilities.engine import collect_task_run_inputs_sync, resolve_inputs_sync

from flows.whole import Whole


def test_the_engine_neither_walks_nor_copies_a_whole() -> None:
    inner: Future[int] = Future()
    future = PrefectConcurrentFuture[int](task_run_id=uuid.uuid4(), wrapped_future=inner)
    stats = [(["1", "2"], [3, 4]), future]
    # Walked, a list is searched for futures (and copied with their results)…
    assert len(collect_task_run_inputs_sync({"stats": stats})) == 1
    # …wrapped, it is passed on untouched: the very object, nothing searched in it.
    whole = Whole(stats)
    assert collect_task_run_inputs_sync({"stats": whole}) == set()
    resolved = resolve_inputs_sync({"stats": whole})
    assert resolved["stats"] is whole and whole.value is stats
