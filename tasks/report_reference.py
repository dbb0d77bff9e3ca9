"""The report written the plain way, kept as the reference that tests hold ``build_report`` to.

Every artifact cell is decoded with python-calamine and encoded again with xlsxwriter: slow,
but each value passes through two independent libraries, so equal values from this and the
fast writer show that the fast writer's copied XML means what the artifacts mean.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from poolflow.tasks.items import ItemResult, ItemStatus, artifact_path
from poolflow.tasks.report import (
    REPORT_NAME,
    SUMMARY_COLUMNS,
    ReportResult,
    docs_header,
    stats_rows,
    summary_row,
)
from poolflow.tasks.stats import STATS_COLUMNS, DocumentStats
from poolflow.tasks.xlsx import EXCEL_MAX_ROWS, AtomicWorkbook, Row, read_sheet, write_sheet


def _doc_rows(output_dir: Path, items: Sequence[ItemResult]) -> Iterator[Row]:
    for result in items:
        if result.status is ItemStatus.FAILED:
            continue
        # Artifact columns: line, id, url, title, text…; the report swaps line for the source.
        for row in read_sheet(artifact_path(output_dir, result.item), "docs"):
            yield [result.item, *row[1:]]


def build_report_reference(
    output_dir: Path,
    items: Sequence[ItemResult],
    stats: Sequence[DocumentStats | None],
    max_rows: int = EXCEL_MAX_ROWS,
) -> ReportResult:
    """Write ``<output_dir>/report.xlsx`` (a local directory) cell by cell through xlsxwriter."""
    path = output_dir / REPORT_NAME
    with AtomicWorkbook(path) as workbook:
        documents = write_sheet(workbook, "docs", docs_header(items), _doc_rows(output_dir, items), max_rows)
        write_sheet(workbook, "stats", ["source", *STATS_COLUMNS], stats_rows(items, stats), max_rows)
        write_sheet(workbook, "summary", SUMMARY_COLUMNS, (summary_row(r) for r in items), max_rows)
    failed = sum(1 for r in items if r.status is ItemStatus.FAILED)
    return ReportResult(path=str(path), documents=documents, items=len(items), failed=failed)
