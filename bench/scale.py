"""``make bench-scale``: a whole dump's worth of files end to end against plain per-file steps.

Builds a corpus of the shared corpus × ``--times`` (35: 700 files) from symlinks, then, for
``--rounds`` rounds, times each of these in a fresh process tree sampled for its summed peak RSS:

1. the lean per-file step on raw ``multiprocessing.Pool`` (``lean_do_work``: a regex split of
   the records → pandas DataFrame → ``to_excel``, no report): the bar ``poolflow run`` is held to;
2. the old script's per-file step on raw ``Pool`` (``old_do_work``: the seed's BeautifulSoup +
   html5lib → DataFrame → ``to_excel``, no report);
3. ``poolflow run CORPUS -o OUT --processes N`` end to end into a new output (Prefect start-up,
   items, report);
4. the same command again with every item current (resume: only the report is rebuilt).

The report step's time is read from the run's log: from the last item task's end to the
``report`` task's end. After the rounds, every artifact and the report of the last run are read
back with python-calamine and each document compared with the records a regex finds in its
input file (``check_exact``). Writes a "Scale" section into ``bench/results.md`` (other
sections kept).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path

import psutil

from bench.homes import fresh_home
from bench.results_file import write_section
from bench.run import DEFAULT_CORPUS, HERE
from bench.sampling import RunSampler, warm_interpreters
from poolflow.flows.parameters import DEFAULT_PATTERN
from poolflow.tasks.inputs import list_items
from poolflow.tasks.items import artifact_path
from poolflow.tasks.report import REPORT_NAME
from poolflow.tasks.xlsx import join_cells, read_sheet

POOLFLOW = Path(sys.executable).parent / "poolflow"
SECTION = "## Scale"
# Prefect's console lines: "12:34:56.789 | INFO    | Task run 'report-1a2' - Finished in state …"
_FINISHED = re.compile(r"(\d\d:\d\d:\d\d\.\d{3}) \| INFO +\| Task run '([^']*)' - Finished in state")
# A WikiExtractor record as a plain script splits it: the lean step's parser and the check's oracle.
RECORD = re.compile(r'<doc id="(.*?)" url="(.*?)" title="(.*?)">\n(.*?)</doc>', re.S)
MODES = ("lean", "old", "run", "rerun")


def build_corpus(source: Path, times: int, destination: Path) -> int:
    """``times`` copies of ``source``'s files as symlinks under AA, AB, … BA…; returns the file count."""
    items = list_items(source, DEFAULT_PATTERN)
    for copy in range(times):
        folder = destination / f"{chr(65 + copy // 26)}{chr(65 + copy % 26)}"
        for item in items:
            link = folder / Path(item).name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source / item)
    return times * len(items)


def lean_do_work(job: tuple[str, str]) -> None:
    """A lean per-file step, as a data engineer would write it today: split the records with a
    regex, one DataFrame, ``to_excel`` (pandas truncates texts over 32,767 characters: lossy)."""
    import pandas as pd

    source, target = job
    text = Path(source).read_text(encoding="utf-8")
    pd.DataFrame(RECORD.findall(text), columns=["id", "url", "title", "text"]).to_excel(target, index=False)


def old_do_work(job: tuple[str, str]) -> None:
    """The seed script's ``doWork`` for one file: html5lib soup → DataFrame → ``to_excel``.

    The seed appends row by row with ``DataFrame.append`` (gone from pandas 2); one DataFrame
    from the same rows is the same table, built faster, so the baseline is not handicapped.
    """
    import pandas as pd
    from bs4 import BeautifulSoup

    source, target = job
    with open(source, encoding="UTF-8") as file:
        soup = BeautifulSoup(file.read().strip(), "html5lib")
    rows = [{"id": doc["id"], "title": doc["title"], "text": doc.text} for doc in soup.find_all("doc")]
    pd.DataFrame(rows, columns=["id", "title", "text"]).to_excel(target, index=False)


