"""Does the report step stream? ``python -m bench.report_scale [CORPUS] [--times 1 10 35]``

Builds the artifacts of the corpus once, then the report (docs, stats and summary) from them
at each of ``--times`` (every item listed that many times; 35× is the 700-file dump of
``bench.scale``), each in a fresh process; prints wall time, CPU time and peak RSS of the
report step.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.run import DEFAULT_CORPUS
from poolflow.flows.parameters import DEFAULT_PATTERN
from poolflow.tasks.inputs import list_items
from poolflow.tasks.items import parse_item


def build(output: str, corpus: str, times: int) -> None:
    """In a fresh process: the report over every artifact listed ``times`` times."""
    from poolflow.tasks.report import build_report

    # The artifacts exist already, so parse_item only parses for the stats ("skipped").
    outputs = [parse_item(corpus, item, output) for item in list_items(Path(corpus), DEFAULT_PATTERN)] * times
    started, cpu_started = time.perf_counter(), time.process_time()
    report = build_report(output, [out.result for out in outputs], [out.stats for out in outputs])
    seconds = round(time.perf_counter() - started, 2)
    cpu = round(time.process_time() - cpu_started, 2)
    peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    size = round(Path(report.path).stat().st_size / 2**20)
    print(
        json.dumps(
            {
                "times": times,
                "documents": report.documents,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "report_mib": size,
                "peak_rss_mib": peak,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--times", type=int, nargs="+", default=[1, 10], help="listings of the corpus")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as output:
        for item in list_items(args.corpus, DEFAULT_PATTERN):
            parse_item(str(args.corpus), item, output)
        for times in args.times:
            command = [
                sys.executable,
                "-m",
                "bench.report_scale",
                "--child",
                output,
                str(args.corpus),
                str(times),
            ]
            print(subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip())


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        build(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
