"""Chunked ``map``/``imap``: one task run per chunk, yet futures, errors, retries per item."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId
from prefect.client.schemas.objects import TaskRun
from prefect.context import FlowRunContext
from prefect.exceptions import UpstreamTaskError
from prefect.utilities.annotations import unmapped
from prefect_helpers import task_runs

from poolflow.runners import JobTimeoutError, MultiprocessingTaskRunner, WorkerDiedError
from poolflow.runners.chunking import AutoChunkSizer, FixedChunkSizer, make_sizer

pytestmark = pytest.mark.usefixtures("prefect_api")


def executions(path: Path) -> Counter[int]:
    """How many times each item ran, from the lines its task appended to ``path``."""
    if not path.exists():
        return Counter()
    return Counter(int(line) for line in path.read_text().split())


def note(path: str, x: int) -> None:
    with open(path, "a") as handle:
        handle.write(f"{x}\n")


@task(task_run_name="inverse({x})")
def inverse(x: int, log: str) -> float:
    note(log, x)
    return 1 / (x - 5)


@task(task_run_name="flaky({x})", retries=2, retry_delay_seconds=0)
def flaky(x: int, log: str) -> int:
    """Item 2 fails on its first two runs; the others always succeed."""
    note(log, x)
    if x == 2 and executions(Path(log))[2] < 3:
        raise RuntimeError(f"attempt {executions(Path(log))[2]} of item 2")
    return x


# 3 s: a short item on a loaded machine (four test modules at once) took more than 1 s.
@task(task_run_name="spin({x})", timeout_seconds=3)
def spin(x: int) -> int:
    if x == 0:
        while True:  # CPU-bound, never yields
            pass
    return x


@task(task_run_name="kill-self({x})")
def kill_self(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


@task(task_run_name="chatty({x})", log_prints=True)
def chatty(x: int) -> int:
    get_run_logger().warning("logger line from %s", x)
    print(f"print line from {x}")
    return x


@task(task_run_name="fail-on-two({x})")
def fail_on_two(x: int) -> int:
    if x == 2:
        raise ValueError("two")
    return x


@task
def plus_one(x: int) -> int:
    return x + 1


@task(task_run_name="cached({x})", persist_result=True, cache_policy=INPUTS)
def cached_square(x: int, log: str) -> int:
    note(log, x)
    return x * x


@task(
    task_run_name="keyed-spin({x})",
    persist_result=True,
    cache_key_fn=lambda _context, parameters: f"key-{parameters['x']}",
    timeout_seconds=3,
)
def keyed_spin_or_die(x: int, how: str) -> int:
    if x == 0:
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        while True:
            pass
    return x


@task
def tiny(x: int) -> int:
    return x


@task
def shift(x: int, /, by: int, *rest: int, scale: int = 1) -> tuple[int, ...]:
    """Positional-only and variadic parameters: its items cannot all be passed by keyword."""
    return (x + by, *rest, scale)


@task
def keyed(x: int, by: int = 10, *, scale: int = 1) -> tuple[int, str]:
    """Every parameter can be passed by keyword; ``by`` must reach the worker as given."""
    from prefect.runtime import task_run

    return (x + by) * scale, ",".join(sorted(task_run.parameters))


def named(runs: list[TaskRun], prefix: str) -> dict[str, TaskRun]:
    return {run.name: run for run in runs if run.name.startswith(prefix)}


# ----------------------------------------------------------------- sizing policy


def test_auto_sizer_starts_with_one_item_ramps_up_to_the_target_and_shrinks_at_the_tail() -> None:
    sizer = AutoChunkSizer(2, target_seconds=1.0, max_size=1000)
    assert sizer.next_size(10_000) == 1  # the first task run shows at once
    assert sizer.next_size(9_999) == 2  # nothing measured yet: one item per worker
    remaining, sizes = 9_997, list[int]()
    while remaining:
        for _ in range(sizes[-1] if sizes else 3):
            sizer.record(0.01)  # every item takes 10 ms: 2 workers × 1 s / 10 ms = 200 items
        size = sizer.next_size(remaining)
        sizes.append(size)
        remaining -= size
    assert sizes[:4] == [8, 32, 128, 200]  # ramps up, at most fourfold, to the target
    assert max(sizes) == 200
    # The end halves what waits, but a task run costs the same whatever its size: no chunk
    # below a quarter of the target (50 items) but the last, which takes the rest.
    assert sizes[-4:] == [114, 57, 50, 8]
    assert sum(sizes) == 9_997


def test_auto_sizer_follows_a_change_in_item_duration_and_never_exceeds_the_cap() -> None:
    sizer = AutoChunkSizer(1, target_seconds=1.0, max_size=50)
    sizer.next_size(10_000)
    for _ in range(20):
        sizer.record(0.001)
        sizer.next_size(10_000)
    assert sizer.next_size(10_000) == 50  # 1000 wanted, capped
    for _ in range(30):
        sizer.record(0.5)  # items became slow: two per target
    assert sizer.next_size(10_000) == 2
    for _ in range(30):
        sizer.record(30.0)  # slower than the target: one item per task run
    assert sizer.next_size(10_000) == 1
    assert AutoChunkSizer(4).next_size(3) == 1


def test_fixed_sizes_and_bad_settings() -> None:
    assert [FixedChunkSizer(4).next_size(n) for n in (10, 4, 3, 1)] == [4, 4, 3, 1]
    for bad in (0, -1, "big", True, 2.5):
        with pytest.raises(ValueError):
            make_sizer(bad, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MultiprocessingTaskRunner(2, chunksize=0)


# ----------------------------------------------------------------- per-item semantics


def test_futures_per_item_in_order_with_their_own_results_and_errors(tmp_path: Path) -> None:
    log = str(tmp_path / "runs")

    @flow(task_runner=MultiprocessingTaskRunner(2, chunksize=4))
    def chunked() -> list[Any]:
        futures = inverse.map(range(10), log=log)
        return [f.result(raise_on_failure=False) for f in futures]

    state = chunked(return_state=True)
    results = state.result()
    assert [r for i, r in enumerate(results) if i != 5] == [1 / (x - 5) for x in range(10) if x != 5]
    assert isinstance(results[5], ZeroDivisionError)
    assert executions(Path(log)) == Counter(range(10))  # each item ran once
    runs = named(task_runs(state), "inverse(")
    assert set(runs) == {"inverse(0 … 3, 4 items)", "inverse(4 … 7, 4 items)", "inverse(8 … 9, 2 items)"}
    states = {name: run.state.name for name, run in runs.items() if run.state is not None}
    assert states == {
        "inverse(0 … 3, 4 items)": "Completed",
        "inverse(4 … 7, 4 items)": "Failed",  # holds item 5
        "inverse(8 … 9, 2 items)": "Completed",
    }
    assert runs["inverse(4 … 7, 4 items)"].state.message is not None  # type: ignore[union-attr]
    assert "1 of 4 items failed: inverse(5)" in runs["inverse(4 … 7, 4 items)"].state.message  # type: ignore[union-attr]


def test_items_reach_their_function_with_every_kind_of_parameter() -> None:
    @flow(task_runner=MultiprocessingTaskRunner(2, chunksize=3))
    def signatures() -> tuple[list[tuple[int, ...]], list[tuple[int, str]]]:
        shifted = shift.map([1, 2, 3], by=unmapped(10), scale=unmapped(2))
        keyed_runs = keyed.map([1, 2, 3], scale=unmapped(3))
        return [f.result() for f in shifted], [f.result() for f in keyed_runs]

    shifted, keyed_runs = signatures()
    assert shifted == [(11, 2), (12, 2), (13, 2)]
    assert keyed_runs == [(33, "by,scale,x"), (36, "by,scale,x"), (39, "by,scale,x")]


@task(task_run_name="count-rows({x})")
def count_rows(x: int, rows: list[str]) -> int:
    return x + len(rows)


def test_a_value_shared_by_a_chunks_items_is_resolved_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect walks every element of a collection it resolves: an unmapped list is resolved
    once per chunk attempt, not once per item (0.1 s an item for 10,000 rows)."""
    from poolflow.runners import chunked_map

    resolved: Counter[str] = Counter()
    prefects = chunked_map.resolve_inputs_sync

    def counting(parameters: dict[str, Any]) -> dict[str, Any]:
        resolved.update(parameters.keys())
        return prefects(parameters)

    monkeypatch.setattr(chunked_map, "resolve_inputs_sync", counting)
    rows = [f"row {n}" for n in range(1000)]

    @flow(task_runner=MultiprocessingTaskRunner(2, chunksize=3))
    def shared_rows() -> list[int]:
        return [f.result() for f in count_rows.map(range(6), unmapped(rows))]

    assert shared_rows() == [1000, 1001, 1002, 1003, 1004, 1005]
    assert resolved["rows"] == 2  # two chunks of three items


