"""Every input is accounted for: links followed, loops named once, unreadable paths reported."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from helpers import run_without_file_permission_override

from poolflow.tasks.inputs import Unreadable, list_inputs, pattern_regex

DOC = '<doc id="{0}" url="https://ko.wikipedia.org/wiki?curid={0}" title="t{0}">\nt{0}\n{1}</doc>\n'
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("**/wiki_*", "wiki_00", True),
        ("**/wiki_*", "AA/wiki_00", True),
        ("**/wiki_*", "AA/BB/wiki_00", True),
        ("**/wiki_*", "AA/xwiki_00", False),
        ("**/wiki_*", "AA/wiki_00/x", False),
        ("AA/wiki_0?", "AA/wiki_07", True),
        ("AA/wiki_0?", "AB/wiki_07", False),
        ("*/wiki_[!1]*", "AA/wiki_01", True),
        ("*/wiki_[!0]*", "AA/wiki_01", False),
        ("wiki.*", "wikiX00", False),
    ],
)
def test_patterns_are_globs_on_the_relative_path(pattern: str, path: str, matches: bool) -> None:
    assert bool(pattern_regex(pattern).match(path)) is matches


def _corpus(root: Path, name: str, files: int) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    for n in range(files):
        (directory / f"wiki_{n:02d}").write_text(DOC.format(n, "x\n"), encoding="utf-8")
    return directory


def test_symlinked_directories_are_followed_and_loops_named_once(tmp_path: Path) -> None:
    source = tmp_path / "in"
    _corpus(source, "AA", 2)
    elsewhere = _corpus(tmp_path / "elsewhere", "AA", 3)
    (source / "AB").symlink_to(elsewhere)
    (source / "AA" / "up").symlink_to(source)  # a loop: leads back to the input itself
    (source / "AA" / "wiki_09").symlink_to(tmp_path / "missing")

    listing = list_inputs(source, "**/wiki_*")

    assert listing.items == ["AA/wiki_00", "AA/wiki_01", "AB/wiki_00", "AB/wiki_01", "AB/wiki_02"]
    assert listing.loops == ["AA/up"]
    assert listing.unreadable == [Unreadable("AA/wiki_09", f"dangling symbolic link to {tmp_path}/missing")]


def test_an_input_whose_only_directory_is_a_link_is_not_empty(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    (source / "AA").symlink_to(_corpus(tmp_path / "real", "AA", 2))
    assert list_inputs(source, "**/wiki_*").items == ["AA/wiki_00", "AA/wiki_01"]


def test_an_unreadable_directory_is_reported_not_skipped() -> None:
    shared = Path(tempfile.mkdtemp(prefix="poolflow-unreadable-"))
    try:
        _corpus(shared, "AA", 1)
        locked = _corpus(shared, "AB", 1)
        locked.chmod(0)
        shared.chmod(0o755)
        script = (
            "from pathlib import Path\nfrom poolflow.tasks.inputs import list_inputs\n"
            f"listing = list_inputs(Path({str(shared)!r}), '**/wiki_*')\n"
            "print(listing.items, [(u.path, u.reason) for u in listing.unreadable])\n"
        )
        result = run_without_file_permission_override(script, REPO)
        assert result.stdout.strip() == (
            "['AA/wiki_00'] [('AB', 'cannot list directory: Permission denied')]"
        ), result.stderr
    finally:
        (shared / "AB").chmod(0o755)
        shutil.rmtree(shared)


def test_the_flow_reports_unreadable_paths_as_failed_rows(tmp_path: Path, prefect_api: str) -> None:
    from python_calamine import CalamineWorkbook

    from poolflow.flows.wiki_report import wiki_report

    source = tmp_path / "in"
    _corpus(source, "AA", 2)
    (source / "AB").symlink_to(_corpus(tmp_path / "elsewhere", "AA", 1))
    (source / "AA" / "wiki_09").symlink_to(tmp_path / "missing")

    state = wiki_report(str(source), str(tmp_path / "out"), processes=2, return_state=True)

    assert state.is_failed() and (state.message or "").startswith(
        "1 of 4 items failed; see the summary sheet of "
    )
    workbook = CalamineWorkbook.from_path(str(tmp_path / "out" / "report.xlsx"))
    docs = workbook.get_sheet_by_name("docs").to_python()[1:]
    assert [row[0] for row in docs] == ["AA/wiki_00", "AA/wiki_01", "AB/wiki_00"]
    summary = {row[0]: row for row in workbook.get_sheet_by_name("summary").to_python()[1:]}
    assert summary["AA/wiki_09"][1] == "failed"
    assert summary["AA/wiki_09"][6] == f"dangling symbolic link to {tmp_path}/missing"
