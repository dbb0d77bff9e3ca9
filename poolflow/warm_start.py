"""What a command does while Prefect's API server starts: load its flows, then start its workers.

The server takes seconds to answer (``poolflow.local_api``), and the command's own start-up
work need not wait for it: ``prepare`` (importing Prefect and the flows, or building a
benchmark's flow) runs with the collector paused (``poolflow.startup_gc``), and so do the
imports that Prefect and poolflow would otherwise make only once the flow run starts
(``FLOW_RUN_MODULES``); then the worker pool that the flow's ``MultiprocessingTaskRunner``
will adopt starts (``prestarted``). In that order the fork server is a copy of this
process, Prefect and the flows already imported (``start_fork_server``), where a pool
started first spawns one that imports them again, on the cores the server starts on.
The commands and the benchmarks start this way.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from typing import Any

from poolflow.local_api import Say, local_api
from poolflow.runners.worker_pool import DEFAULT_START_METHOD, WorkerPool, pool_sources, start_fork_server
from poolflow.startup_gc import building_long_lived_objects

# Loaded by a flow run only when it gets there, after the server answered: FastAPI (Prefect
# encodes the flow's parameters with its ``jsonable_encoder``), Prefect's engines and
# its graph module, poolflow's runner and the command's summary table. Loaded while the server
# starts instead, they are ready when the flow run needs them.
FLOW_RUN_MODULES = (
    "fastapi.encoders",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.utilities.visualization",
    "poolflow.runners.multiprocessing_runner",
    "poolflow.summary",
)


# Started pools no runner has taken yet (``prestarted``).
_shelf_lock = threading.Lock()
_shelf: list[WorkerPool] = []


def _take_prestarted(processes: int, options: dict[str, Any]) -> WorkerPool | None:
    """A prestarted pool made as a runner of ``processes`` workers and ``options`` would make
    its own, taken off the shelf, or None."""
    method = multiprocessing.get_context(options.get("start_method") or DEFAULT_START_METHOD)
    wanted = (
        processes,
        options.get("maxtasksperchild"),
        options.get("initializer"),
        tuple(options.get("initargs", ())),
        method.get_start_method(),
    )
    with _shelf_lock:
        for pool in _shelf:
            made = (pool.processes, pool.maxtasksperchild, pool.initializer, pool.initargs)
            if (*made, pool.context.get_start_method()) == wanted:
                _shelf.remove(pool)
                return pool
    return None


pool_sources.append(_take_prestarted)


@contextlib.contextmanager
def prestarted(processes: int) -> Iterator[WorkerPool]:
    """A pool of ``processes`` workers started now, for a ``MultiprocessingTaskRunner`` entered
    inside the block with the same settings to take; stopped at the end if none did."""
    pool = WorkerPool(processes)
    pool.start()
    with _shelf_lock:
        _shelf.append(pool)
    try:
        yield pool
    finally:
        with _shelf_lock:
            unclaimed = pool in _shelf
            if unclaimed:
                _shelf.remove(pool)
        if unclaimed:
            pool.shutdown()


@contextlib.contextmanager
def api_with_warm_start(
    say: Say, prepare: Callable[[], object], pool_processes: int | None
) -> Iterator[str | None]:
    """``local_api`` (yields its URL, None for a configured one), with ``prepare`` run and
    then a pool of ``pool_processes`` workers (None: the flow's runner is not poolflow's)
    started while the server starts; a pool no runner adopted stops at the end."""
    with contextlib.ExitStack() as warm:

        def while_starting() -> None:
            with building_long_lived_objects():
                prepare()
                for module in FLOW_RUN_MODULES:
                    importlib.import_module(module)
            if pool_processes is not None:
                start_fork_server(None)
                warm.enter_context(prestarted(pool_processes))

        with local_api(say, while_starting=while_starting, keep_warm=True) as url:
            yield url
