"""Parser and xlsx library timings on the corpus: ``python -m bench.formats [CORPUS]``.

Times the exact parser against BeautifulSoup+html5lib, and writing/reading all documents
with xlsxwriter (constant_memory) vs openpyxl (write_only/read_only) vs python-calamine.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import openpyxl

from bench.run import DEFAULT_CORPUS
from poolflow.flows.parameters import DEFAULT_PATTERN
from poolflow.tasks.inputs import list_items
from poolflow.tasks.parse import parse_exact, parse_html5lib
from poolflow.tasks.xlsx import AtomicWorkbook, read_sheet, split_cell, write_sheet


def timed(label: str, action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    print(f"{label:42} {seconds:7.2f} s")
    return seconds


def main() -> None:
    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CORPUS
    texts = [(corpus / item).read_text(encoding="utf-8") for item in list_items(corpus, DEFAULT_PATTERN)]
    exact = timed("parse: exact", lambda: [parse_exact(t) for t in texts])
    html5 = timed("parse: BeautifulSoup + html5lib", lambda: [parse_html5lib(t) for t in texts])
    print(f"{'exact is faster by':42} {html5 / exact:7.1f}×")
    rows = [[d.id, d.title, *split_cell(d.text)] for t in texts for d in parse_exact(t).documents]
    with tempfile.TemporaryDirectory() as tmp:
        xw, ox = Path(tmp) / "xw.xlsx", Path(tmp) / "ox.xlsx"

        def write_xlsxwriter() -> None:
            with AtomicWorkbook(xw) as workbook:
                write_sheet(workbook, "docs", ["id", "title", "text"], rows)

        def write_openpyxl() -> None:
            workbook = openpyxl.Workbook(write_only=True)
            sheet = workbook.create_sheet("docs")
            for row in rows:
                sheet.append(row)
            workbook.save(ox)

        timed("write: xlsxwriter constant_memory", write_xlsxwriter)
        timed("write: openpyxl write_only", write_openpyxl)
        timed("read: python-calamine", lambda: list(read_sheet(xw, "docs")))
        timed(
            "read: openpyxl read_only",
            lambda: list(openpyxl.load_workbook(xw, read_only=True)["docs"].values),
        )


if __name__ == "__main__":
    main()