STEPS: dict[str, Callable[[tuple[str, str]], None]] = {"lean": lean_do_work, "old": old_do_work}


def pool_step(step: str, corpus: Path, output: Path, processes: int) -> None:
    """Every file of ``corpus`` through ``STEPS[step]`` on a raw ``Pool``, as the seed script runs it."""
    jobs = []
    for item in list_items(corpus, DEFAULT_PATTERN):
        target = output / f"{item.replace('/', '_')}.xlsx"
        jobs.append((str(corpus / item), str(target)))
    output.mkdir(parents=True, exist_ok=True)
    with multiprocessing.Pool(processes=processes) as pool:
        pool.map(STEPS[step], jobs)


@dataclass(frozen=True)
class Measured:
    """One command's wall seconds (process start to exit), summed peak RSS and console log."""

    wall: float
    peak: int
    log: str


def measure(command: list[str], env: dict[str, str]) -> Measured:
    """Run ``command``, sampling its whole process tree's resident memory every 50 ms."""
    with tempfile.TemporaryFile("w+") as log:
        started = time.perf_counter()
        child = subprocess.Popen(command, env=env, cwd=HERE.parent, stdout=log, stderr=subprocess.STDOUT)
        # A command handed to a warm interpreter runs in a copy of it, outside this tree.
        warm = warm_interpreters(env["PREFECT_HOME"]) if "PREFECT_HOME" in env else []
        sampler = RunSampler(child.pid, interpreters=warm)
        while child.poll() is None:
            sampler.sample()
            time.sleep(0.05)
        peak = sampler.peak
        wall = time.perf_counter() - started
        log.seek(0)
        text = log.read()
    if child.returncode != 0:
        raise RuntimeError(f"{command} failed with exit code {child.returncode}:\n{text[-3000:]}")
    return Measured(wall, peak, text)


def report_seconds(log: str) -> float:
    """From the last item task's end to the ``report`` task's end, from the run's console log."""
    finished = [(datetime.strptime(t, "%H:%M:%S.%f"), name) for t, name in _FINISHED.findall(log)]
    report_end = max(when for when, name in finished if name.startswith("report"))
    items_end = max(when for when, name in finished if not name.startswith("report") and when <= report_end)
    return (report_end - items_end).total_seconds()


def poolflow_run(corpus: Path, output: Path, processes: int, env: dict[str, str]) -> Measured:
    command = [str(POOLFLOW), "run", str(corpus), "-o", str(output), "--processes", str(processes)]
    return measure([*command, "--verbose"], env)  # --verbose: the log lines the report time is read from


@cache
def records(path: Path) -> list[tuple[str, ...]]:
    """The (id, url, title, text) of each record a regex finds in the file at ``path``."""
    return [tuple(found) for found in RECORD.findall(path.read_text(encoding="utf-8"))]


def _documents(rows: Iterator[list[object]]) -> Iterator[tuple[object, tuple[str, ...]]]:
    """(first cell, (id, url, title, text)) of each ``docs`` row, the text joined from its cells."""
    for row in rows:
        yield row[0], (str(row[1]), str(row[2]), str(row[3]), join_cells(row[4:]))


