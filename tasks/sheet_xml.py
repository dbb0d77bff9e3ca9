"""Worksheet XML as bytes: rows rendered from values, numbered or placeable anywhere.

The report's rows and the items' artifacts are written as SpreadsheetML text directly, not
through a workbook library. A rendered cell follows the same rules as ``poolflow.tasks.xlsx``
(``_xHHHH_`` escapes, strings always inline strings, never formulas), so the two writers give
equal values.

A numbered row (``render_row``) has ``r`` attributes and leaves empty strings out. A
placeable row (``render_placeable_cells`` in ``<row>`` tags) has none: SpreadsheetML puts a
row without ``r`` after the row before it and a cell without ``r`` after the cell before it,
so a block of such rows means the same at any row of any sheet. Its empty cells are written
(``<c/>``) so that later cells keep their columns; trailing ones are left out.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

from poolflow.tasks.xlsx import Row
from poolflow.tasks.xlsx_escape import escape_for_xlsx

SPREADSHEET_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
RELATIONSHIP_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PACKAGE_RELATIONSHIP_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
ROWS_PER_PIECE = 4096  # rendered rows per piece handed to the compressor
# A placeable row's start tag: "<" only opens markup in sheet XML (text holds "&lt;").
_PLACEABLE_ROW_START = b"<row>"
_EMPTY_CELL = "<c/>"


def column_letters(index: int) -> str:
    """``A``, ``B``, … ``AA``: the letters of the 0-based column ``index``."""
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(65 + remainder) + letters
    return letters


def escape_text(value: str) -> str:
    """A string as the content of a ``<t>`` element: ``_xHHHH_`` escapes, then XML escapes."""
    text = escape_for_xlsx(value)
    if "&" in text or "<" in text or ">" in text:
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text


_LETTERS = [column_letters(i) for i in range(64)]  # the columns of every rendered table, and more


@functools.lru_cache(maxsize=1024)  # a table repeats its source names row after row
def _escaped_cached(value: str) -> str:
    return escape_text(value)


def _string_cell(reference: str, text: str) -> str:
    """An inline-string cell at ``reference`` (`` r="B2"`` or nothing) holding escaped ``text``."""
    return f'<c{reference} t="inlineStr"><is><t xml:space="preserve">{text}</t></is></c>'


def _number_cell(reference: str, value: int | float) -> str:
    """A number cell, as xlsxwriter writes numbers but integers exactly."""
    number = value if isinstance(value, int) else f"{value:.16G}"
    return f"<c{reference}><v>{number}</v></c>"


def render_row(row_number: int, values: Row) -> str:
    """One ``<row>`` numbered ``row_number`` (strings inline, numbers as numbers, empty strings left out)."""
    cells = [f'<row r="{row_number}">']
    for col, value in enumerate(values):
        letters = _LETTERS[col] if col < len(_LETTERS) else column_letters(col)
        if isinstance(value, str):
            if value:  # letters and digits need no escape
                text = value if value.isalnum() else _escaped_cached(value)
                cells.append(_string_cell(f' r="{letters}{row_number}"', text))
        else:
            cells.append(_number_cell(f' r="{letters}{row_number}"', value))
    cells.append("</row>")
    return "".join(cells)


def render_placeable_cells(values: Row) -> str:
    """The cells of a placeable row, without its ``<row>`` tags; trailing empty strings left out.

    Cells rendered once can end rows that start differently (an item's artifact and its report
    part give each document a different first cell).
    """
    end = len(values)
    while end and values[end - 1] == "":
        end -= 1
    cells = []
    for value in values[:end]:
        if isinstance(value, str):
            cells.append(_string_cell("", escape_text(value)) if value else _EMPTY_CELL)
        else:
            cells.append(_number_cell("", value))
    return "".join(cells)


def render_rows(rows: Iterable[Row], first_row: int) -> Iterator[bytes]:
    """``rows`` as sheet XML numbered from ``first_row``, in pieces of ``ROWS_PER_PIECE`` rows."""
    batch: list[str] = []
    for number, values in enumerate(rows, start=first_row):
        batch.append(render_row(number, values))
        if len(batch) == ROWS_PER_PIECE:
            yield "".join(batch).encode("utf-8")
            batch.clear()
    if batch:
        yield "".join(batch).encode("utf-8")


def sheet_start(columns: int, rows: int) -> bytes:
    """The XML before a sheet's rows; ``rows`` counts the header too."""
    last = f"{column_letters(max(columns, 1) - 1)}{max(rows, 1)}"
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<worksheet xmlns="{SPREADSHEET_NS}" xmlns:r="{RELATIONSHIP_NS}">'
        f'<dimension ref="A1:{last}"/><sheetData>'
    ).encode()


SHEET_END = b"</sheetData></worksheet>"


def split_placeable_rows(block: bytes, rows: int) -> tuple[bytes, bytes]:
    """A block of placeable rows cut after its first ``rows`` rows."""
    position = -1
    for _ in range(rows + 1):
        position = block.index(_PLACEABLE_ROW_START, position + 1)
    return block[:position], block[position:]
