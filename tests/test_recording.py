"""At its end the runner confirms that the API holds each of its task runs in a final state."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from helpers import POWER_TASKS, run_user_script
from prefect import flow, task
from prefect_helpers import flow_task_runs

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


ASYNC_FLOW = (
    """\
import asyncio
import sys

from prefect import flow, task
from prefect.runtime import flow_run

if sys.argv[1] == "poolflow":
    from poolflow import MultiprocessingTaskRunner as Runner
else:
    from prefect.task_runners import ProcessPoolTaskRunner as Runner


"""
    + POWER_TASKS
    + """

@flow(task_runner=Runner(2))
async def powers(n):
    squares = [future.result() for future in square.map(range(n))]
    cubes = [future.result() for future in [cube.submit(x) for x in range(n)]]
    return flow_run.id, squares, cubes


if __name__ == "__main__":
    run_id, squares, cubes = asyncio.run(powers(4))
    print(run_id)
    print(squares, cubes)
"""
)


@pytest.mark.parametrize("runner", ["poolflow", "prefect"])
def test_an_async_flow_script_ends_without_an_unawaited_drain(
    runner: str, tmp_path: Path, prefect_server: str
) -> None:
    """An async flow's runner exits on the flow's event loop, where Prefect's event drain
    returns an awaitable: the script ends as with Prefect's own runner, with no warning."""
    done = run_user_script(tmp_path, "powers.py", ASYNC_FLOW, prefect_server, runner)
    assert done.returncode == 0, done.stderr
    run_id, results = done.stdout.splitlines()[-2:]
    assert results == "[0, 1, 4, 9] [0, 1, 8, 27]"
    assert "never awaited" not in done.stderr, done.stderr
    if runner == "poolflow":  # beyond the control: recorded before the script ends
        runs = flow_task_runs(uuid.UUID(run_id))
        assert runs and all(r.state is not None and r.state.is_final() for r in runs), runs
