"""How long does pandas take to load a report? ``python -m bench.pandas_load [--times 10 35] [CORPUS]``

For each size, copies the corpus ``times`` times under distinct folders of a temp directory,
builds the artifacts (a 2-process Pool), ``report.xlsx`` and ``report.parquet``, then loads
each in a fresh process — ``pandas.read_parquet`` against ``poolflow.tasks.frames.read_report`` (all
sheets, texts re-joined) — alternating, ``--rounds`` times; prints the best wall time of each
(and its CPU seconds, steadier on a busy machine) as one JSON line per size, with the file
sizes and the ratio.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.run import DEFAULT_CORPUS
from poolflow.flows.parameters import DEFAULT_PATTERN
from poolflow.tasks.inputs import list_items
from poolflow.tasks.items import ItemOutput, parse_item

# (imports, the timed load): the imports are not timed.
LOADERS = {
    "parquet": ("import pandas as pd", "n = len(pd.read_parquet({path!r}))"),
    "xlsx": ("from poolflow.tasks.frames import read_report", "n = len(read_report({path!r})['docs'])"),
}
TIMED = (
    "import time; {imports}; t, c = time.perf_counter(), time.process_time(); {load}; "
    "print(n, time.perf_counter() - t, time.process_time() - c)"
)


def copy_corpus(corpus: Path, times: int, target: Path) -> None:
    """``target/c00/AA/wiki_00`` …: the corpus ``times`` times, each copy in its own folder."""
    for copy in range(times):
        shutil.copytree(corpus, target / f"c{copy:02d}")


def _parse(args: tuple[str, str, str]) -> ItemOutput:
    return parse_item(*args)


def build_outputs(source: Path, output: Path) -> int:
    """Artifacts, report.xlsx and report.parquet of ``source`` in ``output``; the document count."""
    from poolflow.tasks.parquet import write_parquet
    from poolflow.tasks.report import build_report

    items = list_items(source, DEFAULT_PATTERN)
    with multiprocessing.get_context("forkserver").Pool(2) as pool:
        outputs = pool.map(_parse, [(str(source), item, str(output)) for item in items], chunksize=4)
    results = [o.result for o in outputs]
    stats = [o.stats for o in outputs]
    report = build_report(str(output), results, stats)
    write_parquet(str(output), results, stats)
    return report.documents


def load_seconds(kind: str, path: Path) -> tuple[int, float, float]:
    """(rows, wall seconds, CPU seconds) of loading ``path`` with ``kind``'s loader in a fresh interpreter."""
    imports, load = LOADERS[kind]
    code = TIMED.format(imports=imports, load=load.format(path=str(path)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    rows, wall, cpu = out.split()
    return int(rows), float(wall), float(cpu)


def measure(corpus: Path, times: int, rounds: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="poolflow-pandas-") as tmp:
        source, output = Path(tmp) / "corpus", Path(tmp) / "out"
        copy_corpus(corpus, times, source)
        started = time.perf_counter()
        documents = build_outputs(source, output)
        built = time.perf_counter() - started
        wall = {kind: float("inf") for kind in LOADERS}
        cpu = dict(wall)
        paths = {"parquet": output / "report.parquet", "xlsx": output / "report.xlsx"}
        for _ in range(rounds):
            for kind, path in paths.items():
                rows, seconds, cpu_seconds = load_seconds(kind, path)
                assert rows == documents, (kind, rows, documents)
                wall[kind] = min(wall[kind], seconds)
                cpu[kind] = min(cpu[kind], cpu_seconds)
        return {
            "times": times,
            "documents": documents,
            "build_s": round(built, 1),
            "xlsx_mib": round(paths["xlsx"].stat().st_size / 2**20, 1),
            "parquet_mib": round(paths["parquet"].stat().st_size / 2**20, 1),
            "read_report_xlsx_s": round(wall["xlsx"], 2),
            "read_parquet_s": round(wall["parquet"], 2),
            "read_report_xlsx_cpu_s": round(cpu["xlsx"], 2),
            "read_parquet_cpu_s": round(cpu["parquet"], 2),
            "xlsx_over_parquet_wall": round(wall["xlsx"] / wall["parquet"], 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, nargs="?", default=DEFAULT_CORPUS)
    parser.add_argument("--times", type=int, nargs="+", default=[10])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for times in args.times:
        print(json.dumps(measure(args.corpus, times, args.rounds)), flush=True)


if __name__ == "__main__":
    main()
