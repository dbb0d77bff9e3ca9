"""MultiprocessingTaskRunner semantics, checked against a real Prefect server."""

from __future__ import annotations

import gc
import os
import pickle
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import alive, started_workers
from prefect import flow, get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId
from prefect.context import FlowRunContext
from prefect.states import State
from prefect.utilities.annotations import unmapped
from prefect_helpers import task_runs

from poolflow.runners import MultiprocessingTaskRunner
from poolflow.warm_start import prestarted

pytestmark = pytest.mark.usefixtures("prefect_api")

START_METHODS = ["spawn", "forkserver"]


@task(task_run_name="square({x})")
def square(x: int, delay: float = 0.0) -> int:
    time.sleep(delay)
    return x * x


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def where() -> int:
    return os.getpid()


@task
def fail(message: str) -> None:
    raise ValueError(message)


@task(retries=2, retry_delay_seconds=0)
def succeed_on_third_try(counter: str) -> int:
    path = Path(counter)
    attempt = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempt))
    if attempt < 3:
        raise RuntimeError(f"attempt {attempt}")
    return attempt


@task(log_prints=True, task_run_name="chatty({x})")
def chatty(x: int) -> int:
    get_run_logger().warning("logger line from %s", x)
    print(f"print line from {x}")
    return x


@task
def append_to(path: str, text: str) -> str:
    with open(path, "a") as handle:
        handle.write(text)
    return text


def _initializer(marker: str) -> None:
    os.environ["POOLFLOW_TEST_MARKER"] = marker


@task
def read_marker() -> str:
    return os.environ.get("POOLFLOW_TEST_MARKER", "")


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_map_submit_wait_for_and_futures_as_arguments(start_method: str, tmp_path: Path) -> None:
    log = str(tmp_path / "order.txt")

    @flow(task_runner=MultiprocessingTaskRunner(2, start_method=start_method))
    def semantics() -> dict[str, Any]:
        # Later items finish first, yet futures stay in input order.
        mapped = square.map([4, 3, 2, 1], [0.3, 0.2, 0.1, 0.0])
        unmapped_delay = square.map([5, 6], delay=unmapped(0.0))
        first = append_to.submit(log, "first;")
        second = append_to.submit(log, "second;", wait_for=[first])
        total = add.submit(mapped[0], mapped[1])  # futures as arguments
        return {
            "mapped": [f.result() for f in mapped],
            "unmapped": [f.result() for f in unmapped_delay],
            "total": total.result(),
            "second": second.result(),
            "pids": {where.submit().result() for _ in range(3)},
        }

    result = semantics()
    assert result["mapped"] == [16, 9, 4, 1]
    assert result["unmapped"] == [25, 36]
    assert result["total"] == 25
    assert Path(log).read_text() == "first;second;"
    assert os.getpid() not in result["pids"]


def test_task_exception_raises_its_own_type_with_remote_traceback() -> None:
    @flow(task_runner=MultiprocessingTaskRunner(2))
    def failing() -> None:
        fail.submit("boom in worker").result()

    with pytest.raises(ValueError, match="boom in worker") as error:
        failing()
    assert "raise ValueError(message)" in str(error.value.__cause__)


def test_retries_run_again_in_the_pool(tmp_path: Path) -> None:
    counter = str(tmp_path / "counter")

    @flow(task_runner=MultiprocessingTaskRunner(2))
    def retrying() -> int:
        return succeed_on_third_try.submit(counter).result()

    state = retrying(return_state=True)
    assert state.result() == 3
    (run,) = task_runs(state)
    assert run.state is not None and run.state.is_completed()
    assert run.run_count == 3


def test_every_task_run_is_recorded_in_a_final_state() -> None:
    @flow(task_runner=MultiprocessingTaskRunner(2, chunksize=1))
    def many() -> int:
        return sum(f.result() for f in square.map(range(300)))

    state = many(return_state=True)
    assert state.result() == sum(x * x for x in range(300))
    runs = task_runs(state)
    assert len(runs) == 300
    assert all(run.state is not None and run.state.is_completed() for run in runs)


def test_worker_logs_and_prints_reach_the_task_run_logs() -> None:
    @flow(task_runner=MultiprocessingTaskRunner(2, chunksize=1))
    def logging_flow() -> list[int]:
        return [f.result() for f in chatty.map([1, 2])]

    state = logging_flow(return_state=True)
    runs = {run.name: run.id for run in task_runs(state)}
    with get_client(sync_client=True) as client:
        for x in (1, 2):
            flt = LogFilter(task_run_id=LogFilterTaskRunId(any_=[runs[f"chatty({x})"]]))
            deadline = time.monotonic() + 10
            messages: list[str] = []
            while time.monotonic() < deadline:
                messages = [log.message for log in client.read_logs(log_filter=flt)]
                if f"print line from {x}" in messages and f"logger line from {x}" in messages:
                    break
                time.sleep(0.2)
            assert f"logger line from {x}" in messages
            assert f"print line from {x}" in messages


