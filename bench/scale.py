"""``make bench-scale``: a whole dump's worth of files end to end against the old script's step.

Builds a corpus of the shared corpus × ``--times`` (35: 700 files) from symlinks, then times,
each in a fresh process tree sampled for its summed peak RSS:

1. the old script's per-file step on raw ``multiprocessing.Pool`` (``old_step``: the seed's
   ``doWork`` — BeautifulSoup + html5lib → pandas DataFrame → ``to_excel`` per file, no report);
2. ``poolflow run CORPUS -o OUT --processes N`` end to end (Prefect start-up, items, report);
3. the same command again with every item current (resume: only the report is rebuilt).

The report step's time is read from the run's log: from the last item task's end to the
``report`` task's end. Writes a "Scale" section into ``bench/results.md`` (other sections kept).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psutil

from bench.results_file import write_section
from bench.run import DEFAULT_CORPUS, HERE, sample_tree
from poolflow.flows.parameters import DEFAULT_PATTERN
from poolflow.tasks.inputs import list_items

POOLFLOW = Path(sys.executable).parent / "poolflow"
SECTION = "## Scale"
# Prefect's console lines: "12:34:56.789 | INFO    | Task run 'report-1a2' - Finished in state …"
_FINISHED = re.compile(r"(\d\d:\d\d:\d\d\.\d{3}) \| INFO +\| Task run '([^']*)' - Finished in state")


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


def old_step(corpus: Path, output: Path, processes: int) -> None:
    """Every file of ``corpus`` through ``old_do_work`` on a raw ``Pool``, as the seed script runs it."""
    jobs = []
    for item in list_items(corpus, DEFAULT_PATTERN):
        target = output / f"{item.replace('/', '_')}.xlsx"
        jobs.append((str(corpus / item), str(target)))
    output.mkdir(parents=True, exist_ok=True)
    pool = multiprocessing.Pool(processes=processes)
    pool.map(old_do_work, jobs)
    pool.close()
    pool.join()


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
        watched = psutil.Process(child.pid)
        peak = 0
        while child.poll() is None:
            peak = max(peak, sample_tree(watched, {}))
            time.sleep(0.05)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--times", type=int, default=35, help="copies of the corpus (35 × 20 = 700 files)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE, help="folder of the results.md to update")
    args = parser.parse_args()
    env = {**os.environ, "PREFECT_HOME": tempfile.mkdtemp(prefix="poolflow-bench-home-")}
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with tempfile.TemporaryDirectory(prefix="poolflow-scale-") as work:
        root = Path(work)
        files = build_corpus(args.corpus.resolve(), args.times, root / "corpus")
        build_corpus(args.corpus.resolve(), 1, root / "warm-up")
        poolflow_run(root / "warm-up", root / "warm-up-out", args.processes, env)  # Prefect's database
        print(f"{files} files; old script's step on raw Pool({args.processes}) …", flush=True)
        command = [sys.executable, "-m", "bench.scale", "--old-step", str(root / "corpus"), str(root / "old")]
        old = measure([*command, str(args.processes)], env)
        print(f"  {old.wall:.1f} s, peak {old.peak / 2**20:.0f} MiB\npoolflow run …", flush=True)
        run = poolflow_run(root / "corpus", root / "out", args.processes, env)
        report = report_seconds(run.log)
        size = (root / "out" / "report.xlsx").stat().st_size
        print(f"  {run.wall:.1f} s (report {report:.1f} s), peak {run.peak / 2**20:.0f} MiB", flush=True)
        print("rerun, every item current …", flush=True)
        rerun = poolflow_run(root / "corpus", root / "out", args.processes, env)
        rerun_report = report_seconds(rerun.log)
        print(f"  {rerun.wall:.1f} s (report {rerun_report:.1f} s)", flush=True)
    documents = re.search(r"(\d+) documents from", run.log)
    section = (
        f"{SECTION} (`make bench-scale`: {files} files = shared corpus × {args.times}, "
        f"{documents[1] if documents else '?'} documents, {args.processes} processes)\n\n"
        f"Machine: {psutil.cpu_count()} cores. One run each, fresh process trees; peak RSS is the sum over "
        "every process of the run (Prefect's temporary API server included). The report step is the time "
        "from the last item task's end to the report task's end in the run's log.\n\n"
        "| run | wall s | vs old step | report step s | report share | peak RSS MiB |\n"
        "|---|---|---|---|---|---|\n"
        f"| old script's step on raw Pool({args.processes}) (html5lib → DataFrame → to_excel, no report) | "
        f"{old.wall:.1f} | 1.00× | — | — | {old.peak / 2**20:.0f} |\n"
        f"| `poolflow run` (items + exact report + Prefect start-up) | {run.wall:.1f} | "
        f"{run.wall / old.wall:.2f}× | {report:.1f} | {report / run.wall:.0%} | {run.peak / 2**20:.0f} |\n"
        f"| `poolflow run` again, every item current (resume) | {rerun.wall:.1f} | "
        f"{rerun.wall / old.wall:.2f}× | {rerun_report:.1f} | {rerun_report / rerun.wall:.0%} | "
        f"{rerun.peak / 2**20:.0f} |\n\n"
        f"report.xlsx: {size / 2**20:.0f} MiB.\n"
    )
    write_section(args.out / "results.md", section)
    print(section)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--old-step"]:
        old_step(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
