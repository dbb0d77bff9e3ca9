"""Assemble ``report.xlsx`` from the per-item artifacts, streaming one item at a time.

Sheets: ``docs`` (every document, text split over ``text``, ``text_2``, …), ``stats``
(the gathered tuple-task columns), ``summary`` (one row per item, failures with reasons).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tasks import storage
from tasks.items import DOC_COLUMNS, ItemResult, artifact_keys, artifact_path, text_columns_header
from tasks.stats import STATS_COLUMNS, DocumentStats
from tasks.xlsx import EXCEL_MAX_ROWS, AtomicWorkbook, Row, read_sheet, write_sheet

REPORT_NAME = "report.xlsx"
SUMMARY_COLUMNS = ["file", "status", "documents", "characters", "warnings", "seconds", "error"]


@dataclass(frozen=True)
class ReportResult:
    """Where the report went and what it holds."""

    path: str
    documents: int
    items: int
    failed: int


def _doc_rows(output_dir: Path, items: Sequence[ItemResult]) -> Iterator[Row]:
    for result in items:
        if result.status == "failed":
            continue
        # Artifact columns: line, id, url, title, text…; the report swaps line for the source.
        for row in read_sheet(artifact_path(output_dir, result.item), "docs"):
            yield [result.item, *row[1:]]


def _stats_rows(items: Sequence[ItemResult], stats: Sequence[DocumentStats | None]) -> Iterator[Row]:
    for result, columns in zip(items, stats, strict=True):
        if columns is None:
            continue
        for values in zip(*columns, strict=True):
            yield [result.item, *values]


def summary_row(r: ItemResult) -> list[str | int | float]:
    """One item's row of the ``summary`` sheet, in ``SUMMARY_COLUMNS`` order."""
    return [r.item, r.status.value, r.documents, r.characters, r.warnings, r.seconds, r.error]


def build_report(
    output_dir: str,
    items: Sequence[ItemResult],
    stats: Sequence[DocumentStats | None],
    max_rows: int = EXCEL_MAX_ROWS,
) -> ReportResult:
    """Write ``<output_dir>/report.xlsx`` from the artifacts of ``items`` and their ``stats``."""
    if storage.is_remote(output_dir):
        return _build_report_remote(output_dir, items, stats, max_rows)
    root = Path(storage.local_path(output_dir))
    widest = max((r.text_columns for r in items if r.status != "failed"), default=1)
    docs_header = ["source", *DOC_COLUMNS[1:], *text_columns_header(widest)]
    path = root / REPORT_NAME
    with AtomicWorkbook(path) as workbook:
        documents = write_sheet(workbook, "docs", docs_header, _doc_rows(root, items), max_rows)
        write_sheet(workbook, "stats", ["source", *STATS_COLUMNS], _stats_rows(items, stats), max_rows)
        write_sheet(workbook, "summary", SUMMARY_COLUMNS, (summary_row(r) for r in items), max_rows)
    failed = sum(1 for r in items if r.status == "failed")
    return ReportResult(path=str(path), documents=documents, items=len(items), failed=failed)


def _build_report_remote(
    output_dir: str, items: Sequence[ItemResult], stats: Sequence[DocumentStats | None], max_rows: int
) -> ReportResult:
    """``build_report`` for a URL: built in a stage holding the items' artifacts, then uploaded."""
    local = storage.run_staged(
        output_dir, artifact_keys(items), lambda stage: build_report(stage, items, stats, max_rows)
    )
    return replace(local, path=storage.join(output_dir, REPORT_NAME))
