"""At its end the runner confirms that the API holds each of its task runs in a final state."""

from __future__ import annotations

import uuid

import pytest
from prefect import flow, task

from poolflow import MultiprocessingTaskRunner
from poolflow.runners.recording import unrecorded_task_runs, wait_until_recorded

pytestmark = pytest.mark.usefixtures("prefect_api")


@task
def double(x: int) -> int:
    return 2 * x


@task
def refuse(x: int) -> int:
    raise ValueError(f"no {x}")


def test_finished_task_runs_are_confirmed_and_unknown_ones_are_not() -> None:
    @flow(task_runner=MultiprocessingTaskRunner(2, chunksize=1))
    def mixed() -> list[uuid.UUID]:
        done = double.map(range(3))
        failed = refuse.submit(1)
        done.wait()
        failed.wait()
        return [future.task_run_id for future in [*done, failed]]

    ran = mixed()
    assert len(set(ran)) == 4
    assert unrecorded_task_runs(ran) == set()  # Completed and Failed are both final
    unknown = uuid.uuid4()
    assert unrecorded_task_runs([*ran, unknown]) == {unknown}
    assert wait_until_recorded([unknown], stall_timeout=0.5) == {unknown}
