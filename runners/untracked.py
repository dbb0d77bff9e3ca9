"""Run a task engine without leaving per-result bookkeeping in the flow run's context.

Prefect links every task result to its final state in the flow run context
(``run_results``, keyed by ``id(result)``) and records the assets each task run passes
downstream (``task_run_assets``), so that a result handed to another task shows up as a
dependency. Those entries live as long as the flow run: about 5 KB per task run, i.e.
half a gigabyte for 100,000 mapped items, whether or not the flow keeps the results.

``run_untracked`` gives one engine call a copy of the flow run context whose two
tracking maps read through to the flow run's (so the run's inputs keep their lineage)
but keep their writes to themselves; the writes are dropped when the call returns.
The price: passing such a result to a later task records no dependency edge for it.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable
from typing import Any, TypeVar

from prefect.context import FlowRunContext

R = TypeVar("R")


def run_untracked(engine: Callable[..., R], /, **kwargs: Any) -> R:
    """Call ``engine(**kwargs)`` with write-local copies of the flow run's tracking maps."""
    flow_context = FlowRunContext.get()
    if flow_context is None:
        return engine(**kwargs)
    scratch = flow_context.model_copy(
        update={
            "run_results": ChainMap({}, flow_context.run_results),
            "task_run_assets": ChainMap({}, flow_context.task_run_assets),
        }
    )
    with scratch:
        return engine(**kwargs)
