"""Task options keep their per-item meaning in a chunked map.

Each case runs with chunks of several items, with ``chunksize=1`` and with Prefect's own
``ProcessPoolTaskRunner`` (the control), in the same parametrised test.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, task, unmapped
from prefect.cache_policies import INPUTS
from prefect.client.schemas.objects import TaskRun
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner
from prefect_helpers import task_runs

from poolflow import MultiprocessingTaskRunner

RUNNERS: dict[str, Callable[[], TaskRunner[Any]]] = {
    "chunks-of-3": lambda: MultiprocessingTaskRunner(2, chunksize=3),
    "chunksize-1": lambda: MultiprocessingTaskRunner(2, chunksize=1),
    # One worker: the cases are about what Prefect does inside and around a task run, not about
    # parallelism, and each worker Prefect spawns imports Prefect and this module anew.
    "prefect": lambda: ProcessPoolTaskRunner(1),
}
LIFETIME = 900.0  # seconds a cached item lives: longer than any run here, on however busy a machine
SHORT_LIFETIME = 5.0  # for the expiry test: counted from each item's write, so load cannot shorten it


@pytest.fixture
def api(prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The session's server, also in the environment: Prefect's process pool starts its
    workers from the environment, as a user's script would set it."""
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    return prefect_api


@task(cache_policy=INPUTS, persist_result=True, cache_expiration=timedelta(seconds=LIFETIME))
def stamp(x: int, salt: str) -> int:
    """A value that differs every time it is computed."""
    return time.time_ns() + x


def _stamping(kind: str, salt: str, *, refresh: bool = False, lifetime: float = LIFETIME) -> State[Any]:
    """A flow run mapping ``stamp``; its result: the values and the items' state names."""
    job = stamp.with_options(refresh_cache=refresh, cache_expiration=timedelta(seconds=lifetime))

    @flow(task_runner=RUNNERS[kind]())
    def stamping() -> tuple[list[int], list[str]]:
        futures = job.map(x=list(range(6)), salt=unmapped(salt))
        return [future.result() for future in futures], [future.state.name for future in futures]

    return stamping(return_state=True)


def _stamps(kind: str, salt: str, *, refresh: bool = False, lifetime: float = LIFETIME) -> list[int]:
    values: list[int] = _stamping(kind, salt, refresh=refresh, lifetime=lifetime).result()[0]
    return values


def _final_task_run_states(state: State[Any], count: int, patience: float = 60.0) -> dict[str, str | None]:
    """Each task run's state name once the API has recorded ``count`` final ones (task run
    states reach the API as events, a moment after the flow run ends)."""
    deadline = time.monotonic() + patience
    while True:
        runs = task_runs(state)
        final = len(runs) >= count and all(run.state is not None and run.state.is_final() for run in runs)
        if final or time.monotonic() > deadline:
            return {run.name: run.state_name for run in runs}
        time.sleep(0.5)


@pytest.mark.parametrize("kind", sorted(RUNNERS))
def test_cached_items_are_reused_and_refreshed_as_task_runs_do(kind: str, api: str) -> None:
    salt = uuid.uuid4().hex
    first = _stamps(kind, salt)
    again = _stamping(kind, salt)
    values, names = again.result()
    assert values == first, "a second run within the lifetime reuses every item"
    assert names == ["Cached"] * 6
    # Run from this test process, the control's task runs never reach the session's API (its
    # workers' events go elsewhere; tests/test_task_context.py runs it as a script for that).
    if kind != "prefect":
        shown = _final_task_run_states(again, count=2 if kind == "chunks-of-3" else 6)
        assert set(shown.values()) == {"Cached"}, f"the API shows what was reused: {shown}"
    refreshed = _stamps(kind, salt, refresh=True)
    recomputed = all(new != old for new, old in zip(refreshed, first, strict=True))
    assert recomputed, "refresh_cache recomputes every item"
    assert _stamps(kind, salt) == refreshed, "a refresh writes what the next run reuses"


@pytest.mark.parametrize(("writer", "reader"), [("chunks-of-3", "prefect"), ("prefect", "chunks-of-3")])
def test_items_one_runner_cached_are_reused_by_the_other(writer: str, reader: str, api: str) -> None:
    """A chunk's items are cached under the keys and in the records Prefect's own task runs
    use: a user switching runners (or retrying a flow run on the other) loses no cached item."""
    salt = uuid.uuid4().hex
    first = _stamps(writer, salt)
    values, names = _stamping(reader, salt).result()
    assert values == first, f"{reader} reuses every item {writer} computed"
    assert names == ["Cached"] * 6


