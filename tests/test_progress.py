"""Finished items are counted by done-callbacks, from whichever thread settles them."""

from __future__ import annotations

import concurrent.futures
import threading
import uuid

from prefect.futures import PrefectConcurrentFuture
from prefect.states import Completed

from poolflow.flows.progress import FinishedCount


def futures(n: int) -> list[PrefectConcurrentFuture[int]]:
    return [
        PrefectConcurrentFuture(task_run_id=uuid.uuid4(), wrapped_future=concurrent.futures.Future())
        for _ in range(n)
    ]


def test_counts_futures_settled_by_other_threads_and_wakes_when_all_are_done() -> None:
    pending = futures(50)
    pending[0].wrapped_future.set_result(Completed(data=0))  # done before counting starts
    finished = FinishedCount(pending)
    assert finished.count == 1
    assert not finished.wait(0.01)

    def settle(part: list[PrefectConcurrentFuture[int]]) -> None:
        for future in part:
            future.wrapped_future.set_result(Completed(data=1))

    threads = [threading.Thread(target=settle, args=(pending[k::4],)) for k in range(1, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rest = pending[4::4]
    assert not finished.wait(0.01) and finished.count == 50 - len(rest)
    settle(rest)
    assert finished.wait(5) and finished.count == 50


def test_no_futures_is_done_at_once() -> None:
    assert FinishedCount([]).wait(0)
