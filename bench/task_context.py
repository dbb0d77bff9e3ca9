"""``python -m bench.task_context``: what Prefect's contexts in the workers cost a user's flow.

A Prefect ``@task`` doing about a millisecond of CPU work is mapped over many items in one
process: on ``MultiprocessingTaskRunner`` with ``chunksize="auto"`` (each worker builds the
task run's contexts once per chunk) and with ``chunksize=1`` (once per item: every item is a
task run), against the same function on a raw ``multiprocessing.Pool`` in a script without
Prefect (the bar). The flows run on the command's API server (``poolflow.prefect_api()``),
warmed by one small run; an empty flow run, measured in the same rounds, is taken off their
walls before they are divided by the raw pool's. Writes a "Task context" section into
``bench/results.md``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from prefect import flow, task

from bench.results_file import write_section
from bench.run import HERE
from bench.spin import spin
from poolflow import MultiprocessingTaskRunner, prefect_api

SECTION = "## Task context"
POOL_SCRIPT = """
import multiprocessing, sys, time
from bench.spin import spin
if __name__ == "__main__":
    started = time.perf_counter()
    with multiprocessing.get_context("forkserver").Pool(2) as pool:
        assert len(pool.map(spin, range(int(sys.argv[1])))) == int(sys.argv[1])
    print(time.perf_counter() - started)
"""


@task
def spin_task(x: int) -> int:
    """``spin`` as a user's task: its module imports Prefect, so the worker builds its contexts."""
    return spin(x)


@flow(name="empty")
def _empty(items: int) -> int:
    """A flow run with no tasks: Prefect's own fixed cost, taken off the runners' walls."""
    return items


def _mapped(chunksize: int | str) -> Callable[[int], int]:
    runner = MultiprocessingTaskRunner(2, chunksize=chunksize)  # type: ignore[arg-type]

    @flow(name=f"spin-chunksize-{chunksize}", task_runner=runner)  # type: ignore[arg-type]
    def spinning(items: int) -> int:
        return len([future.result() for future in spin_task.map(range(items))])

    return spinning


def _pool(items: int) -> float:
    """``Pool(2).map`` of ``spin`` in a fresh script, timed from the pool's start to its end."""
    script = subprocess.run(
        [sys.executable, "-c", POOL_SCRIPT, str(items)],
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE.parent,
    )
    return float(script.stdout.strip())


def _timed(run: Callable[[int], int], items: int) -> float:
    started = time.perf_counter()
    assert run(items) == items
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=4000, help="items of the chunked map")
    parser.add_argument("--single", type=int, default=300, help="items with chunksize=1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=type(HERE), default=HERE)
    args = parser.parse_args()
    modes = ("pool", "empty", "auto", "pool-single", "chunksize-1")
    walls: dict[str, list[float]] = {mode: [] for mode in modes}
    with prefect_api():
        auto, single = _mapped("auto"), _mapped(1)
        auto(20)
        single(20)
        for round_ in range(args.rounds):
            walls["pool"].append(_pool(args.items))
            walls["empty"].append(_timed(_empty, args.items))
            walls["auto"].append(_timed(auto, args.items))
            walls["pool-single"].append(_pool(args.single))
            walls["chunksize-1"].append(_timed(single, args.single))
            print(f"round {round_ + 1}: " + ", ".join(f"{m} {w[-1]:.2f} s" for m, w in walls.items()))
    write_section(args.out / "results.md", _section(walls, args))


def _section(walls: dict[str, list[float]], args: argparse.Namespace) -> str:
    def median(mode: str) -> float:
        return statistics.median(walls[mode])

    def row(label: str, mode: str, items: int, bar: str | None) -> str:
        shown = ", ".join(f"{wall:.2f}" for wall in walls[mode])
        net = "" if bar is None else f"{(median(mode) - median('empty')) / median(bar):.2f}"
        return f"| {label} | {items} | {shown} | {median(mode):.2f} | {net} |"

    lines = [
        f"{SECTION} (`python -m bench.task_context --items {args.items} --single {args.single} "
        f"--rounds {args.rounds}`, on the command's API server)",
        "",
        "| mode | items | walls (s) | median (s) | (median − empty flow) ÷ raw Pool |",
        "|---|---|---|---|---|",
        row("empty flow", "empty", 0, None),
        row("raw Pool(2)", "pool", args.items, None),
        row('MultiprocessingTaskRunner, chunksize="auto"', "auto", args.items, "pool"),
        row("raw Pool(2)", "pool-single", args.single, None),
        row("MultiprocessingTaskRunner, chunksize=1", "chunksize-1", args.single, "pool-single"),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
