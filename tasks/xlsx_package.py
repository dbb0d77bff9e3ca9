"""A minimal xlsx package written as a stream: its tables' sheets, spilled by row capacity, and
the parts around them (content types, relationships, the workbook with its sheet names in
order, one default style).

Excel, LibreOffice and python-calamine need nothing more to open a workbook of plain cells.
A table hands out its rows sheet by sheet as rendered XML or as pieces deflated ahead
(``poolflow.tasks.zip_stream``), so nothing holds a whole sheet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from xml.sax.saxutils import quoteattr

from poolflow.tasks.atomic import written_atomically
from poolflow.tasks.sheet_xml import (
    PACKAGE_RELATIONSHIP_NS,
    RELATIONSHIP_NS,
    SHEET_END,
    SPREADSHEET_NS,
    render_row,
    render_rows,
    sheet_start,
)
from poolflow.tasks.xlsx import EXCEL_MAX_ROWS, Row, spill_sheet_name
from poolflow.tasks.zip_stream import DeflatedPiece, ZipStreamWriter

FIRST_DATA_ROW = 2  # row 1 is the header

_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_DOCUMENT_TYPE = f"{RELATIONSHIP_NS}/officeDocument"
_WORKSHEET_TYPE = f"{RELATIONSHIP_NS}/worksheet"
_STYLES_TYPE = f"{RELATIONSHIP_NS}/styles"
_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml"


def sheet_member(index: int) -> str:
    """The member path of the 0-based ``index``-th worksheet."""
    return f"xl/worksheets/sheet{index + 1}.xml"


def _content_types(sheets: int) -> str:
    overrides = "".join(
        f'<Override PartName="/{sheet_member(i)}" ContentType="{_CONTENT_TYPE}.worksheet+xml"/>'
        for i in range(sheets)
    )
    return (
        f'{_XML_DECLARATION}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/xl/workbook.xml" ContentType="{_CONTENT_TYPE}.sheet.main+xml"/>'
        f'<Override PartName="/xl/styles.xml" ContentType="{_CONTENT_TYPE}.styles+xml"/>'
        f"{overrides}</Types>"
    )


def _relationships(targets: Sequence[tuple[str, str]]) -> str:
    entries = "".join(
        f'<Relationship Id="rId{i}" Type="{kind}" Target="{target}"/>'
        for i, (kind, target) in enumerate(targets, start=1)
    )
    return f'{_XML_DECLARATION}<Relationships xmlns="{PACKAGE_RELATIONSHIP_NS}">{entries}</Relationships>'


def _workbook(names: Sequence[str]) -> str:
    sheets = "".join(
        f'<sheet name={quoteattr(name)} sheetId="{i}" r:id="rId{i}"/>'
        for i, name in enumerate(names, start=1)
    )
    return (
        f'{_XML_DECLARATION}<workbook xmlns="{SPREADSHEET_NS}" xmlns:r="{RELATIONSHIP_NS}">'
        f"<sheets>{sheets}</sheets></workbook>"
    )


_STYLES = (
    f'{_XML_DECLARATION}<styleSheet xmlns="{SPREADSHEET_NS}">'
    '<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>'
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)


def package_parts(sheet_names: Sequence[str]) -> list[tuple[str, bytes]]:
    """Every member of the package except the worksheets, as (path, content)."""
    sheet_targets = [(_WORKSHEET_TYPE, f"worksheets/sheet{i + 1}.xml") for i in range(len(sheet_names))]
    parts = {
        "[Content_Types].xml": _content_types(len(sheet_names)),
        "_rels/.rels": _relationships([(_DOCUMENT_TYPE, "xl/workbook.xml")]),
        "xl/workbook.xml": _workbook(sheet_names),
        "xl/_rels/workbook.xml.rels": _relationships([*sheet_targets, (_STYLES_TYPE, "styles.xml")]),
        "xl/styles.xml": _STYLES,
    }
    return [(name, text.encode("utf-8")) for name, text in parts.items()]


# A table hands out its next ``n`` data rows, as XML (numbered from FIRST_DATA_ROW if numbered)
# or as pieces deflated ahead.
TakeRows = Callable[[int], Iterator[bytes | DeflatedPiece]]


@dataclass(frozen=True)
class Table:
    """One logical sheet: spilled over as many sheets as its rows need."""

    name: str
    header: Sequence[str]
    rows: int
    take: TakeRows


def rendered(rows: Iterable[Row]) -> TakeRows:
    """``take`` for rows held as values: each sheet's share rendered as numbered rows."""
    values = iter(rows)
    return lambda n: render_rows(islice(values, n), FIRST_DATA_ROW)


def _sheet_sizes(table: Table, max_rows: int) -> list[int]:
    """Data rows on each of the table's sheets (at least one sheet, perhaps header only)."""
    capacity = max_rows - 1
    full, rest = divmod(table.rows, capacity)
    return [capacity] * full + ([rest] if rest or not full else [])


def write_package(
    path: Path, tables: Sequence[Table], max_rows: int = EXCEL_MAX_ROWS, threads: int | None = None
) -> None:
    """Stream the workbook of ``tables`` to a temp file beside ``path`` and rename it (with a new
    file's mode; an OS error names ``path``, see ``poolflow.tasks.atomic``); ``threads`` deflate."""
    sheets = [
        (table, spill_sheet_name(table.name, i), n)
        for table in tables
        for i, n in enumerate(_sheet_sizes(table, max_rows))
    ]
    with written_atomically(path) as file, ZipStreamWriter(file, threads) as writer:
        for name, content in package_parts([name for _, name, _ in sheets]):
            writer.write_member(name, [content])
        for index, (table, _, rows) in enumerate(sheets):
            start = sheet_start(len(table.header), rows + 1) + render_row(1, table.header).encode()
            writer.write_member(sheet_member(index), chain([start], table.take(rows), [SHEET_END]))
        writer.finish()
