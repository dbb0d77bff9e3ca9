"""The report streams every artifact into docs/stats/summary without losing a character."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from poolflow.tasks.items import ItemResult, ItemStatus, parse_item, report_part_path
from poolflow.tasks.report import build_report
from poolflow.tasks.report_parts import read_part
from poolflow.tasks.stats import DocumentStats
from poolflow.tasks.xlsx import join_cells, read_header, read_sheet, sheet_names

DOC = '<doc id="{0}" url="u{0}" title="t{0}">\n{1}</doc>\n'


def test_report_holds_every_document_stats_and_failures(tmp_path: Path) -> None:
    bodies = {"AA/wiki_00": ["a\n", "=1+1\n"], "AA/wiki_01": ["😀" * 20_000 + "\n", "_x0041_\x02\n"]}
    for item, texts in bodies.items():
        path = tmp_path / "in" / item
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(DOC.format(i, t) for i, t in enumerate(texts)), encoding="utf-8")
    inp, out = str(tmp_path / "in"), str(tmp_path / "out")
    outputs = [parse_item(inp, item, out) for item in bodies]
    results = [output.result for output in outputs]
    stats: list[DocumentStats | None] = [output.stats for output in outputs]
    results.append(ItemResult(item="AA/wiki_02", status=ItemStatus.FAILED, error="binary file"))
    stats.append(None)

    report = build_report(out, results, stats, max_rows=3)

    path = Path(report.path)
    assert (report.documents, report.items, report.failed) == (4, 3, 1)
    assert sheet_names(path) == ["docs", "docs_2", "stats", "stats_2", "summary", "summary_2"]
    assert read_header(path, "docs") == ["source", "id", "url", "title", "text", "text_2"]
    rows = list(read_sheet(path, "docs"))
    expected = [(item, text) for item, texts in bodies.items() for text in texts]
    assert [(row[0], join_cells(row[4:])) for row in rows] == expected
    stat_rows = list(read_sheet(path, "stats"))
    assert [row[2] for row in stat_rows] == [len(text) for _, text in expected]
    summary = {row[0]: row for row in read_sheet(path, "summary")}
    # The summary shows each status's plain value, the same strings as before it was an enum.
    assert [summary[item][1] for item in sorted(summary)] == ["done", "done", "failed"]
    assert "binary file" in summary["AA/wiki_02"][6]
    assert summary["AA/wiki_01"][2] == 2


def test_results_that_disagree_with_their_report_parts_fail_and_leave_the_old_report(tmp_path: Path) -> None:
    path = tmp_path / "in" / "AA" / "wiki_00"
    path.parent.mkdir(parents=True)
    path.write_text(DOC.format(1, "a\n") + DOC.format(2, "b" * 40_000), encoding="utf-8")
    inp, out = str(tmp_path / "in"), str(tmp_path / "out")
    result = parse_item(inp, "AA/wiki_00", out).result
    assert result.text_columns == 2
    good = build_report(out, [result], [None])
    before = Path(good.path).read_bytes()

    for claimed in (1, 3):  # the part holds 2 documents
        wrong = dataclasses.replace(result, documents=claimed)
        with pytest.raises(
            ValueError, match=f"report part holds 2 documents, not the {claimed} its result says"
        ):
            build_report(out, [wrong], [None])
        assert Path(good.path).read_bytes() == before
    narrow = dataclasses.replace(result, text_columns=1)  # a header narrower than the part's rows
    with pytest.raises(ValueError, match="rows wider than the docs header"):
        build_report(out, [narrow], [None])
    report_part_path(Path(out), "AA/wiki_00").unlink()
    with pytest.raises(ValueError, match=r"AA/wiki_00: its report part .* is missing or not whole; rerun"):
        build_report(out, [result], [None])
    assert Path(good.path).read_bytes() == before
    assert [p.name for p in Path(out).iterdir() if p.name.endswith(".tmp")] == []


def test_the_report_copies_the_parts_deflated_bytes_as_they_are(tmp_path: Path) -> None:
    bodies = {f"AA/wiki_{n:02}": [f"doc {n}.{i} " * 50 * i + "\n" for i in range(n + 1)] for n in range(4)}
    for item, texts in bodies.items():
        path = tmp_path / "in" / item
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(DOC.format(i, t) for i, t in enumerate(texts)), encoding="utf-8")
    inp, out = str(tmp_path / "in"), tmp_path / "out"
    results = [parse_item(inp, item, str(out)).result for item in bodies]

    report = Path(build_report(str(out), results, [None] * len(results)).path)

    packed = report.read_bytes()
    for item in bodies:
        part = read_part(report_part_path(out, item))
        assert part is not None and part.deflated().data in packed, item
    rows = [(row[0], join_cells(row[4:])) for row in read_sheet(report, "docs")]
    assert rows == [(item, text) for item, texts in bodies.items() for text in texts]
