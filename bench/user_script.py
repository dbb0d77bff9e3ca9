"""``python -m bench.user_script``: a Prefect user's own flow script, as users run it.

Each mode is a whole command, timed from its start to its exit, in a fresh process tree and
a fresh output folder, with no API configured (a ``PREFECT_HOME`` whose database exists):

- ``pool``: the same per-file job (``parse_item``: parse, write its xlsx) on a raw
  ``multiprocessing.Pool``, no Prefect: the bar to meet;
- ``empty``: a flow with no tasks, run with ``python``: Prefect's own fixed cost;
- ``script``: ``python my_flow.py`` (``task.map`` on ``MultiprocessingTaskRunner``);
- ``exec``: ``poolflow exec -- python my_flow.py``, the same script on the command's API.

Rounds alternate the modes; each round's differences against ``pool`` are reported and the
target is held to their median: ``exec`` ≤ ``pool`` + 4 s. Writes a "User script" section
into ``bench/results.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.results_file import write_section
from bench.run import HERE
from bench.scale import build_corpus, measure

SECTION = "## User script"
POOLFLOW = str(Path(sys.executable).parent / "poolflow")

POOL_SCRIPT = """\
import multiprocessing, sys
from pathlib import Path
from poolflow.tasks.inputs import list_items
from poolflow.tasks.items import parse_item


def job(item):
    return parse_item(sys.argv[1], item, sys.argv[2])


if __name__ == "__main__":
    with multiprocessing.get_context("forkserver").Pool(int(sys.argv[3])) as pool:
        pool.map(job, list_items(Path(sys.argv[1]), "**/wiki_*"), chunksize=1)
"""
FLOW_SCRIPT = """\
import sys
from pathlib import Path
from prefect import flow, task
from prefect.utilities.annotations import unmapped
from poolflow import MultiprocessingTaskRunner
from poolflow.tasks.inputs import list_items
from poolflow.tasks.items import parse_item


@task
def parse(input_dir, item, output_dir):
    return parse_item(input_dir, item, output_dir)


@flow(task_runner=MultiprocessingTaskRunner(processes=int(sys.argv[3])))
def parse_all(input_dir, output_dir):
    items = list_items(Path(input_dir), "**/wiki_*")
    futures = parse.map(unmapped(input_dir), items, unmapped(output_dir))
    return len([future.result() for future in futures])


if __name__ == "__main__":
    parse_all(sys.argv[1], sys.argv[2])
"""
EMPTY_SCRIPT = """\
from prefect import flow


@flow
def empty():
    return None


if __name__ == "__main__":
    empty()
"""
MODES = ("pool", "empty", "script", "exec")


def command(mode: str, scripts: Path, corpus: Path, output: Path, processes: int) -> list[str]:
    args = [str(corpus), str(output), str(processes)]
    return {
        "pool": [sys.executable, str(scripts / "pool_script.py"), *args],
        "empty": [sys.executable, str(scripts / "empty_flow.py")],
        "script": [sys.executable, str(scripts / "my_flow.py"), *args],
        "exec": [POOLFLOW, "exec", "--", sys.executable, str(scripts / "my_flow.py"), *args],
    }[mode]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=HERE.parent.parent / "shared" / "corpus" / "kowiki")
    parser.add_argument("--times", type=int, default=10, help="copies of the corpus (10 x 20 = 200 files)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", type=Path, default=HERE, help="folder of the results.md to update")
    args = parser.parse_args()
    modes = args.modes.split(",")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=tempfile.mkdtemp(prefix="poolflow-bench-home-"), PREFECT_SERVER_ANALYTICS_ENABLED="false"
    )
    walls: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="poolflow-user-script-") as work:
        root = Path(work)
        files = build_corpus(args.corpus.resolve(), args.times, root / "corpus")
        for name, text in (
            ("pool_script.py", POOL_SCRIPT),
            ("my_flow.py", FLOW_SCRIPT),
            ("empty_flow.py", EMPTY_SCRIPT),
        ):
            (root / name).write_text(text)
        # Prefect's database, created once before anything is timed (for both kinds of API).
        measure(command("empty", root, root / "corpus", root / "warm", args.processes), env)
        measure(command("exec", root, root / "corpus", root / "warm", args.processes), env)
        for round_ in range(args.rounds):
            for mode in modes:
                output = root / f"out-{mode}-{round_}"
                walls[mode].append(
                    measure(command(mode, root, root / "corpus", output, args.processes), env).wall
                )
                print(f"round {round_ + 1}: {mode} {walls[mode][-1]:.2f} s", flush=True)
    write_section(args.out / "results.md", _section(walls, files, args))


def _section(walls: dict[str, list[float]], files: int, args: argparse.Namespace) -> str:
    lines = [
        f"{SECTION} ({files} files, {args.processes} processes, no API configured, "
        f"`python -m bench.user_script --times {args.times} --rounds {args.rounds}`)",
        "",
        "| mode | walls (s) | median (s) | over raw Pool, per round (s) | median over raw Pool (s) |",
        "|---|---|---|---|---|",
    ]
    pool = walls.get("pool", [])
    for mode, times in walls.items():
        over = [t - p for t, p in zip(times, pool, strict=False)] if mode != "pool" else []
        lines.append(
            f"| {mode} | {', '.join(f'{t:.2f}' for t in times)} | {statistics.median(times):.2f} | "
            f"{', '.join(f'{d:+.2f}' for d in over)} | {f'{statistics.median(over):+.2f}' if over else ''} |"
        )
    lines.append("")
    lines.append("Target: `exec` ≤ raw Pool + 4 s (median of per-round differences).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