def test_initializer_and_maxtasksperchild(start_method: str) -> None:
    runner = MultiprocessingTaskRunner(
        1, start_method=start_method, maxtasksperchild=2, initializer=_initializer, initargs=("set",)
    )

    @flow(task_runner=runner)
    def recycled() -> tuple[list[int], list[str]]:
        pids = [where.submit().result() for _ in range(4)]
        markers = [read_marker.submit().result() for _ in range(2)]
        return pids, markers

    pids, markers = recycled()
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[1] != pids[2]
    assert markers == ["set", "set"]


def test_a_runner_adopts_the_pool_prestarted_for_it_and_an_unadopted_pool_stops() -> None:
    @flow(task_runner=MultiprocessingTaskRunner(2))
    def pids() -> set[int]:
        return {future.result() for future in [where.submit() for _ in range(8)]}

    with prestarted(2) as pool:
        warm = set(started_workers(pool))
        assert len(warm) == 2 and all(psutil.pid_exists(pid) for pid in warm)
        used = pids()
    assert used <= warm  # the flow's tasks ran on the workers started before it
    assert not alive(list(warm))  # the runner that adopted the pool shut it down at its end

    with prestarted(3) as other:  # 3 processes: not what a 2-process runner asks for
        spare = started_workers(other)
        assert not pids() & set(spare)
    assert not alive(spare)  # nobody adopted it: stopped when the block ended

    @flow(task_runner=MultiprocessingTaskRunner(2, maxtasksperchild=100))
    def recycling_pids() -> set[int]:
        return {future.result() for future in [where.submit() for _ in range(4)]}

    with prestarted(2) as plain:  # a pool without maxtasksperchild is not that runner's either
        spare = started_workers(plain)
        assert not recycling_pids() & set(spare)
    assert not alive(spare)


def test_duplicate_and_equality_keep_configuration() -> None:
    runner = MultiprocessingTaskRunner(3, maxtasksperchild=5, start_method="spawn")
    copy = runner.duplicate()
    assert copy == runner and copy is not runner
    assert (copy.processes, copy.maxtasksperchild, copy.start_method) == (3, 5, "spawn")
    with pytest.raises(ValueError):
        MultiprocessingTaskRunner(0)


def test_a_runner_pickles_as_its_configuration_and_the_copy_runs() -> None:
    """Deployments pickle a flow with its runner: the copy gets the configuration and a run
    state of its own (no pool, threads or task-run bookkeeping travel), and runs tasks."""
    runner = MultiprocessingTaskRunner(2, maxtasksperchild=5, chunksize=2)
    copy = pickle.loads(pickle.dumps(runner))
    assert copy == runner and set(vars(copy)) == set(vars(runner))

    @flow(task_runner=copy)
    def squares() -> list[int]:
        return [future.result() for future in square.map(range(4))]

    assert squares() == [0, 1, 4, 9]


def test_fork_is_refused_before_any_task_runs() -> None:
    @flow(task_runner=MultiprocessingTaskRunner(1, start_method="fork"))
    def forked() -> int:
        return int(where())

    with pytest.raises(ValueError, match="cannot fork its workers"):
        forked()


