"""``python -m bench.collector_pause``: what a full garbage collection mid-map costs a user's script.

A user's script maps ``--items`` calls of a fixed CPU spin (``--ms`` of ``time.thread_time``,
the same work however busy the machine is) on ``MultiprocessingTaskRunner(2)``, against a
default ``prefect server start`` (``bench.default_server``), in pairs: as the runner is, and
with its freezing of the flow process's existing objects switched off (the script replaces
``_freeze_existing_objects`` before its flow runs), in alternating order. Per run: seconds
from ``map`` to the last result, and the longest collection of the flow process's oldest
generation during them (``gc.callbacks``), with the GIL held throughout.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess

from bench.task_run_cost import SPIN_TASK, spin_script

SCRIPT = (
    """\
import gc
import os
import sys
import time

from prefect import flow, task

from poolflow import MultiprocessingTaskRunner
import poolflow.runners.multiprocessing_runner as runner_module

if os.environ.get("BENCH_NO_FREEZE"):
    runner_module._freeze_existing_objects = lambda: False
longest = [0.0]
started = [0.0]


def timed(phase, info):
    if info["generation"] != 2:
        return
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        longest[0] = max(longest[0], time.perf_counter() - started[0])
"""
    + SPIN_TASK
    + """

@flow(task_runner=MultiprocessingTaskRunner(2))
def spins(n):
    gc.callbacks.append(timed)
    begun = time.monotonic()
    total = sum(future.result() for future in spin.map(range(n)))
    print(f"{time.monotonic() - begun:.3f} {longest[0]:.3f}")
    gc.callbacks.remove(timed)
    return total


if __name__ == "__main__":
    spins(int(sys.argv[1]))
"""
)

MODES = ("as is", "no freeze")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--ms", type=float, default=25.0)
    parser.add_argument("--pairs", type=int, default=6)
    args = parser.parse_args()
    work: dict[str, list[float]] = {mode: [] for mode in MODES}
    with spin_script(SCRIPT, args.items, args.ms) as (command, folder, env, _):
        for pair in range(args.pairs):
            for mode in MODES if pair % 2 == 0 else reversed(MODES):
                mode_env = {**env, "BENCH_NO_FREEZE": "1"} if mode == "no freeze" else env
                done = subprocess.run(
                    command, cwd=folder, env=mode_env, check=True, capture_output=True, text=True
                )
                seconds, pause = (float(word) for word in done.stdout.split()[-2:])
                work[mode].append(seconds)
                print(
                    f"pair {pair + 1}, {mode}: map to last result {seconds:.2f} s, "
                    f"longest full collection {1000 * pause:.0f} ms",
                    flush=True,
                )
    for mode in MODES:
        print(f"{mode}: median {statistics.median(work[mode]):.2f} s over {args.pairs} runs")


if __name__ == "__main__":
    main()