def test_retries_rerun_only_the_failed_items_of_a_chunk(tmp_path: Path) -> None:
    log = tmp_path / "runs"

    @flow(task_runner=MultiprocessingTaskRunner(2, chunksize=4))
    def retrying() -> list[int]:
        return [f.result() for f in flaky.map(range(4), log=str(log))]

    state = retrying(return_state=True)
    assert state.result() == [0, 1, 2, 3]
    assert executions(log) == {0: 1, 1: 1, 2: 3, 3: 1}
    (run,) = named(task_runs(state), "flaky(").values()
    assert run.name == "flaky(0 … 3, 4 items)"
    assert run.run_count == 3 and run.state is not None and run.state.is_completed()


def test_a_failed_item_is_final_only_after_its_last_retry(tmp_path: Path) -> None:
    log = tmp_path / "runs"
    always_failing = inverse.with_options(retries=1, retry_delay_seconds=0)

    @flow(task_runner=MultiprocessingTaskRunner(2, chunksize=3))
    def failing() -> list[Any]:
        return [f.result(raise_on_failure=False) for f in always_failing.map([4, 5, 6], log=str(log))]

    results = failing()
    assert results[0] == -1.0 and results[2] == 1.0 and isinstance(results[1], ZeroDivisionError)
    assert executions(log) == {4: 1, 5: 2, 6: 1}


