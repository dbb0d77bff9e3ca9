"""Many short tasks on many processes: ``python -m bench.simulation [--tasks N] [--sleep S] [--processes P]``.

The issue's simulation: 2,000 tasks that each sleep 50 ms, on 32 processes. Every mode runs
in a fresh process and its wall time counts from process start to exit (Prefect start-up
and the wait for the API to record every task run included): raw ``multiprocessing.Pool``
(``map``, its default chunksize), poolflow with ``chunksize=1`` (one task run per item),
poolflow with ``chunksize="auto"``, and Prefect's ``ThreadPoolTaskRunner``. Prefect modes
use the API server a ``poolflow`` command starts and keeps, in one PREFECT_HOME whose database
is created before timing. Prints one line per mode and the ratio to raw Pool, and writes a
"Many cores" section into ``bench/results.md`` (``--out``); ``--modes`` picks a subset.

``--api server``: the flow as a user's script runs it against a default ``prefect server
start`` (``bench.default_server``, started once before timing): no command, no warm start.
Modes ``pool``, ``empty`` (a flow with no tasks: Prefect's own fixed cost there) and
``poolflow-auto``, alternating over ``--rounds``; the target, on the medians of the per-round
values: ``poolflow-auto`` ≤ raw Pool + empty flow + 2 s. Writes its own section.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.default_server import default_server
from bench.homes import fresh_home
from bench.local_run import run_on_local_api
from bench.results_file import write_section

MODES = ("pool", "poolflow-1", "poolflow-auto", "prefect-thread")
SERVER_MODES = ("pool", "empty", "poolflow-auto")
ROOT = Path(__file__).resolve().parents[1]


def nap(seconds: float) -> float:
    """The simulated task: sleep, return how long."""
    time.sleep(seconds)
    return seconds


def run_child(mode: str, tasks: int, seconds: float, processes: int, api: str) -> int:
    """Run ``tasks`` naps under ``mode`` in this process; the number of results."""
    if mode == "pool":
        with multiprocessing.get_context("forkserver").Pool(processes) as pool:
            return len(pool.map(nap, [seconds] * tasks))
    if mode == "empty":
        from prefect import flow

        flow(name="simulation-empty")(lambda: None)()
        return tasks
    if api == "server":  # as a user's script: the configured API, nothing started ahead
        return prefect_flow(mode, tasks, seconds, processes)()
    warm = processes if mode.startswith("poolflow") else None
    return run_on_local_api(lambda: prefect_flow(mode, tasks, seconds, processes), warm)


def prefect_flow(mode: str, tasks: int, seconds: float, processes: int) -> Callable[[], int]:
    """The naps as a Prefect flow on ``mode``'s task runner (imports Prefect)."""
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    from poolflow.runners import MultiprocessingTaskRunner

    runner: Any
    if mode == "prefect-thread":
        runner = ThreadPoolTaskRunner(max_workers=processes)
    else:
        runner = MultiprocessingTaskRunner(processes, chunksize=1 if mode == "poolflow-1" else "auto")
    nap_task = task(name="nap")(nap)

    @flow(name=f"simulation-{mode}", task_runner=runner)
    def simulation() -> int:
        return len([f.result() for f in nap_task.map([seconds] * tasks)])

    return simulation


def time_mode(mode: str, args: argparse.Namespace, env: dict[str, str]) -> float:
    """Wall seconds of one fresh process running ``mode``, exit included."""
    command = [sys.executable, "-m", "bench.simulation", "--child", mode, "--api", args.api]
    command += ["--tasks", str(args.tasks), "--sleep", str(args.sleep), "--processes", str(args.processes)]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
    assert json.loads(done.stdout.strip().splitlines()[-1])["results"] == args.tasks
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--sleep", type=float, default=0.05)
    parser.add_argument("--processes", type=int, default=32)
    parser.add_argument("--modes", help="default: every mode of the setting")
    parser.add_argument("--api", choices=("command", "server"), default="command")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the server setting")
    parser.add_argument("--child", choices=sorted({*MODES, *SERVER_MODES}))
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="folder of the results.md to update")
    args = parser.parse_args()
    if args.child:
        results = run_child(args.child, args.tasks, args.sleep, args.processes, args.api)
        print(json.dumps({"mode": args.child, "results": results}))
        return
    home = fresh_home("poolflow-sim-home-")
    env = {**os.environ, "PREFECT_HOME": home, "PYTHONPATH": str(ROOT)}
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if args.api == "server":
        env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
        with default_server(env) as url:
            server_rounds(args, {**env, "PREFECT_API_URL": url})
        return
    warm = argparse.Namespace(tasks=2, sleep=0.0, processes=2, api=args.api)
    time_mode("poolflow-auto", warm, env)  # creates Prefect's database before anything is timed
    walls = {mode: time_mode(mode, args, env) for mode in (args.modes or ",".join(MODES)).split(",")}
    pool = walls.get("pool")
    shape = f"{args.tasks} tasks × {args.sleep * 1000:g} ms on {args.processes} processes"
    rows = []
    for mode, wall in walls.items():
        versus = f"{wall / pool:.2f}× | {wall - pool:+.2f}" if pool else "— | —"
        print(f"{mode:15} {shape}: {wall:7.2f} s {versus}")
        rows.append(f"| {mode} | {wall:.2f} | {versus} |")
    section = (
        f"## Many cores (`python -m bench.simulation`: {shape}, simulated on this machine)\n\n"
        "Each mode in a fresh process, wall time from process start to exit (Prefect start-up and "
        "the wait until the API has recorded every task run included).\n\n"
        "| mode | wall s | vs raw Pool | over raw Pool s |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    if len(walls) == len(MODES):
        write_section(args.out / "results.md", section)


def server_rounds(args: argparse.Namespace, env: dict[str, str]) -> None:
    """The server setting: the modes alternating over ``args.rounds``; writes its section."""
    modes = (args.modes or ",".join(SERVER_MODES)).split(",")
    time_mode("empty", args, env)  # the server's first flow run, before anything is timed
    walls: dict[str, list[float]] = {mode: [] for mode in modes}
    for round_ in range(args.rounds):
        for mode in modes:
            walls[mode].append(time_mode(mode, args, env))
            print(f"round {round_ + 1}: {mode} {walls[mode][-1]:.2f} s", flush=True)
    shape = f"{args.tasks} tasks × {args.sleep * 1000:g} ms on {args.processes} processes"
    rows = [
        f"| {mode} | {', '.join(f'{t:.2f}' for t in times)} | {statistics.median(times):.2f} |"
        for mode, times in walls.items()
    ]
    lines = [
        f"## Many cores on a default prefect server start (`python -m bench.simulation --api server "
        f"--rounds {args.rounds}`: {shape})",
        "",
        "A user's script against a default `prefect server start`; each mode a fresh process, wall "
        "time from its start to its exit.",
        "",
        "| mode | walls (s) | median (s) |",
        "|---|---|---|",
        *rows,
    ]
    if set(SERVER_MODES) <= walls.keys():
        rounds = zip(walls["pool"], walls["empty"], walls["poolflow-auto"], strict=True)
        over = statistics.median(run - pool - empty for pool, empty, run in rounds)
        held = "held" if over <= 2 else "**not held**"
        lines += ["", f"- poolflow − (raw Pool + empty flow): {over:+.2f} s; target ≤ +2 s: {held}"]
    print("\n".join(lines))
    write_section(args.out / "results.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
