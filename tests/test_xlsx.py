"""xlsx round trips: long text, formulas-looking strings, control characters, sheet spill."""

from __future__ import annotations

import errno
import gc
import io
import random
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from poolflow.tasks.xlsx import (
    EXCEL_CELL_LIMIT,
    AtomicWorkbook,
    _SinkAfterFailure,
    join_cells,
    read_sheet,
    sheet_names,
    split_cell,
    utf16_length,
    write_sheet,
    write_table,
)

TRICKY = [
    "=1+1",
    '=HYPERLINK("http://x")',
    "+82 10",
    "-5",
    "@sum",
    "_x0041_",
    "_x005F_x0041_",
    "a\x01b\x1fc\x7f\x00",
    "\r\nline\r",
    "  leading and trailing  ",
    "007",
    "1e5",
    "😀 emoji 한국어",
    "tab\there",
    "&amp; <b>",
]


def roundtrip(tmp_path: Path, values: list[str], max_rows: int = 1_048_576) -> list[str]:
    path = tmp_path / "t.xlsx"
    rows = [[i, *split_cell(v)] for i, v in enumerate(values)]
    width = max(len(r) for r in rows)
    with AtomicWorkbook(path) as workbook:
        write_sheet(workbook, "docs", ["n"] + ["text"] * (width - 1), rows, max_rows)
    return [join_cells(row[1:]) for row in read_sheet(path, "docs")]


def test_tricky_strings_round_trip_exactly(tmp_path: Path) -> None:
    values = [*TRICKY, "<r><t>rich-looking</t></r>", "x" * (EXCEL_CELL_LIMIT + 5)]
    assert roundtrip(tmp_path, values, 3) == values


def test_strings_are_never_written_as_formulas(tmp_path: Path) -> None:
    roundtrip(tmp_path, TRICKY)
    with zipfile.ZipFile(tmp_path / "t.xlsx") as archive:
        sheet_xml = archive.read("xl/worksheets/sheet1.xml").decode()
    assert "<f>" not in sheet_xml and "<f " not in sheet_xml


@pytest.mark.parametrize(
    "text",
    [
        "x" * EXCEL_CELL_LIMIT,
        "x" * (EXCEL_CELL_LIMIT + 1),
        "x" * (EXCEL_CELL_LIMIT - 1) + "😀",  # the emoji would straddle the boundary
        "😀" * 40_000,
        "가" * 100_211,
    ],
)
def test_split_cell_respects_excels_utf16_limit_and_rejoins(tmp_path: Path, text: str) -> None:
    pieces = split_cell(text)
    assert "".join(pieces) == text
    assert all(utf16_length(piece) <= EXCEL_CELL_LIMIT for piece in pieces)
    assert len(pieces) == -(-utf16_length(text) // EXCEL_CELL_LIMIT) or "😀" in text
    assert roundtrip(tmp_path, [text]) == [text]


def test_rows_spill_into_numbered_sheets(tmp_path: Path) -> None:
    values = [f"v{i}" for i in range(10)]
    assert roundtrip(tmp_path, values, max_rows=4) == values
    assert sheet_names(tmp_path / "t.xlsx") == ["docs", "docs_2", "docs_3", "docs_4"]


def test_failed_write_leaves_no_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "out" / "a.xlsx"
    with pytest.raises(RuntimeError), AtomicWorkbook(path) as workbook:
        write_sheet(workbook, "docs", ["a"], [["x"]])
        raise RuntimeError("crash mid-write")
    assert list((tmp_path / "out").iterdir()) == []


class _FullAfter:
    """A file whose writes fail with "No space left on device" past ``limit`` bytes."""

    def __init__(self, file: Any, limit: int) -> None:
        self.file, self.limit, self.written = file, limit, 0

    def write(self, data: bytes) -> int:
        if self.written + len(data) > self.limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.written += len(data)
        return int(self.file.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def _zip_members(target: Any) -> None:
    members = random.Random(7)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for index in range(12):
            archive.writestr(f"xl/part{index}.xml", members.randbytes(1500))


def test_a_disk_filling_up_anywhere_in_the_zip_is_one_error_and_no_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Whatever byte the disk fills at, members or directory, the write fails once and the
    zip left behind never prints "Exception ignored" when it is collected."""
    whole = io.BytesIO()
    _zip_members(whole)
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    # Each round's collection need only look at what the round made: the rest of the test
    # session's heap is set aside (a full collection of it took most of this test's time).
    gc.freeze()
    request.addfinalizer(gc.unfreeze)
    for limit in range(0, len(whole.getvalue()), 61):
        temp = tmp_path / f"{limit}.zip"
        sink = _SinkAfterFailure(_FullAfter(temp.open("wb"), limit))
        with pytest.raises(OSError):
            _zip_members(sink)
        gc.collect()
        assert unraisable == [], f"disk full at byte {limit}: {unraisable[0].exc_value!r}"
        sink.close()


def test_write_table_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "table.xlsx"
    write_table(path, "s", ["a"], [["old"]])
    write_table(path, "s", ["a"], [["new"]])
    assert list(read_sheet(path, "s")) == [["new"]]
    assert [p.name for p in tmp_path.iterdir()] == ["table.xlsx"]