def test_timeout_applies_to_each_item() -> None:
    @flow(task_runner=MultiprocessingTaskRunner(2, chunksize=4))
    def spinning() -> tuple[list[Any], str | None]:
        futures = spin.map(range(4))
        results = [f.result(raise_on_failure=False) for f in futures]
        return results, futures[0].state.name

    started = time.monotonic()
    results, state_name = spinning()
    assert time.monotonic() - started < 60
    assert results[1:] == [1, 2, 3]
    assert isinstance(results[0], JobTimeoutError)
    assert "spin(0) exceeded its timeout of 3 s" in str(results[0])
    assert state_name == "TimedOut"


def test_a_worker_killed_mid_chunk_fails_only_the_item_it_ran() -> None:
    @flow(task_runner=MultiprocessingTaskRunner(2, chunksize=8))
    def with_a_kill() -> list[Any]:
        return [f.result(raise_on_failure=False) for f in kill_self.map(range(8))]

    state = with_a_kill(return_state=True)
    results = state.result()
    assert [r for i, r in enumerate(results) if i != 3] == [0, 1, 2, 4, 5, 6, 7]
    assert isinstance(results[3], WorkerDiedError)
    assert "died with SIGKILL while running kill-self(3)" in str(results[3])
    (run,) = named(task_runs(state), "kill-self(").values()
    assert run.name == "kill-self(0 … 7, 8 items)"
    assert run.state is not None and run.state.is_failed()


def test_worker_log_lines_name_their_item() -> None:
    @flow(task_runner=MultiprocessingTaskRunner(2, chunksize=2))
    def logging_flow() -> list[int]:
        return [f.result() for f in chatty.map([1, 2])]

    state = logging_flow(return_state=True)
    (run,) = named(task_runs(state), "chatty(").values()
    assert run.name == "chatty(1 … 2, 2 items)"
    wanted = {f"[{x}] {kind} line from {x}" for x in (1, 2) for kind in ("logger", "print")}
    messages: set[str] = set()
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not wanted <= messages:
            logs = client.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[run.id])))
            messages = {log.message for log in logs}
            time.sleep(0.2)
    assert wanted <= messages


def test_a_failed_upstream_fails_only_its_own_downstream_item() -> None:
    @flow(task_runner=MultiprocessingTaskRunner(2, chunksize=4))
    def chained() -> list[Any]:
        upstream = fail_on_two.map(range(4))
        return [f.result(raise_on_failure=False) for f in plus_one.map(upstream)]

    state = chained(return_state=True)
    results = state.result()
    assert [results[0], results[1], results[3]] == [1, 2, 4]
    assert isinstance(results[2], UpstreamTaskError)
    (down,) = [run for run in task_runs(state) if run.name.startswith("plus_one")]
    (up,) = named(task_runs(state), "fail-on-two(").values()
    assert [i.id for i in down.task_inputs["items"]] == [up.id]  # type: ignore[union-attr]


