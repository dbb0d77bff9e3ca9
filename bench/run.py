"""``make bench``: time every mode in fresh processes at two corpus sizes, write the results.

Reports wall time (process start to exit, Prefect start-up included), per-item marginal cost
(from the two sizes), fixed start-up, and the peak RSS of the whole process tree; writes
``bench/results.md`` and ``bench/results.png``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.workload import MODES
from flows.parameters import DEFAULT_PATTERN
from tasks.items import list_items

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = HERE.parent.parent / "shared" / "corpus" / "kowiki"


def tree_rss(process: psutil.Process) -> int:
    """Resident memory of ``process`` and all its descendants, in bytes."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total


def run_once(mode: str, corpus: Path, repeat: int, processes: int, env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak tree RSS of one fresh-process run."""
    with tempfile.TemporaryDirectory(prefix="poolflow-bench-") as output:
        command = [
            sys.executable,
            "-m",
            "bench.workload",
            mode,
            str(corpus),
            str(repeat),
            str(processes),
            output,
        ]
        started = time.perf_counter()
        child = subprocess.Popen(
            command, env=env, cwd=HERE.parent, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        watched = psutil.Process(child.pid)
        peak = 0
        while child.poll() is None:
            peak = max(peak, tree_rss(watched))
            time.sleep(0.05)
        wall = time.perf_counter() - started
        if child.returncode != 0:
            raise RuntimeError(f"{mode} failed with exit code {child.returncode}")
        return wall, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--repeat", type=int, default=10, help="corpus repeats for the large size")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="alternating repetitions of every run")
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    modes = args.modes.split(",")
    files = len(list_items(args.corpus, DEFAULT_PATTERN))
    sizes = (max(1, args.repeat // 2), args.repeat)
    env = {**os.environ, "PREFECT_HOME": tempfile.mkdtemp(prefix="poolflow-bench-home-")}
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env["PYTHONPATH"] = str(HERE.parent)
    run_once("poolflow", args.corpus, 1, args.processes, env)  # create Prefect's database once
    walls: dict[tuple[str, int], list[float]] = {}
    peaks: dict[str, int] = {}
    for round_number in range(args.rounds):
        for repeat in sizes:
            for mode in modes:
                wall, peak = run_once(mode, args.corpus, repeat, args.processes, env)
                walls.setdefault((mode, repeat), []).append(wall)
                if repeat == args.repeat:
                    peaks[mode] = max(peaks.get(mode, 0), peak)
                print(
                    f"round {round_number + 1} {mode:16} {repeat * files:4} items {wall:7.2f} s", flush=True
                )
    write_results(modes, walls, peaks, sizes, files, args)


def write_results(modes, walls, peaks, sizes, files, args) -> None:  # type: ignore[no-untyped-def]
    small, large = sizes
    n_small, n_large = small * files, large * files
    rows = {}
    for mode in modes:
        t_small = statistics.median(walls[(mode, small)])
        t_large = statistics.median(walls[(mode, large)])
        marginal = (t_large - t_small) / (n_large - n_small)
        rows[mode] = (t_large, marginal, t_large - marginal * n_large, peaks[mode])
    pool_wall, pool_marginal = rows["pool"][0], rows["pool"][1]
    lines = [
        f"# Benchmark results\n\nMachine: {platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}, "
        f"{platform.system()}. Corpus: {files} files × {large} = {n_large} items (marginal cost from "
        f"{n_small} and {n_large} items), {args.processes} processes, median of {args.rounds} alternating "
        "rounds, each run a fresh process; Prefect runs use the embedded API.\n",
        "| mode | wall s | ms/item (marginal) | fixed start-up s | peak RSS MiB | wall vs raw Pool "
        "| overhead vs raw Pool ms/item |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, (wall, marginal, fixed, peak) in rows.items():
        lines.append(
            f"| {mode} | {wall:.2f} | {marginal * 1000:.1f} | {fixed:.2f} | {peak / 2**20:.0f} | "
            f"{wall / pool_wall:.2f}× | {(marginal - pool_marginal) * 1000:+.1f} |"
        )
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows)


def plot(rows) -> None:  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(rows)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].barh(modes, [rows[m][0] for m in modes], color="tab:blue")
    axes[0].set_xlabel("wall seconds (start-up included)")
    axes[1].barh(modes, [rows[m][1] * 1000 for m in modes], color="tab:orange")
    axes[1].set_xlabel("marginal ms per item")
    for axis in axes:
        axis.invert_yaxis()
    figure.tight_layout()
    figure.savefig(HERE / "results.png", dpi=110)


if __name__ == "__main__":
    main()
