"""Worksheet XML as bytes: rows rendered from values, and artifact rows copied with new numbers.

The report's rows are written as SpreadsheetML text directly, not through a workbook
library. A rendered cell follows the same rules as ``tasks.xlsx`` (``_xHHHH_`` escapes,
strings always inline strings, never formulas; empty strings leave the cell out), so the
two writers give equal values. Copied rows keep every cell's XML exactly as the artifact
has it, text already escaped; only the row number changes and the first cell (the line in
the item) becomes the source item's name.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from xml.etree import ElementTree

from tasks.xlsx import Row, escape_for_xlsx, spill_sheet_name

SPREADSHEET_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
RELATIONSHIP_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PACKAGE_RELATIONSHIP_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
READ_SIZE = 1 << 20  # bytes of artifact XML per block: big enough to deflate well, small in memory
ROWS_PER_PIECE = 4096  # rendered rows per piece handed to the compressor

# In sheet XML "<" only opens markup (text holds "&lt;"), so these cannot match inside a value.
# A row opens with the artifact's line-number cell; every other cell keeps its column letters.
_ROW_OR_CELL = re.compile(rb'<row r="\d+"[^>]*><c r="A\d+"><v>[^<]*</v></c>|<c r="([A-Z]{1,3})\d+"')
_ROW_START = b"<row "


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


def _cell(reference: str, value: str | int | float) -> str:
    if isinstance(value, str):
        return (
            f'<c r="{reference}" t="inlineStr"><is><t xml:space="preserve">{escape_text(value)}</t></is></c>'
        )
    return f'<c r="{reference}"><v>{value:.16G}</v></c>'


def render_row(row_number: int, values: Row) -> str:
    """One ``<row>`` of ``values`` (strings inline, numbers as numbers, empty strings left out)."""
    cells = "".join(
        _cell(f"{column_letters(col)}{row_number}", value)
        for col, value in enumerate(values)
        if not (isinstance(value, str) and not value)
    )
    return f'<row r="{row_number}">{cells}</row>'


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


def count_rows(block: bytes) -> int:
    """How many whole ``<row>`` elements ``block`` holds."""
    return block.count(_ROW_START)


def split_rows(block: bytes, rows: int) -> tuple[bytes, bytes]:
    """``block`` cut after its first ``rows`` rows."""
    position = -1
    for _ in range(rows + 1):
        position = block.index(_ROW_START, position + 1)
    return block[:position], block[position:]


def renumber_rows(block: bytes, first_row: int, source: str) -> bytes:
    """Artifact ``block`` with rows numbered from ``first_row`` and column A set to ``source``."""
    row = first_row - 1
    source_xml = escape_text(source).encode("utf-8")

    def replace(match: re.Match[bytes]) -> bytes:
        nonlocal row
        column = match[1]
        if column is None:
            row += 1
            return b'<row r="%d"><c r="A%d" t="inlineStr"><is><t xml:space="preserve">%s</t></is></c>' % (
                row,
                row,
                source_xml,
            )
        return b'<c r="%s%d"' % (column, row)

    renumbered = _ROW_OR_CELL.sub(replace, block)
    if row - first_row + 1 != count_rows(block):
        raise ValueError(f"{source}: artifact rows are not in the layout poolflow writes")
    return renumbered


def _sheet_members(archive: zipfile.ZipFile) -> dict[str, str]:
    """Sheet name → member path, from the workbook and its relationships."""
    workbook = ElementTree.fromstring(archive.read("xl/workbook.xml"))
    relations = ElementTree.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    targets = {
        rel.get("Id"): rel.get("Target", "")
        for rel in relations.iter(f"{{{PACKAGE_RELATIONSHIP_NS}}}Relationship")
    }
    members = {}
    for sheet in workbook.iter(f"{{{SPREADSHEET_NS}}}sheet"):
        target = targets[sheet.get(f"{{{RELATIONSHIP_NS}}}id")]
        members[sheet.get("name", "")] = (
            target.lstrip("/") if target.startswith("/") else str(PurePosixPath("xl") / target)
        )
    return members


def _member_rows(archive: zipfile.ZipFile, member: str) -> Iterator[bytes]:
    """The rows of one sheet member after its header row, in blocks of whole rows."""
    pending = b""
    started = False
    with archive.open(member) as stream:
        while chunk := stream.read(READ_SIZE):
            pending += chunk
            if not started:
                data_start = pending.find(b"<sheetData>")
                header_end = pending.find(b"</row>", data_start)
                if data_start < 0 or header_end < 0:
                    continue
                pending = pending[header_end + len(b"</row>") :]
                started = True
            last = pending.rfind(b"</row>")
            if last >= 0:
                cut = last + len(b"</row>")
                yield pending[:cut]
                pending = pending[cut:]
    end = pending.find(b"</sheetData>")
    if not started or end < 0 or pending[:end].strip():
        raise ValueError(f"{member}: sheet XML ends in an unexpected way")


def artifact_rows(path: Path, base_name: str) -> Iterator[bytes]:
    """The data rows of ``base_name`` and its spill sheets in the xlsx at ``path``, as raw XML blocks."""
    with zipfile.ZipFile(path) as archive:
        members = _sheet_members(archive)
        index = 0
        while (name := spill_sheet_name(base_name, index)) in members:
            yield from _member_rows(archive, members[name])
            index += 1
