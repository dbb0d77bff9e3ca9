"""The flows end to end on a real Prefect server: the shared corpus, resume, failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from poolflow.flows.tuple_report import tuple_report
from poolflow.flows.wiki_report import wiki_report
from poolflow.tasks.parse import parse_exact
from poolflow.tasks.sample import write_sample_corpus
from poolflow.tasks.xlsx import join_cells, read_sheet, split_cell

pytestmark = pytest.mark.usefixtures("prefect_api")


def summary_statuses(report: Path) -> dict[str, str]:
    return {row[0]: row[1] for row in read_sheet(report, "summary")}


def expected_documents(root: Path) -> list[tuple[str, str, str, str]]:
    """(source, id, title, text) of every document under ``root``, in report order."""
    found = []
    for path in sorted(p for p in root.rglob("wiki_*") if p.is_file()):
        item = path.relative_to(root).as_posix()
        for doc in parse_exact(path.read_text(encoding="utf-8")).documents:
            found.append((item, doc.id, doc.title, doc.text))
    return found


@pytest.mark.corpus
def test_wiki_report_on_the_shared_corpus_is_lossless(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    state = wiki_report(str(corpus), str(out), processes=2, return_state=True)
    assert state.is_completed(), state.message
    items = sorted(p.relative_to(out / "items").as_posix() for p in (out / "items").rglob("*.xlsx"))
    assert items == [f"AA/wiki_{n:02d}.xlsx" for n in range(20)]
    report = out / "report.xlsx"
    rows = [(r[0], r[1], r[3], join_cells(r[4:])) for r in read_sheet(report, "docs")]
    assert len(rows) == 4274
    assert rows == expected_documents(corpus)
    assert sum(1 for _ in read_sheet(report, "stats")) == 4274
    assert set(summary_statuses(report).values()) == {"done"}

    again = wiki_report(str(corpus), str(out), processes=2, return_state=True)
    assert again.is_completed()
    assert set(summary_statuses(report).values()) == {"skipped"}
    assert [(r[0], r[1], r[3], join_cells(r[4:])) for r in read_sheet(report, "docs")] == rows


def test_rerun_redoes_only_changed_or_missing_items(tmp_path: Path) -> None:
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    write_sample_corpus(corpus, files=4, docs_per_file=5)
    assert wiki_report(str(corpus), str(out), processes=2, return_state=True).is_completed()
    (out / "items" / "AA" / "wiki_01.xlsx").unlink()
    changed = corpus / "AA" / "wiki_02"
    changed.write_text(
        changed.read_text(encoding="utf-8") + '<doc id="1" url="u" title="new">\nnew\n</doc>\n'
    )
    (out / "items" / "AA" / ".wiki_03.xlsx.half.tmp").write_text("left by a killed run")
    parts = out / ".poolflow" / "report-parts" / "AA"
    (parts / ".wiki_00.docs.part.half.tmp").write_text("left by a killed run")
    (parts / "wiki_03.docs.part").unlink()  # as in an output from before report parts

    assert wiki_report(str(corpus), str(out), processes=2, return_state=True).is_completed()

    report = out / "report.xlsx"
    assert summary_statuses(report) == {
        "AA/wiki_00": "skipped",
        "AA/wiki_01": "done",
        "AA/wiki_02": "done",
        "AA/wiki_03": "skipped",
    }
    assert not (out / "items" / "AA" / ".wiki_03.xlsx.half.tmp").exists()
    assert sorted(p.name for p in parts.iterdir()) == [f"wiki_0{n}.docs.part" for n in range(4)]
    rows = [(r[0], r[1], r[3], join_cells(r[4:])) for r in read_sheet(report, "docs")]
    assert rows == expected_documents(corpus)
    # Skipped files too give their stats rows, from the same single parse as their docs.
    stats = [tuple(r) for r in read_sheet(report, "stats")]
    assert stats == [
        (source, doc_id, len(text), text.count("\n"), len(split_cell(text)))
        for source, doc_id, _, text in expected_documents(corpus)
    ]


def test_a_bad_file_fails_alone_and_is_named_in_the_summary(tmp_path: Path) -> None:
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    write_sample_corpus(corpus, files=3, docs_per_file=4)
    (corpus / "AA" / "wiki_99").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")

    state = wiki_report(str(corpus), str(out), processes=2, return_state=True)

    assert state.is_failed()
    assert (state.message or "").startswith("1 of 4 items failed; see the summary sheet of ")
    summary = {row[0]: row for row in read_sheet(out / "report.xlsx", "summary")}
    assert summary["AA/wiki_99"][1] == "failed"
    assert summary["AA/wiki_99"][6].startswith("binary file (contains NUL bytes)")
    sources = {row[0] for row in read_sheet(out / "report.xlsx", "docs")}
    assert sources == {"AA/wiki_00", "AA/wiki_01", "AA/wiki_02"}


def test_html5lib_parser_option_is_available(tmp_path: Path) -> None:
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    write_sample_corpus(corpus, files=1, docs_per_file=3)
    state = wiki_report(str(corpus), str(out), processes=1, parser="html5lib", return_state=True)
    assert state.is_completed()
    assert sum(1 for _ in read_sheet(out / "report.xlsx", "docs")) == 3


def test_tuple_report_gathers_columns_in_submission_order(tmp_path: Path) -> None:
    path = tmp_path / "tuples.xlsx"
    assert tuple_report(str(path), chunks=6, per_chunk=3, processes=2) == 18
    rows = list(read_sheet(path, "labels"))
    expected = [f"work_{i}_{w}" for i in range(6) for w in range(3)]
    assert rows == [[f"a_{w}", f"b_{w}", f"c_{w}"] for w in expected]


def test_retry_state_lives_in_the_output_and_goes_with_it(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH

    default_storage = Path(PREFECT_RESULTS_LOCAL_STORAGE_PATH.value())
    before = set(default_storage.rglob("*")) if default_storage.exists() else set()
    write_sample_corpus(tmp_path / "in", 3, 2, seed=5)
    out = tmp_path / "out"

    assert wiki_report(str(tmp_path / "in"), str(out), processes=2, return_state=True).is_completed()

    persisted = [p for p in (out / ".poolflow" / "results").rglob("*") if p.is_file()]
    assert len(persisted) >= 3  # one result per item, for a retry from the UI
    after = set(default_storage.rglob("*")) if default_storage.exists() else set()
    assert after == before, "results written to Prefect's default storage"