def test_persisted_items_are_cached_one_by_one(tmp_path: Path) -> None:
    log = tmp_path / "runs"

    @flow(task_runner=MultiprocessingTaskRunner(2, chunksize=3))
    def squares(n: int) -> list[int]:
        return [f.result() for f in cached_square.map(range(n), log=str(log))]

    assert squares(6) == [x * x for x in range(6)]
    assert executions(log) == Counter(range(6))
    assert squares(8) == [x * x for x in range(8)]  # items 0-5 come from the cache
    assert executions(log) == Counter(range(8))


def test_each_items_record_is_kept_and_one_that_cannot_be_written_only_warns(
    tmp_path: Path,
) -> None:
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore

    storage = tmp_path / "records"

    @flow(task_runner=MultiprocessingTaskRunner(2, chunksize=3))
    def stored(n: int) -> list[int]:
        kept = cached_square.with_options(result_storage=storage)
        return [f.result() for f in kept.map(range(n), log=str(tmp_path / "runs"))]

    assert stored(4) == [0, 1, 4, 9]
    records = sorted(storage.iterdir())
    assert len(records) == 4
    store = ResultStore(result_storage=LocalFileSystem(basepath=str(storage)))
    assert sorted(store.read(path.name).result for path in records) == [0, 1, 4, 9]

    # The folder is now a file: no record can be written, yet every item succeeds.
    for path in records:
        path.unlink()
    storage.rmdir()
    storage.write_text("not a folder")
    state = stored(2, return_state=True)
    assert state.result() == [0, 1]
    (run,) = named(task_runs(state), "cached(").values()
    assert run.state is not None and run.state.is_completed()
    with get_client(sync_client=True) as client:
        deadline, warned = time.monotonic() + 10, set[str]()
        while time.monotonic() < deadline and len(warned) < 2:
            logs = client.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[run.id])))
            warned = {log.message.split("]")[0] for log in logs if "result not cached: " in log.message}
            time.sleep(0.2)
    assert warned == {"[0", "[1"}


@pytest.mark.parametrize("how", ["timeout", "sigkill"])
def test_a_record_a_lost_worker_left_half_written_is_a_miss(tmp_path: Path, how: str) -> None:
    """A worker killed while it writes an item's record may leave it half-written (here planted,
    as the kill's timing cannot be chosen): the next run cannot read it, so it runs the item
    again and writes the record whole. The lost item writes no record."""
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore

    storage = tmp_path / "records"
    storage.mkdir()
    (storage / "key-1").write_bytes(b'{"metadata": {"storage_')

    @flow(task_runner=MultiprocessingTaskRunner(2, chunksize=2))
    def stored() -> list[Any]:
        kept = keyed_spin_or_die.with_options(result_storage=storage)
        return [f.result(raise_on_failure=False) for f in kept.map([0, 1], how=how)]

    results = stored()
    assert isinstance(results[0], JobTimeoutError if how == "timeout" else WorkerDiedError)
    assert results[1] == 1
    store = ResultStore(result_storage=LocalFileSystem(basepath=str(storage)))
    assert store.read("key-1").result == 1
    # (Prefect 3.7 also stores the chunk's failure there, under a key of its own.)
    assert not (storage / "key-0").exists()


def test_auto_puts_many_short_items_in_few_task_runs_and_imap_keeps_order() -> None:
    @flow(task_runner=MultiprocessingTaskRunner(2))
    def many() -> tuple[list[int], list[int]]:
        runner = FlowRunContext.get().task_runner  # type: ignore[union-attr]
        assert isinstance(runner, MultiprocessingTaskRunner)
        mapped = [f.result() for f in tiny.map(range(300))]
        streamed = list(runner.imap(tiny, ({"x": x} for x in range(300))))
        return mapped, streamed

    state = many(return_state=True)
    mapped, streamed = state.result()
    assert mapped == streamed == list(range(300))
    runs = task_runs(state)
    # 600 items; chunks start at one item, then at most double: far fewer task runs.
    assert len(runs) < 150, len(runs)
    assert all(run.state is not None and run.state.is_completed() for run in runs)
    sizes = [int(run.name.split(", ")[1].split()[0]) if " items)" in run.name else 1 for run in runs]
    assert sum(sizes) == 600
