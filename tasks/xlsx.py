"""Lossless xlsx tables: long text split across cells, sheets spilled by row capacity.

Writing uses xlsxwriter in constant-memory mode (rows stream to disk); reading uses
python-calamine. Every string is written with ``write_string``, so nothing becomes a
formula, number or URL. The rules that keep values exact:

- Excel holds at most 32,767 UTF-16 code units in a cell; longer text continues in the
  next column (``text``, ``text_2``, …) and joining the pieces restores it.
- A sheet holds 1,048,576 rows; later rows spill to ``docs_2``, ``docs_3``, ….
- Control characters are stored as ``_xHHHH_`` escapes and a literal ``_xHHHH_`` is
  escaped again (``poolflow.tasks.xlsx_escape``); ``ExactWorksheet``
  (``poolflow.tasks.xlsxwriter_compat``) makes xlsxwriter write them so.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import xlsxwriter
from python_calamine import CalamineWorkbook
from xlsxwriter.exceptions import FileCreateError
from xlsxwriter.worksheet import Worksheet

from poolflow.tasks.atomic import AtomicTarget
from poolflow.tasks.xlsxwriter_compat import ExactWorksheet

EXCEL_CELL_LIMIT = 32_767  # UTF-16 code units per cell
EXCEL_MAX_ROWS = 1_048_576  # rows per sheet, header included
EXCEL_MAX_COLUMNS = 16_384  # columns per sheet
WORKBOOK_OPTIONS = {
    "constant_memory": True,
    "strings_to_formulas": False,
    "strings_to_numbers": False,
    "strings_to_urls": False,
}

Cell = str | int | float
Row = Sequence[Cell]


def utf16_length(text: str) -> int:
    """Length as Excel counts it: characters outside the BMP take two units."""
    return len(text.encode("utf-16-le")) // 2


def split_cell(text: str, limit: int = EXCEL_CELL_LIMIT) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` UTF-16 units, never inside a character."""
    if len(text) * 2 <= limit or utf16_length(text) <= limit:
        return [text]
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + limit, len(text))
        while (surplus := utf16_length(text[start:end]) - limit) > 0:
            # Dropping n characters frees between n and 2n units (astral ones take two).
            end -= (surplus + 1) // 2
        pieces.append(text[start:end])
        start = end
    return pieces


def spill_sheet_name(base: str, index: int) -> str:
    """``docs``, ``docs_2``, ``docs_3``…: the name of the ``index``-th (0-based) sheet."""
    return base if index == 0 else f"{base}_{index + 1}"


def _write_row(sheet: Worksheet, row_index: int, row: Row) -> None:
    for col, value in enumerate(row):
        if isinstance(value, str):
            if value:
                sheet.write_string(row_index, col, value)
        else:
            sheet.write_number(row_index, col, value)


def write_sheet(
    workbook: xlsxwriter.Workbook,
    base_name: str,
    header: Sequence[str],
    rows: Iterable[Row],
    max_rows: int = EXCEL_MAX_ROWS,
) -> int:
    """Stream ``rows`` under ``header`` into ``base_name`` and its spill sheets; return the row count."""
    sheet_index = 0
    sheet = workbook.add_worksheet(base_name, worksheet_class=ExactWorksheet)
    _write_row(sheet, 0, header)
    row_in_sheet = 1
    count = 0
    for row in rows:
        if row_in_sheet == max_rows:
            sheet_index += 1
            sheet = workbook.add_worksheet(
                spill_sheet_name(base_name, sheet_index), worksheet_class=ExactWorksheet
            )
            _write_row(sheet, 0, header)
            row_in_sheet = 1
        _write_row(sheet, row_in_sheet, row)
        row_in_sheet += 1
        count += 1
    return count


class _SinkAfterFailure(io.RawIOBase):
    """The temp file as xlsxwriter's zip target; after an OS error, writes go nowhere.

    xlsxwriter leaves its ``ZipFile`` open when a write fails (disk full); the zip's
    ``__del__`` then writes its directory again and prints a traceback per file. Here the
    first error propagates and later writes are dropped (the temp file is deleted anyway),
    while the position still moves as if they were written: the zip computes its directory's
    size and offset from it, and a position that jumps back makes those negative.
    """

    def __init__(self, file: BinaryIO) -> None:
        super().__init__()
        self._file = file  # closed by close()
        self._position = 0  # where the zip's next byte goes, as the zip sees it
        self.failed = False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = len(memoryview(data))
        if not self.failed:
            try:
                self._file.write(data)
            except OSError:
                self.failed = True
                raise
        self._position += size
        return size

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if not self.failed:
            self._position = self._file.seek(offset, whence)
        elif whence == os.SEEK_SET:
            self._position = offset
        elif whence == os.SEEK_CUR:
            self._position += offset
        return self._position

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        if not self.failed:
            try:
                self._file.flush()
            except OSError:
                self.failed = True
                raise

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()  # flushes: an error here is the write's own error
        finally:
            with contextlib.suppress(OSError):
                self._file.close()  # after a failure: buffered data, already reported


class AtomicWorkbook:
    """An xlsxwriter workbook written to a temp file and renamed into place on success.

    A crash or kill leaves either the previous complete file or none, never half of one; the
    file gets the mode the umask gives a new file (see ``poolflow.tasks.atomic``). An OS error while
    creating, writing or renaming it is an ``OutputError`` naming ``path``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._target = AtomicTarget(path)
        self._sink = _SinkAfterFailure(self._target.open())
        self.workbook = xlsxwriter.Workbook(self._sink, WORKBOOK_OPTIONS)

    def __enter__(self) -> xlsxwriter.Workbook:
        return self.workbook

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            if exc is None:
                self.workbook.close()
                self._sink.close()
                self._target.commit()
        except (OSError, FileCreateError) as error:
            raise self._target.failed(error) from error
        finally:
            self._sink.failed = True  # whatever xlsxwriter left open writes nothing more
            self._sink.close()
            self._target.discard()
        if isinstance(exc, OSError):
            raise self._target.failed(exc) from exc


def sheet_names(path: Path) -> list[str]:
    """The sheet names of an xlsx file, in order."""
    return list(CalamineWorkbook.from_path(str(path)).sheet_names)


def read_sheet(path: Path, base_name: str) -> Iterator[list[Any]]:
    """Yield the data rows (header skipped) of ``base_name`` and its spill sheets, in order."""
    workbook = CalamineWorkbook.from_path(str(path))
    names = set(workbook.sheet_names)
    index = 0
    while (name := spill_sheet_name(base_name, index)) in names:
        rows = workbook.get_sheet_by_name(name).iter_rows()
        next(rows, None)
        yield from rows
        index += 1


def read_header(path: Path, base_name: str) -> list[str]:
    """The header row of ``base_name``."""
    workbook = CalamineWorkbook.from_path(str(path))
    first = next(workbook.get_sheet_by_name(base_name).iter_rows(), [])
    return [str(value) for value in first]


def join_cells(cells: Iterable[Any]) -> str:
    """Rejoin a text split by ``split_cell`` (empty trailing cells read back as '')."""
    return "".join(cell for cell in cells if isinstance(cell, str))


def write_table(path: Path, sheet: str, header: Sequence[str], rows: Iterable[Row]) -> int:
    """Write one table (spilling as needed) to a new xlsx file atomically; return its row count."""
    with AtomicWorkbook(path) as workbook:
        return write_sheet(workbook, sheet, header, rows)
