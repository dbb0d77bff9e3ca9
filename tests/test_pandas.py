"""pandas for analysts: read_report re-joins texts, report.parquet holds every document whole."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from poolflow.flows.wiki_report import wiki_report
from poolflow.tasks.frames import base_sheets, read_report
from poolflow.tasks.items import ItemResult, ItemStatus, artifact_path, parse_item
from poolflow.tasks.parquet import write_parquet
from poolflow.tasks.parse import parse_exact
from poolflow.tasks.report import build_report
from poolflow.tasks.sample import write_sample_corpus
from poolflow.tasks.stats import DocumentStats
from poolflow.tasks.xlsx import EXCEL_CELL_LIMIT, sheet_names, split_cell, utf16_length

DOC = '<doc id="{0}" url="u{0}" title="t{0}">\n{1}</doc>\n'
PARQUET_COLUMNS = ["source", "id", "url", "title", "text", "characters", "lines", "text_cells"]


def corpus_documents(root: Path) -> list[tuple[str, str, str, str, str, int, int, int]]:
    """Every document under ``root`` as a report.parquet row, from the parser's own output."""
    rows = []
    for path in sorted(p for p in root.rglob("wiki_*") if p.is_file()):
        item = path.relative_to(root).as_posix()
        for d in parse_exact(path.read_text(encoding="utf-8")).documents:
            cells = len(split_cell(d.text))
            rows.append((item, d.id, d.url, d.title, d.text, len(d.text), d.text.count("\n"), cells))
    return rows


def frame_rows(frame: pd.DataFrame, columns: list[str]) -> list[tuple[object, ...]]:
    return [tuple(row) for row in frame[columns].itertuples(index=False)]


@pytest.mark.usefixtures("prefect_api")
@pytest.mark.corpus
def test_parquet_and_read_report_hold_every_corpus_document_whole(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    state = wiki_report(str(corpus), str(out), processes=2, parquet=True, return_state=True)
    assert state.is_completed(), state.message
    expected = corpus_documents(corpus)
    assert len(expected) == 4274
    assert sum(utf16_length(row[4]) > EXCEL_CELL_LIMIT for row in expected) >= 10  # long texts present

    parquet = pd.read_parquet(out / "report.parquet")
    assert list(parquet.columns) == PARQUET_COLUMNS
    assert frame_rows(parquet, PARQUET_COLUMNS) == expected

    frames = read_report(out / "report.xlsx")
    assert list(frames) == ["docs", "stats", "summary"]
    assert list(frames["docs"].columns) == ["source", "id", "url", "title", "text"]
    assert frame_rows(frames["docs"], ["source", "id", "url", "title", "text"]) == [r[:5] for r in expected]
    stats_columns = ["source", "id", "characters", "lines", "text_cells"]
    assert frame_rows(frames["stats"], stats_columns) == [(r[0], r[1], *r[5:]) for r in expected]
    assert set(frames["summary"]["status"]) == {"done"}

    artifact = read_report(artifact_path(out, "AA/wiki_05"))
    assert list(artifact) == ["docs", "warnings", "meta"]
    in_item = [r for r in expected if r[0] == "AA/wiki_05"]
    assert list(artifact["docs"]["text"]) == [r[4] for r in in_item]
    assert list(artifact["docs"]["line"].map(type).unique()) == [int]


Items = tuple[list[ItemResult], list[DocumentStats | None]]


def make_items(root: Path, files: dict[str, list[str]]) -> Items:
    """Parse each file of ``files`` (item → bodies) into artifacts under ``root/out``."""
    results: list[ItemResult] = []
    stats: list[DocumentStats | None] = []
    for item, bodies in files.items():
        path = root / "in" / item
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(DOC.format(i, b) for i, b in enumerate(bodies)), encoding="utf-8")
        output = parse_item(str(root / "in"), item, str(root / "out"))
        results.append(output.result)
        stats.append(output.stats)
    return results, stats


FILES = {
    "AA/wiki_00": ["a\n", "😀" * 20_000 + "\n"],  # 40,002 UTF-16 units: two cells
    "AA/wiki_01": [],  # no documents
    "AA/wiki_02": ["_x0041_ =1+1\n", "한" * 100_000 + "\n", ""],
}


def test_parquet_writes_whole_items_as_row_groups_and_skips_failures(tmp_path: Path) -> None:
    results, stats = make_items(tmp_path, FILES)
    results.append(ItemResult(item="AA/wiki_03", status=ItemStatus.FAILED, error="ItemError: binary file"))
    stats.append(None)

    written = write_parquet(str(tmp_path / "out"), results, stats, row_group_bytes=1)

    metadata = pq.ParquetFile(written.path).metadata
    # One row group per item with documents: memory holds one item at a time.
    assert (written.documents, written.row_groups, metadata.num_row_groups) == (5, 2, 2)
    assert [metadata.row_group(i).num_rows for i in range(2)] == [2, 3]
    frame = pd.read_parquet(written.path)
    assert list(frame["text"]) == [text for bodies in FILES.values() for text in bodies]
    assert list(frame["source"]) == ["AA/wiki_00"] * 2 + ["AA/wiki_02"] * 3
    assert list(frame["text_cells"]) == [1, 2, 1, 4, 1]

    together = write_parquet(str(tmp_path / "out"), results, stats)  # default: one group of both
    assert (together.documents, together.row_groups) == (5, 1)
    assert pd.read_parquet(together.path).equals(frame)


def test_read_report_joins_spill_sheets_and_text_cells(tmp_path: Path) -> None:
    results, stats = make_items(tmp_path, FILES)
    report = build_report(str(tmp_path / "out"), results, stats, max_rows=3)
    assert sheet_names(Path(report.path))[:3] == ["docs", "docs_2", "docs_3"]

    frames = read_report(report.path)

    texts = [text for bodies in FILES.values() for text in bodies]
    assert list(frames["docs"]["text"]) == texts
    assert list(frames["docs"]["source"]) == ["AA/wiki_00"] * 2 + ["AA/wiki_02"] * 3
    assert list(frames["stats"]["characters"]) == [len(t) for t in texts]
    assert list(frames["summary"]["documents"]) == [2, 0, 3]


def test_base_sheets_tells_spill_sheets_from_sheets_named_like_them() -> None:
    names = ["docs", "docs_2", "docs_3", "stats", "text_2", "summary"]
    assert base_sheets(names) == ["docs", "stats", "text_2", "summary"]


@pytest.mark.usefixtures("prefect_api")
def test_parquet_goes_to_a_remote_output_too(tmp_path: Path, s3_bucket: str) -> None:
    import s3fs

    corpus = tmp_path / "corpus"
    write_sample_corpus(corpus, files=2, docs_per_file=5)
    output = f"{s3_bucket}/parquet"
    state = wiki_report(str(corpus), output, processes=2, parquet=True, return_state=True)
    assert state.is_completed(), state.message
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    with tempfile.TemporaryDirectory() as local:
        fs.get_file(f"{output}/report.parquet", f"{local}/report.parquet")
        frame = pd.read_parquet(f"{local}/report.parquet")
    assert frame_rows(frame, PARQUET_COLUMNS) == corpus_documents(corpus)