@task(task_run_name="kill-self({x})")
def kill_self(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
    return x


def test_dead_worker_fails_only_its_task_and_is_replaced(start_method: str) -> None:
    @flow(task_runner=MultiprocessingTaskRunner(2, start_method=start_method, chunksize=1))
    def with_a_kill() -> list[Any]:
        futures = kill_self.map(range(8))
        return [f.result(raise_on_failure=False) for f in futures]

    state = with_a_kill(return_state=True)
    results = state.result()
    assert [r for i, r in enumerate(results) if i != 3] == [0, 1, 2, 4, 5, 6, 7]
    assert "died with SIGKILL while running kill-self(3)" in str(results[3])
    states = {run.name: run.state for run in task_runs(state)}
    assert states["kill-self(3)"] is not None and states["kill-self(3)"].is_failed()
    assert all(s is not None and s.is_final() for s in states.values())


@task(timeout_seconds=1, task_run_name="spin({x})")
def spin(x: int) -> int:
    if x == 0:
        while True:  # CPU-bound, never yields
            pass
    return x


def test_timeout_kills_a_cpu_bound_task() -> None:
    @flow(task_runner=MultiprocessingTaskRunner(2, chunksize=1))
    def spinning() -> list[Any]:
        return [f.result(raise_on_failure=False) for f in spin.map(range(4))]

    started = time.monotonic()
    state = spinning(return_state=True)
    results = state.result()
    assert time.monotonic() - started < 30
    assert results[1:] == [1, 2, 3]
    assert isinstance(results[0], TimeoutError)
    assert "exceeded its timeout of 1 s" in str(results[0])
    states = {run.name: run.state for run in task_runs(state)}
    assert states["spin(0)"] is not None and states["spin(0)"].name == "TimedOut"


@task
def echo(value: Any) -> Any:
    return value


@task
def unpicklable_result() -> Any:
    import threading

    return threading.Lock()


def test_unpicklable_argument_or_result_fails_only_that_task() -> None:
    import threading

    @flow(task_runner=MultiprocessingTaskRunner(2))
    def pickles() -> list[Any]:
        futures = [echo.submit(threading.Lock()), unpicklable_result.submit(), echo.submit("fine")]
        return [f.result(raise_on_failure=False) for f in futures]

    bad_argument, bad_result, fine = pickles()
    assert isinstance(bad_argument, TypeError) and "cannot be pickled" in str(bad_argument)
    assert isinstance(bad_result, TypeError) and "cannot be pickled" in str(bad_result)
    assert fine == "fine"


@task
async def async_double(x: int) -> int:
    import asyncio

    await asyncio.sleep(0.01)
    return 2 * x


def test_async_tasks_run_in_the_pool() -> None:
    @flow(task_runner=MultiprocessingTaskRunner(2))
    def with_async() -> list[int]:
        return [f.result() for f in async_double.map([1, 2, 3])]

    assert with_async() == [2, 4, 6]


def test_imap_keeps_order_and_bounds_task_runs_in_flight() -> None:
    read_ahead: list[int] = []  # items taken from the input but not yet yielded, per result

    @flow(task_runner=MultiprocessingTaskRunner(2, max_pending=4))
    def streamed() -> tuple[list[int], int]:
        runner = FlowRunContext.get().task_runner  # type: ignore[union-attr]  # the started copy
        produced = 0

        def items() -> Iterator[dict[str, Any]]:
            nonlocal produced
            for x in range(60):
                produced += 1
                yield {"x": x, "delay": 0.01 * (x % 3)}

        results = []
        for result in runner.imap(square, items()):
            results.append(result)
            read_ahead.append(produced - len(results))
        mapped = [f.result() for f in square.map(range(20))]  # map is bounded the same way
        return results + mapped, runner.peak_pending

    results, peak = streamed()
    assert results == [x * x for x in range(60)] + [x * x for x in range(20)]
    assert 1 <= peak <= 4
    assert max(read_ahead) <= 4  # plain Pool.imap reads all input ahead (baseline test)


@task
def numbers_below(n: int) -> list[int]:
    return list(range(n))


@task(task_run_name="offset({x})")
def offset(numbers: list[int], x: int) -> int:
    return sum(numbers) + x


def _live_states() -> int:
    gc.collect()
    return sum(isinstance(obj, State) for obj in gc.get_objects())


def _settled_states(bound: int, baseline: int, patience: float = 30.0) -> int:
    """Live States above ``baseline`` once in-flight runs let go of theirs (or after ``patience``).

    A run whose result was already yielded may still hold its States for a moment (a thread
    reporting to the API); on a loaded machine that moment is longer. A State kept per result
    is never let go, so waiting tells the two apart without a timing-dependent bound.
    """
    deadline = time.monotonic() + patience
    while (held := _live_states() - baseline) > bound and time.monotonic() < deadline:
        time.sleep(0.5)
    return held


def test_imap_keeps_no_state_per_result_but_records_input_lineage() -> None:
    items = 100  # per phase: streamed, then mapped
    slack = 3 * 8  # max_pending runs, a few States each

    @flow(task_runner=MultiprocessingTaskRunner(2, max_pending=8, chunksize=1))
    def lineage() -> dict[str, int]:
        context = FlowRunContext.get()
        assert context is not None
        runner = context.task_runner
        numbers = numbers_below.submit(1000).result()
        before = len(context.run_results), len(context.task_run_assets), _live_states()
        streamed = list(runner.imap(offset, ({"numbers": numbers, "x": x} for x in range(items))))
        settled = _settled_states(slack, baseline=before[2]) + before[2]
        middle = len(context.run_results), len(context.task_run_assets), settled
        mapped = [f.result() for f in offset.map(unmapped(numbers), range(items))]
        after = len(context.run_results), len(context.task_run_assets), _live_states()
        assert streamed == mapped == [499_500 + x for x in range(items)]  # both keep their results
        return {
            "streamed_results": middle[0] - before[0],
            "streamed_assets": middle[1] - before[1],
            "streamed_states": middle[2] - before[2],
            "mapped_results": after[0] - middle[0],
            "mapped_assets": after[1] - middle[1],
            "mapped_states": after[2] - middle[2],
        }

    state = lineage(return_state=True)
    held = state.result()
    # Prefect keeps a State per tracked result and an asset set per task run until the flow
    # run ends (~5 KB a run: what grows without bound on a huge map); streamed runs keep none.
    assert held["streamed_results"] == held["streamed_assets"] == 0, held
    # Live States are counted with gc once in-flight runs let go of theirs: a few may stay a
    # moment longer (freed during the next phase), so allow slack far below one per result.
    assert held["streamed_states"] <= slack, held
    assert held["mapped_results"] == held["mapped_assets"] == items, held
    assert held["mapped_states"] >= items - slack, held
    runs = task_runs(state)
    upstream = next(run.id for run in runs if run.name.startswith("numbers_below"))
    offsets = [run for run in runs if run.name.startswith("offset(")]
    assert len(offsets) == 2 * items
    for run in offsets:  # streamed runs still record where their inputs came from
        assert [getattr(i, "id", None) for i in run.task_inputs["numbers"]] == [upstream]
