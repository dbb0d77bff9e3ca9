"""``python -m bench.item_stages``: where one item's time goes, stage by stage, beside the lean step.

Runs each stage of ``parse_item`` on its own over every file of the corpus, ``--repeat`` times,
in this one process, and reports CPU milliseconds per file (``time.process_time``: the deflating
thread's time included): reading and decoding, hashing, parsing, stats, the cells (split texts),
rendering the artifact's and the report part's rows, deflating them, writing the artifact's
package and the report part (rendering and deflating included), then ``parse_item`` whole, and
the lean per-file step of ``bench.scale`` (regex split → DataFrame → ``to_excel``) on the same
files. Writes an "Item stages" section into ``bench/results.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from bench.results_file import write_section
from bench.run import DEFAULT_CORPUS, HERE
from bench.scale import lean_do_work
from poolflow.flows.parameters import DEFAULT_PATTERN
from poolflow.tasks.document_rows import DocumentRows
from poolflow.tasks.inputs import list_items
from poolflow.tasks.items import (
    DOC_COLUMNS,
    artifact_rows,
    parse_item,
    read_input,
    text_columns_header,
)
from poolflow.tasks.parse import parse_text
from poolflow.tasks.report_parts import write_part
from poolflow.tasks.stats import document_stats
from poolflow.tasks.xlsx_package import Table, write_package
from poolflow.tasks.zip_stream import deflate_piece

SECTION = "## Item stages"


class Clock:
    """CPU seconds spent per stage, summed over the ``with clock("stage"):`` blocks."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.process_time()
        yield
        self.spent[stage] += time.process_time() - started


def time_item(clock: Clock, corpus: Path, item: str, out: Path) -> None:
    """Each stage of ``item`` on its own, then ``parse_item`` whole and the lean step, into ``out``."""
    name = item.replace("/", "_")
    with clock("read and decode"):
        source = read_input(corpus, item)
    with clock("sha256"):
        hashlib.sha256(source.data).hexdigest()
    with clock("parse"):
        parsed = parse_text(source.text)
    with clock("stats"):
        document_stats(parsed.documents)
    with clock("cells (texts split at 32,767 units)"):
        rows, widest = artifact_rows(item, parsed.documents)
    rendering = DocumentRows(item, rows)
    with clock("render artifact and part rows"):
        blocks = list(rendering.take(len(rows)))
    rendering.part()
    with clock("deflate the artifact's rows (ISA-L; the part's are as many bytes)"):
        deflate_piece(blocks)
    documents = DocumentRows(item, rows)
    docs = Table("docs", DOC_COLUMNS + text_columns_header(widest), len(rows), documents.take)
    with clock("write artifact and part (render, deflate, zip)"):
        write_package(out / "stages" / f"{name}.xlsx", [docs], threads=1)
        piece = documents.part()
        write_part(out / "stages" / f"{name}.part", item, {}, piece, documents.count, documents.columns)
    with clock("parse_item whole"):
        parse_item(str(corpus), item, str(out / "items"))
    with clock("lean step (regex → DataFrame → to_excel)"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas warns of each text it truncates
        lean_do_work((str(corpus / item), str(out / f"{name}.lean.xlsx")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE, help="folder of the results.md to update")
    args = parser.parse_args()
    corpus = args.corpus.resolve()
    items = list_items(corpus, DEFAULT_PATTERN)
    clock = Clock()
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="poolflow-stages-") as work:
            for item in items:
                time_item(clock, corpus, item, Path(work))
    files = args.repeat * len(items)
    lines = [
        f"{SECTION} (`python -m bench.item_stages`: the shared corpus's {len(items)} files "
        f"× {args.repeat}, one process)",
        "",
        "CPU ms per file (the deflating thread included). `write artifact and part` renders, deflates "
        "and writes together: it overlaps the two stages before it.",
        "",
        "| stage | CPU ms per file |",
        "|---|---|",
        *(f"| {stage} | {1000 * seconds / files:.1f} |" for stage, seconds in clock.spent.items()),
        "",
    ]
    section = "\n".join(lines)
    write_section(args.out / "results.md", section)
    print(section)


if __name__ == "__main__":
    main()
