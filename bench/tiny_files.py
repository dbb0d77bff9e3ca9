"""``python -m bench.tiny_files``: many one-document files, where the cost per item is all there is.

Times, each in a fresh process tree: the per-file work (``parse_item`` on every file: parse,
write its xlsx) on a raw ``multiprocessing.Pool``, no report; then ``poolflow run`` end to end
(Prefect start-up, items, report) on the API server an earlier command kept, and once more
starting a server of its own. Writes a "Tiny files" section into ``bench/results.md``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
from pathlib import Path

import psutil

from bench.homes import NEW_SERVER, fresh_home
from bench.results_file import write_section
from bench.run import HERE
from bench.scale import Measured, measure, poolflow_run
from poolflow.tasks.inputs import list_items
from poolflow.tasks.items import parse_item

SECTION = "## Tiny files"
DOC = '<doc id="{0}" url="https://ko.wikipedia.org/wiki?curid={0}" title="문서 {0}">\n본문 {0}.\n</doc>\n'


def write_tiny_corpus(root: Path, files: int) -> None:
    """``files`` files of one short document each, 100 to a directory (AA, AB, …)."""
    for n in range(files):
        folder = root / f"{chr(65 + n // 2600)}{chr(65 + n // 100 % 26)}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"wiki_{n % 100:02d}").write_text(DOC.format(n), encoding="utf-8")


def _parse_one(job: tuple[str, str, str]) -> None:
    parse_item(*job)


def pool_step(corpus: Path, output: Path, processes: int) -> None:
    """``parse_item`` on every file of ``corpus`` on a raw ``Pool``, as a plain script would."""
    jobs = [(str(corpus), item, str(output)) for item in list_items(corpus, "**/wiki_*")]
    with multiprocessing.get_context("forkserver").Pool(processes) as pool:
        pool.map(_parse_one, jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="alternating runs of each; medians reported")
    parser.add_argument("--out", type=Path, default=HERE, help="folder of the results.md to update")
    args = parser.parse_args()
    env = {**os.environ, "PREFECT_HOME": fresh_home()}
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    pools: list[Measured] = []
    runs: list[Measured] = []
    new_server_runs: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="poolflow-tiny-") as work:
        root = Path(work)
        write_tiny_corpus(root / "corpus", args.files)
        write_tiny_corpus(root / "warm-up", 2)
        poolflow_run(root / "warm-up", root / "warm-up-out", args.processes, env)  # Prefect's database
        command = [sys.executable, "-m", "bench.tiny_files", "--pool-step", str(root / "corpus")]
        for round_number in range(1, args.rounds + 1):
            # Fresh outputs each time: every run writes all of its items.
            pools.append(measure([*command, str(root / f"pool-{round_number}"), str(args.processes)], env))
            runs.append(poolflow_run(root / "corpus", root / f"out-{round_number}", args.processes, env))
            new_env, new_out = {**env, **NEW_SERVER}, root / f"new-{round_number}"
            new_server_runs.append(poolflow_run(root / "corpus", new_out, args.processes, new_env))
            print(
                f"round {round_number}: raw Pool {pools[-1].wall:.1f} s, poolflow {runs[-1].wall:.1f} s, "
                f"with a new server {new_server_runs[-1].wall:.1f} s"
            )
    pool, run, new_server = _median(pools), _median(runs), _median(new_server_runs)
    rounds = ", ".join(f"{p.wall:.1f}/{r.wall:.1f}" for p, r in zip(pools, runs, strict=True))
    # A round's two runs follow one another: their difference is measured at one speed of the machine.
    over = [r.wall - p.wall for p, r in zip(pools, runs, strict=True)]
    median_over = statistics.median(over)
    over_new = statistics.median(n.wall - p.wall for p, n in zip(pools, new_server_runs, strict=True))
    section = (
        f"{SECTION} (`python -m bench.tiny_files`: {args.files} files of one short document, "
        f"{args.processes} processes)\n\n"
        f"Machine: {psutil.cpu_count()} cores. {args.rounds} alternating rounds, each run in a fresh "
        f"process tree; the median of each (raw Pool/poolflow per round: {rounds} s). poolflow over "
        f"raw Pool per round: {', '.join(f'{o:+.1f}' for o in over)} s, median "
        f"**{median_over:+.1f} s**.\n\n"
        "| run | median wall s | over raw Pool, median of rounds | peak RSS MiB |\n|---|---|---|---|\n"
        f"| raw Pool({args.processes}): `parse_item` per file, no report | {pool.wall:.1f} | — | "
        f"{pool.peak / 2**20:.0f} |\n"
        f"| `poolflow run` (Prefect start-up, items, report) on the server an earlier command kept "
        f"| {run.wall:.1f} | {median_over:+.1f} s | {run.peak / 2**20:.0f} |\n"
        f"| `poolflow run` starting its own server (`POOLFLOW_API_IDLE=0`) | {new_server.wall:.1f} | "
        f"{over_new:+.1f} s | {new_server.peak / 2**20:.0f} |\n"
    )
    write_section(args.out / "results.md", section)
    print(section)


def _median(runs: list[Measured]) -> Measured:
    """The run of median wall time (the upper one of an even count)."""
    return sorted(runs, key=lambda run: run.wall)[len(runs) // 2]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--pool-step"]:
        pool_step(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