def check_exact(corpus: Path, output: Path) -> int:
    """Check that every artifact and the report hold each document of its input exactly, in order;
    return the report's document count (``AssertionError`` naming the first item that differs)."""
    items = list_items(corpus, DEFAULT_PATTERN)
    for item in items:
        held = [document for _, document in _documents(read_sheet(artifact_path(output, item), "docs"))]
        assert held == records((corpus / item).resolve()), f"{item}: its artifact differs from its input"
    seen: dict[str, int] = {}
    for source, document in _documents(read_sheet(output / REPORT_NAME, "docs")):
        item = str(source)
        index = seen.get(item, 0)
        expected = records((corpus / item).resolve())
        assert index < len(expected) and document == expected[index], f"{item}: document {index + 1} differs"
        seen[item] = index + 1
    for item in items:
        count = len(records((corpus / item).resolve()))
        assert seen.get(item) == count, f"{item}: the report holds {seen.get(item)} of {count} documents"
    return sum(seen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--times", type=int, default=35, help="copies of the corpus (35 × 20 = 700 files)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every mode; medians reported")
    parser.add_argument("--out", type=Path, default=HERE, help="folder of the results.md to update")
    args = parser.parse_args()
    env = {**os.environ, "PREFECT_HOME": fresh_home()}
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    runs: dict[str, list[Measured]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="poolflow-scale-") as work:
        root = Path(work)
        corpus, output = root / "corpus", root / "out"
        files = build_corpus(args.corpus.resolve(), args.times, corpus)
        build_corpus(args.corpus.resolve(), 1, root / "warm-up")
        poolflow_run(root / "warm-up", root / "warm-up-out", args.processes, env)  # Prefect's database
        for round_number in range(1, args.rounds + 1):
            for mode in MODES:
                if mode in STEPS:
                    shutil.rmtree(root / mode, ignore_errors=True)
                    step = [sys.executable, "-m", "bench.scale", "--pool-step", mode, str(corpus)]
                    measured = measure([*step, str(root / mode), str(args.processes)], env)
                else:
                    if mode == "run":
                        shutil.rmtree(output, ignore_errors=True)
                    measured = poolflow_run(corpus, output, args.processes, env)
                runs[mode].append(measured)
                print(f"round {round_number}, {mode}: {measured.wall:.1f} s", flush=True)
        print("checking every document of the artifacts and the report …", flush=True)
        documents = check_exact(corpus, output)
        size = (output / REPORT_NAME).stat().st_size
    section = _section(args, files, documents, size, runs)
    write_section(args.out / "results.md", section)
    print(section)


_LABELS = {
    "lean": "lean step on raw Pool({p}) (regex split → DataFrame → to_excel, no report; lossy)",
    "old": "old script's step on raw Pool({p}) (html5lib → DataFrame → to_excel, no report)",
    "run": "`poolflow run` (Prefect start-up, items, exact report)",
    "rerun": "`poolflow run` again, every item current (resume)",
}


def _section(
    args: argparse.Namespace, files: int, documents: int, size: int, runs: dict[str, list[Measured]]
) -> str:
    """The "Scale" section: per mode, each round's wall time, the median, and per-round ratios."""
    lines = [
        f"{SECTION} (`make bench-scale`: {files} files = shared corpus × {args.times}, "
        f"{documents} documents, {args.processes} processes, {args.rounds} rounds)",
        "",
        f"Machine: {psutil.cpu_count()} cores. Each run a fresh process tree, the modes one after another "
        "in each round; ratios are per round, then their median. Peak RSS is the largest sum over every "
        "process of a run (Prefect's temporary API server included). The report step is the time from the "
        "last item task's end to the report task's end in the run's log. After the rounds every document "
        f"of the last run's {files} artifacts and report was read back and compared with its input: "
        "all exact.",
        "",
        "| run | wall s, per round | median wall s | vs lean step | vs old step | report step s "
        "| peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, measured in runs.items():
        walls = [run.wall for run in measured]
        ratios = {
            bar: statistics.median(
                [run.wall / base.wall for run, base in zip(measured, runs[bar], strict=True)]
            )
            for bar in STEPS
        }
        report = (
            f"{statistics.median([report_seconds(run.log) for run in measured]):.1f}"
            if mode not in STEPS
            else "—"
        )
        lines.append(
            f"| {_LABELS[mode].format(p=args.processes)} | {', '.join(f'{w:.1f}' for w in walls)} | "
            f"{statistics.median(walls):.1f} | {ratios['lean']:.2f}× | {ratios['old']:.2f}× | {report} | "
            f"{max(run.peak for run in measured) / 2**20:.0f} |"
        )
    lines += ["", f"report.xlsx: {size / 2**20:.0f} MiB.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--pool-step"]:
        pool_step(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
