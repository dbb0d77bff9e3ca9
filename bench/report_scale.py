"""Does the report step stream? ``python -m bench.report_scale [CORPUS]``

Builds the artifacts of the corpus once, then the report from them at 1× and 10× (each
artifact listed ten times), each in a fresh process; prints wall time and peak RSS growth.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.run import DEFAULT_CORPUS
from flows.parameters import DEFAULT_PATTERN
from tasks.inputs import list_items
from tasks.items import parse_item


def build(output: str, corpus: str, times: int) -> None:
    """In a fresh process: the report over every artifact listed ``times`` times."""
    from tasks.report import build_report

    # The artifacts exist already, so parse_item only reads their results back ("skipped").
    items = list_items(Path(corpus), DEFAULT_PATTERN)
    results = [parse_item(corpus, item, output).result for item in items] * times
    started = time.perf_counter()
    report = build_report(output, results, [None] * len(results))
    seconds = round(time.perf_counter() - started, 2)
    peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(
        json.dumps({"times": times, "documents": report.documents, "seconds": seconds, "peak_rss_mib": peak})
    )


def main() -> None:
    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CORPUS
    with tempfile.TemporaryDirectory() as output:
        for item in list_items(corpus, DEFAULT_PATTERN):
            parse_item(str(corpus), item, output)
        for times in (1, 10):
            command = [sys.executable, "-m", "bench.report_scale", "--child", output, str(corpus), str(times)]
            print(subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip())


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        build(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
