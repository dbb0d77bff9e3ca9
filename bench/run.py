"""``make bench``: time every mode in fresh processes at two corpus sizes, write the results.

Reports wall time (process start to exit, Prefect start-up included), per-item marginal cost
(from the two sizes), fixed start-up, the peak RSS of the whole process tree and its CPU
seconds split by role (flow process, workers, Prefect's API server); writes ``results.md``
and ``results.png`` (in ``bench/`` unless ``--out``).
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

from bench.homes import fresh_home
from bench.results_file import write_section
from bench.sampling import ROLES, RunSampler, kept_server, warm_interpreters
from bench.workload import MODES, STOCK_MODES
from poolflow.flows.parameters import DEFAULT_PATTERN
from poolflow.tasks.inputs import list_items

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = HERE.parent.parent / "shared" / "corpus" / "kowiki"


def run_once(
    mode: str, corpus: Path, repeat: int, processes: int, env: dict[str, str]
) -> tuple[float, int, dict[str, float]]:
    """Wall seconds, peak tree RSS and CPU seconds per role of one fresh-process run.

    The tree is sampled every 50 ms, so a process's CPU after its last sample is not counted.
    """
    with tempfile.TemporaryDirectory(prefix="poolflow-bench-") as output:
        command = [sys.executable, "-m", "bench.workload", mode, str(corpus), str(repeat), str(processes)]
        on_kept_server = mode not in ("serial", "pool", *STOCK_MODES)
        server = kept_server(env["PREFECT_HOME"]) if on_kept_server else None
        warm = warm_interpreters(env["PREFECT_HOME"]) if on_kept_server else []
        started = time.perf_counter()
        child = subprocess.Popen(
            [*command, output], env=env, cwd=HERE.parent, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        sampler = RunSampler(child.pid, server, warm)
        while child.poll() is None:
            sampler.sample()
            time.sleep(0.05)
        wall = time.perf_counter() - started
        if child.returncode != 0:
            raise RuntimeError(f"{mode} failed with exit code {child.returncode}")
        return wall, sampler.peak, sampler.cpu_by_role()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--repeat", type=int, default=10, help="corpus repeats for the large size")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating repetitions of every run")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", type=Path, default=HERE, help="folder for results.md and results.png")
    parser.add_argument("--section", help="write the table as this section of results.md (no chart)")
    parser.add_argument(
        "--mirrored",
        action="store_true",
        help="each round runs the modes forward, then backward (see round_lines)",
    )
    args = parser.parse_args()
    modes = args.modes.split(",")
    files = len(list_items(args.corpus, DEFAULT_PATTERN))
    sizes = (max(1, args.repeat // 2), args.repeat)
    env = {**os.environ, "PREFECT_HOME": fresh_home()}
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env["PYTHONPATH"] = str(HERE.parent)
    run_once("poolflow", args.corpus, 1, args.processes, env)  # create Prefect's database once
    walls: dict[tuple[str, int], list[float]] = {}
    peaks: dict[str, int] = {}
    cpus: dict[tuple[str, str], list[float]] = {}  # (mode, role): CPU seconds at the large size
    for round_number in range(args.rounds):
        for repeat in sizes:
            for mode in [*modes, *modes[::-1]] if args.mirrored else modes:
                wall, peak, cpu = run_once(mode, args.corpus, repeat, args.processes, env)
                walls.setdefault((mode, repeat), []).append(wall)
                if repeat == args.repeat:
                    peaks[mode] = max(peaks.get(mode, 0), peak)
                    for role, seconds in cpu.items():
                        cpus.setdefault((mode, role), []).append(seconds)
                print(
                    f"round {round_number + 1} {mode:16} {repeat * files:4} items {wall:7.2f} s", flush=True
                )
    write_results(modes, walls, peaks, cpus, sizes, files, args)


def write_results(modes, walls, peaks, cpus, sizes, files, args) -> None:  # type: ignore[no-untyped-def]
    small, large = sizes
    n_small, n_large = small * files, large * files
    rows = {}
    for mode in modes:
        t_small = statistics.median(walls[(mode, small)])
        t_large = statistics.median(walls[(mode, large)])
        marginal = (t_large - t_small) / (n_large - n_small)
        cpu = [statistics.median(cpus[(mode, role)]) for role in ROLES]
        rows[mode] = (t_large, marginal, t_large - marginal * n_large, peaks[mode], cpu)
    pool_wall, pool_marginal = rows["pool"][0], rows["pool"][1]
    lines = [
        f"# Benchmark results\n\nMachine: {platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}, "
        f"{platform.system()}. Corpus: {files} files × {large} = {n_large} items (marginal cost from "
        f"{n_small} and {n_large} items), {args.processes} processes, median of {args.rounds} alternating "
        f"rounds{' (each mode run twice a round, mirrored)' if args.mirrored else ''}, each run a fresh "
        "process; Prefect runs use the API server that an earlier `poolflow` "
        "command started and kept (poolflow/kept_api.py; its RSS and the CPU it adds are counted), "
        "except `prefect-process-stock`: Prefect's `ProcessPoolTaskRunner` run as plain Prefect "
        "runs it, on the ephemeral API server Prefect starts itself with its default settings. "
        f"CPU seconds at {n_large} items: the process running the flow (or the loop), its workers, "
        "Prefect's API server.\n",
        "| mode | wall s | ms/item (marginal) | fixed start-up s | peak RSS MiB | wall vs raw Pool "
        "| overhead vs raw Pool ms/item | CPU s flow | CPU s workers | CPU s API server |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, (wall, marginal, fixed, peak, cpu) in rows.items():
        lines.append(
            f"| {mode} | {wall:.2f} | {marginal * 1000:.1f} | {fixed:.2f} | {peak / 2**20:.0f} | "
            f"{wall / pool_wall:.2f}× | {(marginal - pool_marginal) * 1000:+.1f} | "
            + " | ".join(f"{seconds:.1f}" for seconds in cpu)
            + " |"
        )
    lines += ["", *round_lines(modes, walls, sizes, files, 2 if args.mirrored else 1)]
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.md"
    print("\n".join(lines))
    if args.section:  # a further point (e.g. 2,000 items) in a section of its own
        write_section(results, f"## {args.section}\n\n" + "\n".join(lines[1:]) + "\n")
        return
    previous = results.read_text() if results.exists() else ""
    sections = previous[previous.find("\n## ") :] if "\n## " in previous else ""  # the other benches'
    results.write_text("\n".join(lines) + "\n" + sections)
    plot(rows, args.out)


def round_lines(
    modes: list[str],
    walls: dict[tuple[str, int], list[float]],
    sizes: tuple[int, int],
    files: int,
    per_round: int = 1,
) -> list[str]:
    """Each mode against raw Pool (and Prefect's runners against poolflow), round by round, at
    each size: a round's runs follow one another, so their ratio is measured at one speed of
    the machine (it drifts by tens of percent within minutes); the median of those ratios is
    what a target is held to. A mirrored round (``per_round`` 2) runs the modes forward, then
    backward (raw Pool, poolflow, poolflow, raw Pool) and takes the ratio of each mode's mean
    of its two walls: a drift within the round then weighs on both modes alike."""
    lines = [
        "Round by round (the runs of a round follow one another), at each size; median over rounds:",
        "",
        "| mode | against | items | wall ratio, per round | median | seconds over, per round | median |",
        "|---|---|---|---|---|---|---|",
    ]
    pairs = [(mode, "pool") for mode in modes if mode != "pool"]
    if "poolflow" in modes:
        pairs += [(mode, "poolflow") for mode in modes if mode.startswith("prefect-")]
    for mode, against in pairs:
        for size in sizes:
            mine, theirs = walls[(mode, size)], walls[(against, size)]
            rounds = list(zip(round_means(mine, per_round), round_means(theirs, per_round), strict=True))
            ratios = [run / other for run, other in rounds]
            over = [run - other for run, other in rounds]
            lines.append(
                f"| {mode} | {against} | {size * files} | {', '.join(f'{r:.2f}×' for r in ratios)} | "
                f"{statistics.median(ratios):.2f}× | {', '.join(f'{o:+.1f}' for o in over)} | "
                f"{statistics.median(over):+.1f} |"
            )
    return lines


def round_means(walls: list[float], per_round: int) -> list[float]:
    """A mode's wall in each round: the mean of its ``per_round`` runs there (2 when mirrored)."""
    return [statistics.fmean(walls[start : start + per_round]) for start in range(0, len(walls), per_round)]


def plot(rows, out: Path) -> None:  # type: ignore[no-untyped-def]
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
    figure.savefig(out / "results.png", dpi=110)


if __name__ == "__main__":
    main()
