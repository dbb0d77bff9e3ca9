"""Our runner against Prefect's own ``ProcessPoolTaskRunner``, case by case, in the same tests.

Each case runs with both runners; a difference shows as one failing parameter.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, task
from prefect.exceptions import MappingLengthMismatch, MappingMissingIterable
from prefect.settings import (
    PREFECT_LOCAL_STORAGE_PATH,
    PREFECT_RESULTS_PERSIST_BY_DEFAULT,
    PREFECT_TASKS_RUNNER_PROCESS_POOL_MAX_WORKERS,
    temporary_settings,
)
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner
from prefect.utilities.annotations import allow_failure, unmapped

from poolflow import MultiprocessingTaskRunner


class NarrowPool(ProcessPoolTaskRunner):  # type: ignore[type-arg]
    """A user's subclass whose constructor takes only the worker count, under its base's name."""

    def __init__(self, max_workers: int = 2) -> None:
        super().__init__(max_workers)


class NarrowMultiprocessing(MultiprocessingTaskRunner):
    """The same subclass of ours."""

    def __init__(self, processes: int = 2) -> None:
        super().__init__(processes)


RUNNERS = {"poolflow": MultiprocessingTaskRunner, "prefect": ProcessPoolTaskRunner}
NARROW = {"poolflow": NarrowMultiprocessing, "prefect": NarrowPool}


def _workers(runner: TaskRunner[Any]) -> int:
    return runner.processes if isinstance(runner, MultiprocessingTaskRunner) else int(runner._max_workers)


@task
def add_one(x: int) -> int:
    return x + 1


@pytest.mark.parametrize("kind", sorted(RUNNERS))
def test_a_subclass_with_a_narrower_constructor_duplicates_and_runs(kind: str, prefect_api: str) -> None:
    runner = NARROW[kind](3)
    twin = runner.duplicate()
    assert type(twin) is type(runner) and _workers(twin) == 3
    if kind == "poolflow":
        assert twin == runner

    @flow(task_runner=NARROW[kind](2))
    def narrow_flow() -> list[int]:
        return [future.result() for future in add_one.map([1, 2, 3])]

    assert narrow_flow() == [2, 3, 4]


@pytest.mark.parametrize("kind", sorted(RUNNERS))
def test_prefects_max_workers_setting_is_the_default_worker_count(kind: str) -> None:
    with temporary_settings(updates={PREFECT_TASKS_RUNNER_PROCESS_POOL_MAX_WORKERS: 3}):
        assert _workers(RUNNERS[kind]()) == 3
    assert _workers(RUNNERS[kind](5)) == 5


@pytest.mark.parametrize("kind", sorted(RUNNERS))
def test_submitting_before_the_runner_is_started_says_so_in_prefects_words(kind: str) -> None:
    with pytest.raises(RuntimeError, match=r"^Task runner is not started$"):
        RUNNERS[kind](1).submit(add_one, {"x": 1})


@task
def combine(x: int, y: int, scale: int = 10, **extra: int) -> int:
    return (x + y) * scale + sum(extra.values())


@task
def fail(x: int) -> int:
    raise ValueError(x)


@task
def kind_of(value: object) -> str:
    return type(value).__name__


@pytest.mark.parametrize("kind", sorted(RUNNERS))
def test_map_expands_its_parameters_as_prefect_does(kind: str, prefect_api: str) -> None:
    """``unmapped``, defaults, ``**kwargs``, ``allow_failure`` and the mapping errors."""

    @flow(task_runner=RUNNERS[kind](2))
    def mapping() -> dict[str, object]:
        failed = fail.submit(1)
        failed.wait()
        outcome: dict[str, object] = {
            "defaults": [f.result() for f in combine.map([1, 2], y=unmapped(3))],
            "static": [f.result() for f in combine.map((1, 2), 3, scale=2)],
            "kwargs": [f.result() for f in combine.map([1, 2], y=unmapped(3), bonus=[100, 200])],
            "allowed": [f.result() for f in kind_of.map(allow_failure([failed, failed]))],
        }
        for name, parameters in {"unequal": ([1, 2], [1]), "no iterable": (1, 2)}.items():
            try:
                combine.map(*parameters)
            except (MappingLengthMismatch, MappingMissingIterable) as exc:
                outcome[name] = type(exc).__name__
        return outcome

    assert mapping() == {
        "defaults": [40, 50],
        "static": [8, 10],
        "kwargs": [140, 250],
        "allowed": ["ValueError", "ValueError"],
        "unequal": "MappingLengthMismatch",
        "no iterable": "MappingMissingIterable",
    }


@task
def counted(x: int, runs: str) -> int:
    """``x`` squared; each run leaves a file in ``runs``, so a reused result leaves none."""
    import os
    import uuid

    open(os.path.join(runs, f"{x}-{uuid.uuid4().hex}"), "w").close()
    return x * x


@pytest.mark.parametrize("kind", sorted(RUNNERS))
def test_persisting_by_default_caches_each_mapped_item_as_prefect_does(
    kind: str, prefect_api: str, tmp_path: Path
) -> None:
    """Results persisted by Prefect's setting, not by the task: the second identical map in a
    flow run reuses every item (the default cache policy keys by inputs, source and run)."""
    runs = tmp_path / "runs"
    runs.mkdir()

    @flow(task_runner=RUNNERS[kind](2))
    def twice() -> list[int]:
        first = [f.result() for f in counted.map([1, 2, 3], unmapped(str(runs)))]
        return first + [f.result() for f in counted.map([1, 2, 3], unmapped(str(runs)))]

    updates = {PREFECT_RESULTS_PERSIST_BY_DEFAULT: True, PREFECT_LOCAL_STORAGE_PATH: tmp_path / "results"}
    with temporary_settings(updates=updates):
        assert twice() == [1, 4, 9, 1, 4, 9]
    assert sorted(path.name.split("-")[0] for path in runs.iterdir()) == ["1", "2", "3"]


@pytest.mark.parametrize("frozen_before", [False, True], ids=["nothing-frozen", "frozen-by-the-script"])
@pytest.mark.parametrize("kind", sorted(RUNNERS))
def test_the_garbage_collector_is_left_as_found(kind: str, frozen_before: bool, prefect_api: str) -> None:
    """After a flow run, the objects frozen out of the collector are those frozen before it.

    Ours freezes what exists when it starts (a full collection would otherwise stall the flow
    process mid-map) unless the script froze objects itself, and unfreezes it at its exit."""
    if frozen_before:
        gc.freeze()
    found = gc.get_freeze_count()

    @flow(task_runner=RUNNERS[kind](2))
    def frozen_while_mapping() -> tuple[int, list[int]]:
        results = [future.result() for future in add_one.map(range(4))]
        return gc.get_freeze_count(), results

    try:
        during, results = frozen_while_mapping()
        after = gc.get_freeze_count()
    finally:
        gc.unfreeze()
    assert results == [1, 2, 3, 4]
    # Frozen objects freed by reference counting leave the count, so it can only shrink.
    if kind == "poolflow" and not frozen_before:
        assert during > 10_000  # Prefect's modules and schemas, at least
    else:
        assert during <= found
    assert after <= found and (after > 0) == frozen_before
