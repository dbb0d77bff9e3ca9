"""Worksheet XML as bytes: rows rendered from values, and artifact rows copied with new numbers.

The report's rows are written as SpreadsheetML text directly, not through a workbook
library. A rendered cell follows the same rules as ``tasks.xlsx`` (``_xHHHH_`` escapes,
strings always inline strings, never formulas; empty strings leave the cell out), so the
two writers give equal values. Copied rows keep every cell's XML exactly as the artifact
has it, text already escaped; only the row number changes and the first cell (the line in
the item) becomes the source item's name.

A placeable row (``render_placeable_row``) has no ``r`` attributes: SpreadsheetML puts a row
without ``r`` after the row before it and a cell without ``r`` after the cell before it, so a
block of such rows means the same at any row of any sheet. Its empty cells are written
(``<c/>``) so that later cells keep their columns; trailing ones are left out.
"""

from __future__ import annotations

import functools
import os
import re
import struct
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from xml.etree import ElementTree

from isal import isal_zlib

from tasks.xlsx import Row, escape_for_xlsx, spill_sheet_name

SPREADSHEET_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
RELATIONSHIP_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PACKAGE_RELATIONSHIP_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
READ_SIZE = 1 << 20  # bytes of artifact XML per block: big enough to deflate well, small in memory
ROWS_PER_PIECE = 4096  # rendered rows per piece handed to the compressor

# In sheet XML "<" only opens markup (text holds "&lt;"), so these cannot match inside a value.
# A row opens with the artifact's line-number cell (group 1); every other cell keeps its letters.
_ROW_OR_CELL = re.compile(rb'<row\b[^>]*>(<c r="A\d+"><v>[^<]*</v></c>)?|<c r="([A-Z]{1,3})\d+"')
_ROW_START = b"<row "
_EMPTY_CELL = "<c/>"
# The shortest row an artifact holds: a block this many times shorter has fewer rows.
SHORTEST_ROW = len(b'<row r="2"><c r="A2"><v>1</v></c></row>')


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


def render_placeable_row(values: Row) -> str:
    """One ``<row>`` without ``r`` attributes: it means the same wherever it is placed (module doc)."""
    end = len(values)
    while end and values[end - 1] == "":
        end -= 1
    cells = ["<row>"]
    for value in values[:end]:
        if isinstance(value, str):
            cells.append(_string_cell("", escape_text(value)) if value else _EMPTY_CELL)
        else:
            cells.append(_number_cell("", value))
    cells.append("</row>")
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


def count_rows(block: bytes) -> int:
    """How many whole ``<row>`` elements ``block`` holds."""
    return block.count(_ROW_START)


def split_rows(block: bytes, rows: int) -> tuple[bytes, bytes]:
    """``block`` cut after its first ``rows`` rows."""
    position = -1
    for _ in range(rows + 1):
        position = block.index(_ROW_START, position + 1)
    return block[:position], block[position:]


def renumber_rows(block: bytes, first_row: int, source: str) -> tuple[bytes, int]:
    """Artifact ``block`` with rows numbered from ``first_row`` and column A set to ``source``;
    also how many rows it holds."""
    row = first_row - 1
    source_xml = escape_text(source).encode("utf-8")

    def replace(match: re.Match[bytes]) -> bytes:
        nonlocal row
        column = match[2]
        if column is None:
            if match[1] is None:
                raise ValueError(f"{source}: an artifact row does not start with its line number")
            row += 1
            return b'<row r="%d"><c r="A%d" t="inlineStr"><is><t xml:space="preserve">%s</t></is></c>' % (
                row,
                row,
                source_xml,
            )
        return b'<c r="%s%d"' % (column, row)

    renumbered = _ROW_OR_CELL.sub(replace, block)
    return renumbered, row - first_row + 1


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


def _inflated(path: Path, archive: zipfile.ZipFile, member: str) -> Iterator[bytes]:
    """A member's content in pieces of at most ``READ_SIZE`` bytes, checked against its CRC-32.

    A deflated member is inflated with ISA-L, about twice as fast as zipfile's zlib.
    """
    info = archive.getinfo(member)
    if info.compress_type != zipfile.ZIP_DEFLATED:
        with archive.open(info) as stream:
            yield from iter(lambda: stream.read(READ_SIZE), b"")
        return
    with path.open("rb") as file:
        file.seek(info.header_offset)
        name_length, extra_length = struct.unpack("<26xHH", file.read(30))
        file.seek(name_length + extra_length, os.SEEK_CUR)
        inflater = isal_zlib.decompressobj(-15)
        remaining, crc = info.compress_size, 0
        while remaining > 0 and (data := file.read(min(READ_SIZE, remaining))):
            remaining -= len(data)
            while data:
                piece = inflater.decompress(data, READ_SIZE)
                crc = isal_zlib.crc32(piece, crc)
                yield piece
                data = inflater.unconsumed_tail
        piece = inflater.flush()
        crc = isal_zlib.crc32(piece, crc)
        yield piece
    if remaining or crc != info.CRC:
        raise ValueError(f"{path}: {member} is truncated or corrupt")


def _member_rows(path: Path, archive: zipfile.ZipFile, member: str) -> Iterator[bytes]:
    """The rows of one sheet member after its header row, in blocks of whole rows."""
    pending = b""
    started = False
    for chunk in _inflated(path, archive, member):
        if not started:
            pending += chunk
            data_start = pending.find(b"<sheetData>")
            header_end = pending.find(b"</row>", data_start)
            if data_start < 0 or header_end < 0:
                continue
            chunk, pending, started = pending[header_end + len(b"</row>") :], b"", True
        last = chunk.rfind(b"</row>")
        if last < 0:
            pending += chunk
            continue
        cut = last + len(b"</row>")
        yield pending + chunk[:cut]
        pending = chunk[cut:]
    end = pending.find(b"</sheetData>")
    if not started or end < 0 or pending[:end].strip():
        raise ValueError(f"{path}: {member} ends in an unexpected way")


def artifact_rows(path: Path, base_name: str) -> Iterator[bytes]:
    """The data rows of ``base_name`` and its spill sheets in the xlsx at ``path``, as raw XML blocks."""
    with zipfile.ZipFile(path) as archive:
        members = _sheet_members(archive)
        index = 0
        while (name := spill_sheet_name(base_name, index)) in members:
            yield from _member_rows(path, archive, members[name])
            index += 1
