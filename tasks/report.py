"""Assemble ``report.xlsx`` from the per-item artifacts at the speed of copying them.

Sheets: ``docs`` (every document, text split over ``text``, ``text_2``, …), ``stats``
(the gathered tuple-task columns), ``summary`` (one row per item, failures with reasons).

The artifacts already hold every document as escaped sheet XML, so ``docs`` is their rows
copied as bytes with new row numbers and the source item in column A (``tasks.sheet_xml``);
no cell is decoded. ``stats`` and ``summary`` are rendered from values. The package is
streamed to disk with the sheets deflated in parallel threads (``tasks.zip_stream``); memory
holds a few blocks of rows, whatever the number of documents. ``tasks.report_reference``
writes the same cells the slow way, for the tests to compare against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import chain, islice
from pathlib import Path

from tasks import storage
from tasks.atomic import AtomicTarget
from tasks.items import DOC_COLUMNS, ItemResult, ItemStatus, artifact_keys, artifact_path, text_columns_header
from tasks.sheet_xml import (
    SHEET_END,
    SHORTEST_ROW,
    artifact_rows,
    count_rows,
    render_row,
    render_rows,
    renumber_rows,
    sheet_start,
    split_rows,
)
from tasks.stats import STATS_COLUMNS, DocumentStats
from tasks.xlsx import EXCEL_MAX_ROWS, Row, spill_sheet_name
from tasks.xlsx_package import package_parts, sheet_member
from tasks.zip_stream import ZipStreamWriter

REPORT_NAME = "report.xlsx"
SUMMARY_COLUMNS = ["file", "status", "documents", "characters", "warnings", "seconds", "error"]
FIRST_DATA_ROW = 2  # row 1 is the header


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


# A table hands out the XML of its next ``n`` data rows, numbered from FIRST_DATA_ROW.
TakeRows = Callable[[int], Iterator[bytes]]


@dataclass(frozen=True)
class _Table:
    """One logical sheet: spilled over as many sheets as its rows need."""

    name: str
    header: list[str]
    rows: int
    take: TakeRows


class _CopiedRows:
    """The artifacts' ``docs`` rows, handed out sheet by sheet; a block cut by a sheet's end waits."""

    def __init__(self, output_dir: Path, items: Sequence[ItemResult]) -> None:
        self._blocks = (
            (result.item, block)
            for result in items
            if result.status is not ItemStatus.FAILED
            for block in artifact_rows(artifact_path(output_dir, result.item), "docs")
        )
        self._held: tuple[str, bytes] | None = None

    def take(self, rows: int) -> Iterator[bytes]:
        """The next ``rows`` rows, renumbered from ``FIRST_DATA_ROW`` for a new sheet."""
        row = FIRST_DATA_ROW
        while rows > 0:
            held = self._held or next(self._blocks, None)
            if held is None:
                raise ValueError("the artifacts hold fewer documents than their results say")
            source, block = held
            self._held = None
            # Counting rows costs a pass over the block: only near a sheet's end is it needed.
            if len(block) >= rows * SHORTEST_ROW and count_rows(block) > rows:
                block, rest = split_rows(block, rows)
                self._held = (source, rest)
            renumbered, count = renumber_rows(block, row, source)
            yield renumbered
            row += count
            rows -= count

    def check_exhausted(self) -> None:
        """Fail unless every artifact row was handed out (the results' counts were right)."""
        if self._held is not None or next(self._blocks, None) is not None:
            raise ValueError("the artifacts hold more documents than their results say")


def _rendered(rows: Iterator[Row]) -> TakeRows:
    return lambda n: render_rows(islice(rows, n), FIRST_DATA_ROW)


def _sheet_sizes(table: _Table, max_rows: int) -> list[int]:
    """Data rows on each of the table's sheets (at least one sheet, perhaps header only)."""
    capacity = max_rows - 1
    full, rest = divmod(table.rows, capacity)
    return [capacity] * full + ([rest] if rest or not full else [])


def _write_package(path: Path, tables: Sequence[_Table], max_rows: int, verify: Callable[[], None]) -> None:
    """Stream the workbook of ``tables`` to a temp file beside ``path``; if ``verify`` passes, rename it
    (with a new file's mode; an OS error names ``path``, see ``tasks.atomic``)."""
    sheets = [
        (table, spill_sheet_name(table.name, i), n)
        for table in tables
        for i, n in enumerate(_sheet_sizes(table, max_rows))
    ]
    with AtomicTarget(path) as temp, temp.open("wb") as file:
        with ZipStreamWriter(file) as writer:
            for name, content in package_parts([name for _, name, _ in sheets]):
                writer.write_member(name, [content])
            for index, (table, _, rows) in enumerate(sheets):
                start = sheet_start(len(table.header), rows + 1) + render_row(1, table.header).encode()
                writer.write_member(sheet_member(index), chain([start], table.take(rows), [SHEET_END]))
            writer.finish()
        verify()


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
    documents = sum(r.documents for r in items if r.status is not ItemStatus.FAILED)
    copied = _CopiedRows(root, items)
    tables = [
        _Table("docs", docs_header(items), documents, copied.take),
        _Table(
            "stats",
            ["source", *STATS_COLUMNS],
            sum(len(columns[0]) for columns in stats if columns is not None),
            _rendered(stats_rows(items, stats)),
        ),
        _Table("summary", SUMMARY_COLUMNS, len(items), _rendered(summary_row(r) for r in items)),
    ]
    path = root / REPORT_NAME
    _write_package(path, tables, max_rows, copied.check_exhausted)
    failed = sum(1 for r in items if r.status is ItemStatus.FAILED)
    return ReportResult(path=str(path), documents=documents, items=len(items), failed=failed)


def _build_report_remote(
    output_dir: str, items: Sequence[ItemResult], stats: Sequence[DocumentStats | None], max_rows: int
) -> ReportResult:
    """``build_report`` for a URL: built in a stage holding the items' artifacts, then uploaded."""
    local = storage.run_staged(
        output_dir, artifact_keys(items), lambda stage: build_report(stage, items, stats, max_rows)
    )
    return replace(local, path=storage.join(output_dir, REPORT_NAME))
