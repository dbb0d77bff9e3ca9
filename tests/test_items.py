"""Per-item artifacts: mirrored paths, atomic writes, resume, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import poolflow.tasks.items
from poolflow.tasks.items import (
    ItemError,
    ItemStatus,
    artifact_folder,
    artifact_path,
    parse_item,
    read_meta,
    report_part_path,
)
from poolflow.tasks.parse import ParseResult, parse_exact
from poolflow.tasks.report_parts import read_part, write_part
from poolflow.tasks.stats import document_stats
from poolflow.tasks.xlsx import join_cells, read_sheet
from poolflow.tasks.zip_stream import deflate_piece

DOC = '<doc id="{0}" url="u{0}" title="t{0}">\n{1}</doc>\n'


def make_input(root: Path, item: str, bodies: list[str]) -> Path:
    path = root / item
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(DOC.format(i, b) for i, b in enumerate(bodies)), encoding="utf-8")
    return path


def test_artifact_mirrors_input_path_and_keeps_text(tmp_path: Path) -> None:
    bodies = ["short\n", "=SUM(A1)\n", "x" * 70_000 + "\n", "ctl\x01\n"]
    make_input(tmp_path / "in", "AA/wiki_00", bodies)
    result = parse_item(str(tmp_path / "in"), "AA/wiki_00", str(tmp_path / "out")).result
    artifact = tmp_path / "out" / "items" / "AA" / "wiki_00.xlsx"
    assert artifact.exists()
    assert (result.status, result.documents, result.text_columns) == ("done", 4, 3)
    assert result.seconds > 0  # the time the item took is measured and carried in the copied result
    rows = list(read_sheet(artifact, "docs"))
    assert [join_cells(row[4:]) for row in rows] == bodies
    assert [row[1] for row in rows] == ["0", "1", "2", "3"]


def test_rerun_skips_current_artifact_and_redoes_changed_input(tmp_path: Path) -> None:
    source = make_input(tmp_path / "in", "wiki_00", ["a\n"])
    args = (str(tmp_path / "in"), "wiki_00", str(tmp_path / "out"))
    assert parse_item(*args).result.status is ItemStatus.DONE
    artifact = artifact_path(tmp_path / "out", "wiki_00")
    before = artifact.stat().st_mtime_ns
    assert parse_item(*args).result.status is ItemStatus.SKIPPED
    assert artifact.stat().st_mtime_ns == before
    source.write_text(DOC.format(1, "changed\n"), encoding="utf-8")
    assert parse_item(*args).result.status is ItemStatus.DONE
    assert read_meta(artifact)["documents"] == "1"
    assert join_cells(next(read_sheet(artifact, "docs"))[4:]) == "changed\n"
    part = read_part(report_part_path(tmp_path / "out", "wiki_00"))  # rewritten with its artifact
    assert part is not None and (part.rows, part.made_from["sha256"]) == (1, read_meta(artifact)["sha256"])


def test_other_parser_invalidates_artifact(tmp_path: Path) -> None:
    make_input(tmp_path / "in", "wiki_00", ["a\n"])
    args = (str(tmp_path / "in"), "wiki_00", str(tmp_path / "out"))
    parse_item(*args)
    assert parse_item(*args, parser="html5lib").result.status is ItemStatus.DONE


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\xff\xfe\xfa not utf-8", "not valid utf-8"),
        (b"\x00\x01binary", "binary file"),
    ],
)
def test_unreadable_input_names_file_and_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad").write_bytes(content)
    with pytest.raises(ItemError, match=reason) as error:
        parse_item(str(tmp_path / "in"), "bad", str(tmp_path / "out"))
    assert str(error.value).startswith("bad: ")
    assert not (tmp_path / "out" / "items" / "bad.xlsx").exists()
    assert not report_part_path(tmp_path / "out", "bad").exists()  # a failed item has no report part


def test_declared_encoding_reads_cp949(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "kr").write_bytes(DOC.format(1, "한국어\n").encode("cp949"))
    result = parse_item(str(tmp_path / "in"), "kr", str(tmp_path / "out"), encoding="cp949").result
    assert result.documents == 1


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    with pytest.raises(ItemError, match="gone: file vanished"):
        parse_item(str(tmp_path / "in"), "gone", str(tmp_path / "out"))


def test_document_wider_than_an_excel_row_fails_its_file_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("poolflow.tasks.items.MAX_TEXT_CELLS", 2)  # the real limit needs a 536 MB document
    make_input(tmp_path / "in", "wide", ["x" * 70_000 + "\n"])
    with pytest.raises(ItemError, match=r"wide: document id=0 \(line 1\) has 70,001 characters"):
        parse_item(str(tmp_path / "in"), "wide", str(tmp_path / "out"))


def test_item_names_cannot_escape_the_output(tmp_path: Path) -> None:
    with pytest.raises(ItemError, match="outside the output"):
        artifact_path(tmp_path / "out", "../../etc/passwd")
    with pytest.raises(ItemError, match="outside the output"):
        artifact_path(tmp_path / "out", "/etc/passwd")


def test_the_ui_link_of_a_written_artifact_opens_it_also_through_a_symlinked_output(tmp_path: Path) -> None:
    from urllib.parse import unquote, urlparse

    from poolflow.flows.artifacts import _artifact_uri

    make_input(tmp_path / "in", "AA/위키 00", ["x\n"])
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    item, output = "AA/위키 00", tmp_path / "link"
    parse_item(str(tmp_path / "in"), item, str(output))
    written = (tmp_path / "real" / "items" / "AA" / "위키 00.xlsx").resolve()
    assert artifact_folder(output).joined(item) == artifact_path(output, item)
    assert Path(unquote(urlparse(_artifact_uri(str(output))(item)).path)) == written
    assert written.is_file()


def test_noncharacters_are_reported_not_silently_changed(tmp_path: Path) -> None:
    make_input(tmp_path / "in", "odd", ["fine\n", "has \ufffe inside\n"])
    result = parse_item(str(tmp_path / "in"), "odd", str(tmp_path / "out")).result
    assert result.warnings == 1
    warnings = [row[0] for row in read_sheet(artifact_path(tmp_path / "out", "odd"), "warnings")]
    assert len(warnings) == 1
    assert warnings[0].startswith("line 4: document id=1 contains Unicode non-characters U+FFFE/U+FFFF")


def test_one_parse_gives_the_artifact_and_the_stats_also_when_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = ["one\ntwo\n", "x" * 40_000 + "\n", ""]
    source = make_input(tmp_path / "in", "AA/wiki_00", bodies)
    expected = document_stats(parse_exact(source.read_text(encoding="utf-8")).documents)
    assert expected == (["0", "1", "2"], [8, 40_001, 0], [2, 1, 0], [1, 2, 1])
    parses: list[str] = []
    real_parse = poolflow.tasks.items.parse_text

    def counting_parse(text: str, parser: str = "exact") -> ParseResult:
        parses.append(parser)
        return real_parse(text, parser)

    monkeypatch.setattr(poolflow.tasks.items, "parse_text", counting_parse)
    args = (str(tmp_path / "in"), "AA/wiki_00", str(tmp_path / "out"))
    done = parse_item(*args)
    skipped = parse_item(*args)
    assert (done.result.status, skipped.result.status) == ("done", "skipped")
    assert done.stats == skipped.stats == expected
    assert parses == ["exact", "exact"]  # one parse per call, skipped or not


def test_a_missing_or_stale_report_part_is_rewritten_when_the_artifact_is_current(tmp_path: Path) -> None:
    make_input(tmp_path / "in", "AA/wiki_00", ["one\n", "_x0041_\x01\n", "x" * 40_000 + "\n"])
    args = (str(tmp_path / "in"), "AA/wiki_00", str(tmp_path / "out"))
    assert parse_item(*args).result.status is ItemStatus.DONE
    artifact = artifact_path(tmp_path / "out", "AA/wiki_00")
    part = report_part_path(tmp_path / "out", "AA/wiki_00")
    assert part == tmp_path / "out" / ".poolflow" / "report-parts" / "AA" / "wiki_00.docs.part"
    written = part.read_bytes()
    header = read_part(part)
    assert header is not None and (header.item, header.rows, header.columns) == ("AA/wiki_00", 3, 6)
    assert header.made_from == {
        key: read_meta(artifact)[key] for key in ("format", "sha256", "parser", "encoding")
    }
    artifact_version = artifact.stat().st_mtime_ns

    # A current part is left as it is.
    part_version = part.stat().st_ino, part.stat().st_mtime_ns
    assert parse_item(*args).result.status is ItemStatus.SKIPPED
    assert (part.stat().st_ino, part.stat().st_mtime_ns) == part_version

    stale_parts = {
        "missing (an output from before report parts)": None,
        "made from another input": lambda: write_part(
            part, "AA/wiki_00", {**header.made_from, "sha256": "0" * 64}, deflate_piece([]), 0, 0
        ),
        "cut short": lambda: part.write_bytes(written[:-10]),
    }
    for why, make_stale in stale_parts.items():
        part.unlink()
        if make_stale is not None:
            make_stale()
        assert parse_item(*args).result.status is ItemStatus.SKIPPED, why
        assert part.read_bytes() == written, why  # the same rows, from the same parse
        assert artifact.stat().st_mtime_ns == artifact_version, why
