"""Each non-public part of xlsxwriter named in ``poolflow.tasks.xlsxwriter_compat`` still works
as poolflow relies on it; a failure names the installed and the pinned xlsxwriter."""

from __future__ import annotations

import inspect
import zipfile
from pathlib import Path

import xlsxwriter
from xlsxwriter.worksheet import Worksheet

from poolflow.tasks.xlsx import AtomicWorkbook, read_sheet, write_sheet


def _pinned_version(package: str) -> str:
    """The version of ``package`` that constraints.txt pins."""
    for line in (Path(__file__).resolve().parents[1] / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            return version.strip()
    return "(not pinned)"


WHY = (
    f"poolflow.tasks.xlsxwriter_compat relies on it in xlsxwriter {_pinned_version('xlsxwriter')} "
    f"(pinned in constraints.txt); xlsxwriter {xlsxwriter.__version__} is installed. Re-read "
    "xlsxwriter's Worksheet._write_cell and fix the compat module"
)


def _sheet_xml(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        return archive.read("xl/worksheets/sheet1.xml").decode()


def _upstream_sheet_xml(tmp_path: Path, text: str) -> str:
    """The sheet XML xlsxwriter's own constant-memory worksheet writes for ``text``."""
    path = tmp_path / "upstream.xlsx"
    with xlsxwriter.Workbook(path, {"constant_memory": True}) as workbook:
        workbook.add_worksheet().write_string(0, 0, text)
    return _sheet_xml(path)


def test_strings_still_pass_through_the_escape_method_exact_worksheet_replaces(tmp_path: Path) -> None:
    assert callable(getattr(Worksheet, "_escape_control_characters", None)), (
        f"Worksheet._escape_control_characters is gone. {WHY}"
    )
    text = "a\x01b _x0041_ _x005F_x0041_"
    # xlsxwriter's own escape misses the overlapping second sequence of "_x005F_x0041_".
    assert Worksheet._escape_control_characters(text) == "a_x0001_b _x005F_x0041_ _x005F_x005F_x0041_", (
        f"xlsxwriter's own escaping changed; the replacement may be unneeded or wrong now. {WHY}"
    )
    path = tmp_path / "t.xlsx"
    with AtomicWorkbook(path) as workbook:
        write_sheet(workbook, "s", ["text"], [[text]])
    assert "<t>a_x0001_b _x005F_x0041_ _x005F_x005F_x005F_x0041_</t>" in _sheet_xml(path), (
        f"a string written through a real workbook was not escaped by the replacement. {WHY}"
    )
    assert list(read_sheet(path, "s")) == [[text]]


def test_a_rich_text_shaped_string_still_goes_to_the_method_exact_worksheet_replaces(tmp_path: Path) -> None:
    for name in ("_xml_rich_inline_string", "_xml_inline_string"):
        assert callable(getattr(Worksheet, name, None)), f"Worksheet.{name} is gone. {WHY}"
    assert list(inspect.signature(Worksheet._xml_inline_string).parameters) == [
        "self",
        "string",
        "preserve",
        "attributes",
    ], f"Worksheet._xml_inline_string takes other arguments now. {WHY}"
    title = "<r>x</r>"
    assert "<is><r>x</r></is>" in _upstream_sheet_xml(tmp_path, title), (
        f"xlsxwriter no longer writes such a string as raw rich text; the replacement may be unneeded. {WHY}"
    )
    path = tmp_path / "t.xlsx"
    with AtomicWorkbook(path) as workbook:
        write_sheet(workbook, "s", ["title"], [[title]])
    assert "&lt;r&gt;x&lt;/r&gt;" in _sheet_xml(path), f"the replacement was not called. {WHY}"
    assert list(read_sheet(path, "s")) == [[title]]
