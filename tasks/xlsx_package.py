"""The parts of a minimal xlsx package around its worksheets: content types, relationships,
the workbook (sheet names in order) and one default style.

Excel, LibreOffice and python-calamine need nothing more to open a workbook of plain cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import quoteattr

from poolflow.tasks.sheet_xml import PACKAGE_RELATIONSHIP_NS, RELATIONSHIP_NS, SPREADSHEET_NS

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
