"""``python -m bench.user_script``: a Prefect user's own flow script, as users run it.

Each mode is a whole command, timed from its start to its exit, in a fresh process tree and
a fresh output folder. ``--api none`` (default): no API configured (a ``PREFECT_HOME`` whose
database exists); ``--api server``: a ``prefect server start`` with Prefect's default settings,
started once on a free loopback port before anything is timed (the server deployments and the
UI use), named in ``PREFECT_API_URL``. The modes:

- ``pool``: the same per-file job (``parse_item``: parse, write its xlsx) on a raw
  ``multiprocessing.Pool``, no Prefect: the bar to meet;
- ``empty``: a flow with no tasks, run with ``python``: Prefect's own fixed cost;
- ``script``: ``python my_flow.py`` (``task.map`` on ``MultiprocessingTaskRunner``);
- ``exec``: ``poolflow exec -- python my_flow.py``, the same script on the command's API (the
  server an earlier command kept, ``poolflow.kept_api``);
- ``exec-new-server``: the same, starting a server of its own (``POOLFLOW_API_IDLE=0``), as
  the first command in a while does;
- ``prefect``: the same script on Prefect's own ``ProcessPoolTaskRunner``, the control.

Rounds alternate the modes; each round's differences are reported and the targets are held to
their medians. ``--mirrored`` runs each round's modes forward, then backward (pool, empty,
script, script, empty, pool) and holds a round to the means of each mode's two walls, so a
drift in the machine's speed within the round weighs on every mode alike. No API: ``exec`` ≤
``pool`` + 4 s. A default server: ``script`` ≤ ``pool`` + ``empty`` + 1.5 s at 200 files
and ≤ 1.05 × ``pool`` + ``empty`` at 1,000; ``prefect`` ≥ 3 × ``script`` (both less
``empty``). Writes one section per setting into ``bench/results.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.default_server import default_server
from bench.homes import NEW_SERVER, fresh_home
from bench.results_file import write_section
from bench.run import HERE, round_means
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
RUNNER_IMPORT
from poolflow.tasks.inputs import list_items
from poolflow.tasks.items import parse_item


@task
def parse(input_dir, item, output_dir):
    return parse_item(input_dir, item, output_dir)


@flow(task_runner=RUNNER)
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
# The flow script's runner (its import, its construction): poolflow's, or Prefect's own
# process pool (the control).
RUNNERS = {
    "my_flow.py": (
        "from poolflow import MultiprocessingTaskRunner",
        "MultiprocessingTaskRunner(processes=int(sys.argv[3]))",
    ),
    "prefect_flow.py": (
        "from prefect.task_runners import ProcessPoolTaskRunner",
        "ProcessPoolTaskRunner(max_workers=int(sys.argv[3]))",
    ),
}
MODES = ("pool", "empty", "script", "exec", "exec-new-server", "prefect")
DEFAULT_MODES = {"none": "pool,empty,script,exec,exec-new-server", "server": "pool,empty,script,prefect"}
MODE_SETTINGS = {"exec-new-server": NEW_SERVER}
Target = tuple[str, Callable[[float], bool]]
"""A target as its verdict line states it, and the test its median must pass."""


def command(mode: str, scripts: Path, corpus: Path, output: Path, processes: int) -> list[str]:
    args = [str(corpus), str(output), str(processes)]
    return {
        "pool": [sys.executable, str(scripts / "pool_script.py"), *args],
        "empty": [sys.executable, str(scripts / "empty_flow.py")],
        "script": [sys.executable, str(scripts / "my_flow.py"), *args],
        "exec": [POOLFLOW, "exec", "--", sys.executable, str(scripts / "my_flow.py"), *args],
        "exec-new-server": [POOLFLOW, "exec", "--", sys.executable, str(scripts / "my_flow.py"), *args],
        "prefect": [sys.executable, str(scripts / "prefect_flow.py"), *args],
    }[mode]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=HERE.parent.parent / "shared" / "corpus" / "kowiki")
    parser.add_argument("--times", type=int, default=10, help="copies of the corpus (10 x 20 = 200 files)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--api", choices=sorted(DEFAULT_MODES), default="none")
    parser.add_argument("--modes", help=f"some of {','.join(MODES)} (default: by --api)")
    parser.add_argument("--mirrored", action="store_true", help="each round forward, then backward")
    parser.add_argument("--out", type=Path, default=HERE, help="folder of the results.md to update")
    args = parser.parse_args()
    modes = (args.modes or DEFAULT_MODES[args.api]).split(",")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=fresh_home(), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    with contextlib.ExitStack() as stack:
        if args.api == "server":
            env["PREFECT_API_URL"] = stack.enter_context(default_server(env))
        walls, files = _rounds(args, modes, env)
    write_section(args.out / "results.md", _section(walls, files, args))


def _rounds(
    args: argparse.Namespace, modes: list[str], env: dict[str, str]
) -> tuple[dict[str, list[float]], int]:
    """Each mode's wall times, ``args.rounds`` rounds with the modes alternating; the file count."""
    walls: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="poolflow-user-script-") as work:
        root = Path(work)
        files = build_corpus(args.corpus.resolve(), args.times, root / "corpus")
        (root / "pool_script.py").write_text(POOL_SCRIPT)
        (root / "empty_flow.py").write_text(EMPTY_SCRIPT)
        for name, (runner_import, runner) in RUNNERS.items():
            script = FLOW_SCRIPT.replace("RUNNER_IMPORT", runner_import)
            (root / name).write_text(script.replace("task_runner=RUNNER", f"task_runner={runner}"))
        # Prefect's database, created once before anything is timed (for both kinds of API). Its
        # migrations can outlast the 20 s Prefect gives an ephemeral server to start on a busy machine.
        warm_env = {**env, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}
        measure(command("empty", root, root / "corpus", root / "warm", args.processes), warm_env)
        if args.api == "none":
            measure(command("exec", root, root / "corpus", root / "warm", args.processes), env)
        for round_ in range(args.rounds):
            for turn, mode in enumerate([*modes, *modes[::-1]] if args.mirrored else modes):
                output = root / f"out-{mode}-{round_}-{turn}"
                mode_env = {**env, **MODE_SETTINGS.get(mode, {})}
                walls[mode].append(
                    measure(command(mode, root, root / "corpus", output, args.processes), mode_env).wall
                )
                print(f"round {round_ + 1}: {mode} {walls[mode][-1]:.2f} s", flush=True)
    return walls, files


