"""A real spreadsheet application reads the report and the artifacts: LibreOffice Calc gets every
document exact."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_documents import DOC, HOSTILE

from poolflow.flows.parameters import DEFAULT_PATTERN
from poolflow.tasks.inputs import list_items
from poolflow.tasks.items import artifact_path, parse_item, read_input
from poolflow.tasks.parse import parse_text
from poolflow.tasks.report import REPORT_NAME, build_report

SOFFICE = "/usr/bin/soffice"
# Comma-separated, '"'-quoted, UTF-8 (76), from line 1, every sheet (-1) to its own file.
ALL_SHEETS_CSV = "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,false,false,false,-1"
TEXT_COLUMN = 4  # source, id, url, title, text, text_2, …

pytestmark = pytest.mark.slow


@pytest.fixture
def soffice() -> str:
    if not Path(SOFFICE).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("Debian's LibreOffice is missing; `make test` installs libreoffice-calc-nogui")
        pytest.skip("LibreOffice not installed (apt-get install libreoffice-calc-nogui)")
    return SOFFICE


def _convert_all_sheets(soffice: str, workbooks: list[Path], outdir: Path, profile: Path) -> None:
    """One CSV per sheet of each workbook in ``outdir`` (``report-docs.csv``, …), by headless Calc."""
    command = [
        soffice,
        f"-env:UserInstallation={profile.as_uri()}",
        "--headless",
        "--norestore",
        "--convert-to",
        ALL_SHEETS_CSV,
        *map(str, workbooks),
        "--outdir",
        str(outdir),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr


def _docs_read_by_libreoffice(soffice: str, workbooks: list[Path], work: Path) -> list[list[list[str]]]:
    """The ``docs`` rows of each workbook as Calc reads them, text columns joined; checks each
    header (a report's first column is ``source``, an artifact's ``line``)."""
    _convert_all_sheets(soffice, workbooks, work / "csv", work / "profile")
    shutil.rmtree(work / "profile", ignore_errors=True)
    csv.field_size_limit(sys.maxsize)
    read = []
    for workbook in workbooks:
        with (work / "csv" / f"{workbook.stem}-docs.csv").open(encoding="utf-8", newline="") as file:
            header, *rows = list(csv.reader(file))
        first = "source" if workbook.name == REPORT_NAME else "line"
        assert header[:TEXT_COLUMN] == [first, "id", "url", "title"]
        read.append([[*row[:TEXT_COLUMN], "".join(row[TEXT_COLUMN:])] for row in rows])
    return read


@pytest.mark.corpus
def test_libreoffice_reads_every_corpus_document_exactly(corpus: Path, soffice: str, tmp_path: Path) -> None:
    items = list_items(corpus, DEFAULT_PATTERN)
    output = tmp_path / "out"
    outputs = [parse_item(str(corpus), item, str(output)) for item in items]
    stats = [out.stats for out in outputs]
    report = build_report(str(output), [out.result for out in outputs], stats)

    [rows] = _docs_read_by_libreoffice(soffice, [Path(report.path)], tmp_path)

    expected = [
        [item, doc.id, doc.url, doc.title, doc.text]
        for item in items
        for doc in parse_text(read_input(corpus, item).text).documents
    ]
    assert len(rows) == len(expected) == report.documents
    mismatched = [want[:2] for got, want in zip(rows, expected, strict=True) if got != want]
    assert mismatched == [], f"{len(mismatched)} of {len(expected)} documents differ in LibreOffice"
    with (tmp_path / "csv" / "report-summary.csv").open(encoding="utf-8", newline="") as file:
        assert [row[:2] for row in csv.reader(file)][1:] == [[item, "done"] for item in items]


def test_libreoffice_reads_hostile_documents_exactly(soffice: str, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    for item, docs in HOSTILE.items():
        path = inputs / item
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(DOC.format(*doc) for doc in docs), encoding="utf-8")
    results = [parse_item(str(inputs), item, str(tmp_path / "out")).result for item in HOSTILE]
    report = build_report(str(tmp_path / "out"), results, [None] * len(results))

    artifacts = [artifact_path(tmp_path / "out", item) for item in HOSTILE]  # distinct file names
    [rows, *artifact_rows] = _docs_read_by_libreoffice(soffice, [Path(report.path), *artifacts], tmp_path)

    assert rows == [[item, *doc] for item, docs in HOSTILE.items() for doc in docs]
    # Each artifact: the line of each document's opening tag (three lines a document) for the source.
    artifacts_read = dict(zip(HOSTILE, artifact_rows, strict=True))
    assert artifacts_read == {
        item: [[str(1 + 3 * n), *doc] for n, doc in enumerate(docs)] for item, docs in HOSTILE.items()
    }
