"""The report steps get every item's results whole, in a worker that imports neither Prefect nor pandas."""

from __future__ import annotations

import subprocess
import sys
import uuid
from concurrent.futures import Future

from prefect.futures import PrefectConcurrentFuture
from prefect.utilities.engine import collect_task_run_inputs_sync, resolve_inputs_sync

from poolflow.flows.report_steps import Whole


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


def test_a_worker_running_the_report_step_imports_neither_prefect_nor_pandas() -> None:
    heavy = "('prefect', 'pandas', 'pyarrow')"
    check = (
        "import sys, poolflow.flows.report_steps; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy}))"
    )
    imported = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "[]"
