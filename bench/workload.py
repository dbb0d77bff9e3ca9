"""One benchmark run in a fresh process: the same per-item work under one execution mode.

Usage: python -m bench.workload MODE CORPUS REPEAT PROCESSES OUTPUT
The per-item work is ``poolflow.tasks.items.parse_item`` (parse one WikiExtractor file, write its
xlsx artifact); each repeat of the corpus writes to its own output folder so nothing is
skipped. Prints one JSON line: the mode, the item count and the time it finished.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from poolflow.warm_interpreter import run_warm

MODES = (
    "serial",
    "pool",
    "poolflow",
    "prefect-thread",
    "prefect-process",
    "prefect-dask",
    "prefect-process-stock",
)


def work_list(corpus: Path, repeat: int, output: Path) -> list[tuple[str, str, str]]:
    """(input_dir, item, output_dir) for every corpus file, ``repeat`` times."""
    from poolflow.flows.parameters import DEFAULT_PATTERN
    from poolflow.tasks.inputs import list_items

    items = list_items(corpus, DEFAULT_PATTERN)
    return [(str(corpus), item, str(output / f"r{k}")) for k in range(repeat) for item in items]


def _star_parse(args: tuple[str, str, str]) -> Any:
    from poolflow.tasks.items import parse_item

    return parse_item(*args)


def run_plain(mode: str, work: list[tuple[str, str, str]], processes: int) -> None:
    from poolflow.tasks.items import parse_item

    if mode == "serial":
        for args in work:
            parse_item(*args)
        return
    context = multiprocessing.get_context("forkserver")
    # As a user's script that imports its work function at the top: the fork server imports
    # it (with __main__), so workers start with it loaded.
    context.set_forkserver_preload(["__main__", "poolflow.tasks.items"])
    with context.Pool(processes) as pool:
        pool.map(_star_parse, work, chunksize=1)


# Benchmark modes that run on a Prefect task runner, by poolflow.flows.runner_choice name.
RUNNER_OF_MODE = {
    "poolflow": "multiprocessing",
    "prefect-thread": "thread",
    "prefect-process": "process",
    "prefect-dask": "dask",
    "prefect-process-stock": "process",
}
# Modes run as a Prefect user runs a flow, without poolflow's server: Prefect starts its own
# ephemeral API server, with its default settings.
STOCK_MODES = ("prefect-process-stock",)


def prefect_flow(mode: str, work: list[tuple[str, str, str]], processes: int) -> Callable[[], int]:
    """``work`` as a Prefect flow on ``mode``'s task runner (imports Prefect)."""
    from prefect import flow, task

    from poolflow.flows.runner_choice import make_task_runner
    from poolflow.tasks.items import parse_item

    parse = task(name="parse")(parse_item)

    @flow(name=f"bench-{mode}", task_runner=make_task_runner(RUNNER_OF_MODE[mode], processes))
    def bench_flow() -> int:
        inputs, items, outputs = (list(column) for column in zip(*work, strict=True))
        futures = parse.map(inputs, items, outputs)
        return len([f.result() for f in futures])

    return bench_flow


def run_prefect(mode: str, work: list[tuple[str, str, str]], processes: int) -> None:
    """Run ``prefect_flow`` as a ``poolflow`` command would (``bench.local_run``): the same API
    server for every runner, so runners are compared alone; a stock mode runs it as plain
    Prefect does, against the ephemeral server Prefect starts."""
    if mode in STOCK_MODES:
        assert prefect_flow(mode, work, processes)() == len(work)
        return
    from bench.local_run import run_on_local_api

    pool = processes if mode == "poolflow" else None
    assert run_on_local_api(lambda: prefect_flow(mode, work, processes), pool) == len(work)


def main(argv: list[str]) -> None:
    mode, corpus, repeat, processes, output = argv
    work = work_list(Path(corpus), int(repeat), Path(output))
    if mode in ("serial", "pool"):
        run_plain(mode, work, int(processes))
    else:
        run_prefect(mode, work, int(processes))
    print(json.dumps({"mode": mode, "items": len(work), "finished": time.time()}))


def script() -> None:
    """As each mode's user runs it: the poolflow mode as the command, in the warm interpreter
    kept with the API server (``poolflow.warm_interpreter``) when there is one, and ending as
    the command ends; every other mode as a script, whose normal exit runs the handlers that
    stop what it started (the ephemeral API server a stock Prefect run starts is stopped by
    one: ended with ``os._exit``, it would idle on beside the next runs)."""
    if sys.argv[1:2] == ["poolflow"]:
        run_warm("bench.workload:here")
        here()
    main(sys.argv[1:])


def here() -> None:
    """``main``, then the process ends at once, as the command's does (``poolflow.cli.script``)."""
    from poolflow.cli import end_process

    main(sys.argv[1:])
    end_process(0)


if __name__ == "__main__":
    script()