@pytest.mark.parametrize("kind", sorted(RUNNERS))
def test_cached_items_expire_as_task_runs_do(kind: str, api: str) -> None:
    salt = uuid.uuid4().hex
    first = _stamps(kind, salt, lifetime=SHORT_LIFETIME)
    time.sleep(SHORT_LIFETIME + 1)  # every item's expiry has passed: each counts from its write
    expired = _stamps(kind, salt, lifetime=SHORT_LIFETIME)
    assert all(new != old for new, old in zip(expired, first, strict=True)), "no expired value is served"


class Transient(Exception):
    """An error worth a retry."""


def only_transient(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Retry an item only when its own error is ``Transient``."""
    try:
        state.result()
    except Transient:
        return True
    except Exception:
        return False
    return False


@task(retries=1, retry_delay_seconds=0, retry_condition_fn=only_transient)
def flaky(x: int, attempts: str) -> int:
    """Odd items fail once with ``Transient``; even items always fail with ``ValueError``."""
    folder = Path(attempts)
    before = len(list(folder.glob(f"{x}-*")))
    (folder / f"{x}-{uuid.uuid4().hex}").touch()
    if x % 2 == 0:
        raise ValueError(f"item {x} is bad")
    if before == 0:
        raise Transient(f"item {x} failed once")
    return x


@pytest.mark.parametrize("kind", sorted(RUNNERS))
def test_the_retry_condition_sees_each_items_own_error(kind: str, api: str, tmp_path: Path) -> None:
    @flow(task_runner=RUNNERS[kind]())
    def flaking() -> list[State[Any]]:
        attempts = unmapped(str(tmp_path))
        futures: list[PrefectFuture[int]] = list(flaky.map(x=list(range(6)), attempts=attempts))
        for future in futures:
            future.wait()
        return [future.state for future in futures]

    states = flaking()
    attempts = {x: len(list(tmp_path.glob(f"{x}-*"))) for x in range(6)}
    assert attempts == {0: 1, 1: 2, 2: 1, 3: 2, 4: 1, 5: 2}, "only items whose own error is Transient retry"
    assert [state.is_completed() for state in states] == [False, True] * 3
    assert [state.result() for state in states[1::2]] == [1, 3, 5]
    for state in states[0::2]:
        with pytest.raises(ValueError, match="is bad"):
            state.result()


def _noted(task: Any, task_run: TaskRun, state: State[Any]) -> None:
    """A state hook: Prefect calls it once per task run, so once per chunk here."""


@task(tags=["quota"], on_failure=[_noted])
def limited(x: int) -> int:
    return x


@pytest.mark.parametrize("kind", sorted(RUNNERS))
def test_a_map_whose_per_run_options_apply_per_chunk_says_so_once(
    kind: str, api: str, caplog: pytest.LogCaptureFixture
) -> None:
    @flow(task_runner=RUNNERS[kind]())
    def limiting() -> list[int]:
        return [future.result() for future in limited.map(list(range(4)))]

    with caplog.at_level("WARNING"):
        assert limiting() == [0, 1, 2, 3]
    said = [record.getMessage() for record in caplog.records if "apply per chunk" in record.getMessage()]
    if kind == "chunks-of-3":
        assert len(said) == 1, said
        assert "tags ['quota']" in said[0] and "on_failure" in said[0] and "chunksize=1" in said[0]
    else:
        assert said == [], "one task run per item: every option is per item already"


@task(persist_result=True, result_storage_key="stamp-{parameters[salt]}-{parameters[x]}")
def keyed_stamp(x: int, salt: str) -> int:
    """A value that differs every time it is computed, stored under a key of its own."""
    return time.time_ns() + x


@pytest.mark.parametrize("kind", sorted(RUNNERS))
def test_each_item_is_stored_and_reused_under_its_own_result_storage_key(kind: str, api: str) -> None:
    salt = uuid.uuid4().hex

    @flow(task_runner=RUNNERS[kind]())
    def keyed() -> list[int]:
        return [future.result() for future in keyed_stamp.map(x=list(range(4)), salt=unmapped(salt))]

    first = keyed()
    home = Path(os.environ["PREFECT_HOME"])
    assert sorted(path.name for path in home.rglob(f"stamp-{salt}-*")) == [
        f"stamp-{salt}-{x}" for x in range(4)
    ]
    assert keyed() == first, "Prefect reads a result stored under the key back as the cached value"
