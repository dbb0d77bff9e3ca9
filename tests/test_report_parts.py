"""Report parts: an item's docs rows deflated ahead, readable anywhere in a sheet, and known stale."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from python_calamine import CalamineWorkbook

from poolflow.tasks.atomic import OutputError
from poolflow.tasks.document_rows import DocumentRows
from poolflow.tasks.report_parts import PART_FORMAT, ReportPart, is_current, read_part, write_part
from poolflow.tasks.sheet_xml import SHEET_END, render_row, sheet_start
from poolflow.tasks.xlsx import Row, split_cell
from poolflow.tasks.xlsx_package import package_parts, sheet_member
from poolflow.tasks.zip_stream import ZipStreamWriter, inflate_piece

MADE_FROM = {"format": "poolflow-item/1", "sha256": "ab" * 32, "parser": "exact", "encoding": "utf-8"}
ROWS: list[Row] = [
    ["AB/x&y_x0042_<z>", "1", "u1", "=1+1", "_x0041_ _x005F_x0041_ & <b> \x01\x1f\t\r\n"],
    ["AB/x&y_x0042_<z>", "", "", " padded ", ""],  # empty cells inside and at the end
    ["AB/x&y_x0042_<z>", "3", "u3", "", *split_cell("😀" * 20_000 + "가" * 40_000)],
    ["AB/x&y_x0042_<z>", 7, 2.5, "<r>rich?</r>"],
]


def _write(path: Path, item: str, rows: list[Row]) -> ReportPart:
    """The part of an item whose documents' rows are ``rows`` (first cell: the item itself)."""
    documents = DocumentRows(item, rows)
    return write_part(path, item, MADE_FROM, documents.part(), documents.count, documents.columns)


def _sheet_rows(first: list[Row], pieces_between: int, part_path: Path) -> list[list[object]]:
    """calamine's rows of a one-sheet workbook: numbered rows ``first``, then the part's rows
    ``pieces_between + 1`` times, one copy after another."""
    part = read_part(part_path)
    assert part is not None
    body = [render_row(n, row).encode() for n, row in enumerate(first, start=1)]
    copies = [part.deflated() for _ in range(pieces_between + 1)]
    buffer = io.BytesIO()
    with ZipStreamWriter(buffer) as writer:
        for name, content in package_parts(["docs"]):
            writer.write_member(name, [content])
        writer.write_member(sheet_member(0), [sheet_start(8, 20), *body, *copies, SHEET_END])
        writer.finish()
    path = part_path.with_suffix(".xlsx")
    path.write_bytes(buffer.getvalue())
    return CalamineWorkbook.from_path(str(path)).get_sheet_by_name("docs").to_python()


def test_a_part_round_trips_its_rows_wherever_it_is_placed(tmp_path: Path) -> None:
    path = tmp_path / "parts" / "AB" / "x.docs.part"
    written = _write(path, "AB/x&y_x0042_<z>", ROWS)

    assert read_part(path) == written
    assert (written.rows, written.columns, written.made_from) == (4, 7, MADE_FROM)
    xml = inflate_piece(written.deflated())  # checked against the header's CRC-32 and length
    assert b' r="' not in xml and xml.count(b"<row>") == 4 and b"<f>" not in xml
    header: list[Row] = [["source", "id", "url", "title", "text", "text_2", "text_3"]]
    rows = _sheet_rows(header, 1, path)  # after one numbered row, and again after itself
    width = len(rows[0])
    expected = [[*row, *[""] * (width - len(row))] for row in ROWS]
    assert rows == [header[0] + [""] * (width - 7), *expected, *expected]
    assert [isinstance(cell, str) for cell in rows[4][:3]] == [True, False, False]  # numbers stay numbers


def test_a_part_that_is_not_whole_or_not_ours_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "wiki_00.docs.part"
    assert read_part(path) is None  # missing
    written = _write(path, "wiki_00", ROWS)
    data = path.read_bytes()
    assert is_current(path, "wiki_00", MADE_FROM)
    assert not is_current(path, "wiki_01", MADE_FROM)
    assert not is_current(path, "wiki_00", {**MADE_FROM, "sha256": "cd" * 32})
    assert not is_current(path, "wiki_00", {**MADE_FROM, "format": "poolflow-item/2"})

    path.write_bytes(data[:-1])  # cut short
    assert read_part(path) is None
    path.write_bytes(data + b"\0")  # something appended
    assert read_part(path) is None
    header = json.loads(data[: written.offset])
    for changed in ({**header, "format": "poolflow-report-part/0"}, {**header, "rows": "4"}, [header]):
        path.write_bytes(json.dumps(changed).encode() + b"\n" + data[written.offset :])
        assert read_part(path) is None
    path.write_bytes(b"PK\x03\x04 an xlsx, say" + bytes(range(256)) * 300)
    assert read_part(path) is None
    assert header["format"] == PART_FORMAT


def test_an_item_without_documents_has_an_empty_part(tmp_path: Path) -> None:
    written = _write(tmp_path / "empty.docs.part", "empty", [])
    assert (written.rows, written.columns, written.size) == (0, 0, 0)
    assert inflate_piece(written.deflated()) == b""


def test_an_unwritable_part_names_its_path(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where the folder should be")
    with pytest.raises(OutputError, match=r"blocked/AA/wiki_00\.docs\.part"):
        _write(tmp_path / "blocked" / "AA" / "wiki_00.docs.part", "AA/wiki_00", ROWS)