def _section(walls: dict[str, list[float]], files: int, args: argparse.Namespace) -> str:
    if args.api == "none":
        title, setting = SECTION, "no API configured"
    else:
        title, setting = f"{SECTION} on a default prefect server start, {files} files", "default server"
    lines = [
        f"{title} ({files} files, {args.processes} processes, {setting}, "
        f"`python -m bench.user_script --api {args.api} --times {args.times} --rounds {args.rounds}"
        f"{' --mirrored' if args.mirrored else ''}`)",
        "",
        "| mode | walls (s) | median (s) | over raw Pool, per run (s) | median over raw Pool (s) |",
        "|---|---|---|---|---|",
    ]
    pool = walls.get("pool", [])
    for mode, times in walls.items():
        over = [t - p for t, p in zip(times, pool, strict=False)] if mode != "pool" else []
        lines.append(
            f"| {mode} | {', '.join(f'{t:.2f}' for t in times)} | {statistics.median(times):.2f} | "
            f"{', '.join(f'{d:+.2f}' for d in over)} | {f'{statistics.median(over):+.2f}' if over else ''} |"
        )
    lines += ["", *_verdicts(walls, args.api, files, 2 if args.mirrored else 1)]
    return "\n".join(lines) + "\n"


def _verdicts(walls: dict[str, list[float]], api: str, files: int, per_round: int) -> list[str]:
    """One line per target this setting has: its value in each round and their median, which
    the target holds to; a round's wall for a mode is the mean of its ``per_round`` runs."""

    def rounds(*modes: str) -> Iterator[tuple[float, ...]]:
        return zip(*(round_means(walls[mode], per_round) for mode in modes), strict=True)

    def line(what: str, values: list[float], form: str, target: Target | None = None) -> str:
        median = statistics.median(values)
        verdict = f"target {target[0]}: {_held(target[1](median))}" if target else "no target"
        shown = ", ".join(format(value, form) for value in values)
        return f"- {what}, per round {shown}: median {format(median, form)}; {verdict}"

    lines = []
    if api == "none" and {"pool", "exec"} <= walls.keys():
        over = [e - p for p, e in rounds("pool", "exec")]
        lines.append(line("`exec` − raw Pool (s)", over, "+.2f", ("≤ +4 s", lambda m: m <= 4)))
    if api == "none" and {"pool", "exec-new-server"} <= walls.keys():
        over = [e - p for p, e in rounds("pool", "exec-new-server")]
        lines.append(line("`exec` starting its own server − raw Pool (s)", over, "+.2f"))
    if api == "server" and {"pool", "empty", "script"} <= walls.keys():
        if files <= 200:
            over = [s - p - e for p, e, s in rounds("pool", "empty", "script")]
            what = "poolflow − (raw Pool + empty flow) (s)"
            lines.append(line(what, over, "+.2f", ("≤ +1.5 s", lambda m: m <= 1.5)))
        else:
            ratios = [(s - e) / p for p, e, s in rounds("pool", "empty", "script")]
            what = "(poolflow − empty flow) / raw Pool"
            lines.append(line(what, ratios, ".3f", ("≤ 1.05", lambda m: m <= 1.05)))
    if api == "server" and {"empty", "script", "prefect"} <= walls.keys():
        times = [(c - e) / (s - e) for e, s, c in rounds("empty", "script", "prefect")]
        what = "ProcessPoolTaskRunner / poolflow, both less the empty flow (×)"
        lines.append(line(what, times, ".2f", ("≥ 3×", lambda m: m >= 3)))
    return lines


def _held(held: bool) -> str:
    return "held" if held else "**not held**"


if __name__ == "__main__":
    main()
