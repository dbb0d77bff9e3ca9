"""Assemble ``report.xlsx`` from the items' report parts at the speed of copying them.

Sheets: ``docs`` (every document, text split over ``text``, ``text_2``, …), ``stats``
(the gathered tuple-task columns), ``summary`` (one row per item, failures with reasons).

Each item task already wrote its ``docs`` rows as deflated sheet XML that fits at any row
(``poolflow.tasks.report_parts``), so ``docs`` is a header row and the parts' bytes copied as they
are into the zip member (``poolflow.tasks.zip_stream``); nothing is rendered, inflated or deflated per
document here. Only a part cut by a sheet's end (``max_rows``) is inflated, split between two
rows and deflated again. ``stats`` and ``summary`` are rendered from values and deflated in
parallel threads. Memory holds a few pieces, whatever the number of documents.
``poolflow.tasks.report_reference`` writes the same cells the slow way, from the artifacts, for the
tests to compare against.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from poolflow.tasks import storage
from poolflow.tasks.items import (
    DOC_COLUMNS,
    ItemResult,
    ItemStatus,
    report_part_folder,
    report_part_keys,
    text_columns_header,
)
from poolflow.tasks.report_parts import ReportPart, read_part
from poolflow.tasks.sheet_xml import split_placeable_rows
from poolflow.tasks.stats import STATS_COLUMNS, DocumentStats
from poolflow.tasks.xlsx import EXCEL_MAX_ROWS, Row
from poolflow.tasks.xlsx_package import Table, rendered, write_package
from poolflow.tasks.zip_stream import DeflatedPiece, inflate_piece

REPORT_NAME = "report.xlsx"
SUMMARY_COLUMNS = ["file", "status", "documents", "characters", "warnings", "seconds", "error"]


@dataclass(frozen=True)
class ReportResult:
    """Where the report went and what it holds."""

    path: str
    documents: int
    items: int
    failed: int


def docs_header(items: Sequence[ItemResult]) -> list[str]:
    """The ``docs`` header: ``source`` for ``line``, then id, url, title and text as wide as the widest."""
    widest = max((r.text_columns for r in items if r.status is not ItemStatus.FAILED), default=1)
    return ["source", *DOC_COLUMNS[1:], *text_columns_header(widest)]


def stats_rows(items: Sequence[ItemResult], stats: Sequence[DocumentStats | None]) -> Iterator[Row]:
    """The ``stats`` rows: each item's per-document columns side by side, after its name."""
    for result, columns in zip(items, stats, strict=True):
        if columns is None:
            continue
        for values in zip(*columns, strict=True):
            yield [result.item, *values]


def summary_row(r: ItemResult) -> list[str | int | float]:
    """One item's row of the ``summary`` sheet, in ``SUMMARY_COLUMNS`` order."""
    return [r.item, r.status.value, r.documents, r.characters, r.warnings, r.seconds, r.error]


def _report_parts(root: Path, items: Sequence[ItemResult], columns: int) -> list[ReportPart]:
    """The report part of each item that did not fail, checked against the item's result
    (its name was checked when its task wrote the part)."""
    parts = []
    folder = report_part_folder(root)
    for result in items:
        if result.status is ItemStatus.FAILED:
            continue
        path = folder.joined(result.item)
        part = read_part(path)
        if part is None or part.item != result.item:
            raise ValueError(
                f"{result.item}: its report part {path} is missing or not whole; rerun to rewrite it"
            )
        if part.rows != result.documents:
            says = f"{part.rows} documents, not the {result.documents} its result says"
            raise ValueError(f"{result.item}: its report part holds {says}")
        if part.columns > columns:
            raise ValueError(f"{result.item}: its report part has rows wider than the docs header")
        parts.append(part)
    return parts


class _PartRows:
    """The parts' rows handed out sheet by sheet: a part that fits is copied deflated as it is; a
    part cut by a sheet's end is inflated, and its rows after the cut wait for the next sheet."""

    def __init__(self, parts: Sequence[ReportPart]) -> None:
        self._parts = iter([part for part in parts if part.rows])
        self._held = b""  # placeable rows of a cut part, not handed out yet
        self._held_rows = 0

    def take(self, rows: int) -> Iterator[bytes | DeflatedPiece]:
        """The next ``rows`` rows (the results were checked to hold as many as the parts)."""
        while rows > 0:
            if not self._held_rows:
                part = next(self._parts)
                if part.rows <= rows:
                    yield part.deflated()
                    rows -= part.rows
                    continue
                self._held, self._held_rows = inflate_piece(part.deflated()), part.rows
            count = min(rows, self._held_rows)
            if count < self._held_rows:
                block, self._held = split_placeable_rows(self._held, count)
            else:
                block, self._held = self._held, b""
            yield block
            self._held_rows -= count
            rows -= count


def build_report(
    output_dir: str,
    items: Sequence[ItemResult],
    stats: Sequence[DocumentStats | None],
    max_rows: int = EXCEL_MAX_ROWS,
) -> ReportResult:
    """Write ``<output_dir>/report.xlsx`` from the report parts of ``items`` and their ``stats``."""
    if storage.is_remote(output_dir):
        return _build_report_remote(output_dir, items, stats, max_rows)
    root = Path(storage.local_path(output_dir))
    documents = sum(r.documents for r in items if r.status is not ItemStatus.FAILED)
    header = docs_header(items)
    parts = _PartRows(_report_parts(root, items, len(header)))
    tables = [
        Table("docs", header, documents, parts.take),
        Table(
            "stats",
            ["source", *STATS_COLUMNS],
            sum(len(columns[0]) for columns in stats if columns is not None),
            rendered(stats_rows(items, stats)),
        ),
        Table("summary", SUMMARY_COLUMNS, len(items), rendered(summary_row(r) for r in items)),
    ]
    path = root / REPORT_NAME
    write_package(path, tables, max_rows)
    failed = sum(1 for r in items if r.status is ItemStatus.FAILED)
    return ReportResult(path=str(path), documents=documents, items=len(items), failed=failed)


def _build_report_remote(
    output_dir: str, items: Sequence[ItemResult], stats: Sequence[DocumentStats | None], max_rows: int
) -> ReportResult:
    """``build_report`` for a URL: built in a stage holding the items' report parts, then uploaded."""
    local = storage.run_staged(
        output_dir, report_part_keys(items), lambda stage: build_report(stage, items, stats, max_rows)
    )
    return replace(local, path=storage.join(output_dir, REPORT_NAME))
