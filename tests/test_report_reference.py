"""The fast report writer gives the same cells as the reference (calamine → xlsxwriter) writer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hostile_documents import DOC, HOSTILE
from python_calamine import CalamineWorkbook

from poolflow.flows.parameters import DEFAULT_PATTERN
from poolflow.tasks.inputs import list_items
from poolflow.tasks.items import ItemResult, ItemStatus, parse_item
from poolflow.tasks.report import REPORT_NAME, build_report
from poolflow.tasks.report_reference import build_report_reference
from poolflow.tasks.stats import DocumentStats
from poolflow.tasks.xlsx import join_cells, read_sheet


def _cells(path: Path) -> dict[str, list[list[Any]]]:
    """Every sheet of ``path`` as its rows of values, as python-calamine reads them."""
    workbook = CalamineWorkbook.from_path(str(path))
    return {name: workbook.get_sheet_by_name(name).to_python() for name in workbook.sheet_names}


def _build_both(
    output: Path, items: list[ItemResult], stats: list[DocumentStats | None], max_rows: int
) -> tuple[Path, Path]:
    reference = build_report_reference(output, items, stats, max_rows)
    moved = Path(reference.path).rename(output / "reference.xlsx")
    fast = build_report(str(output), items, stats, max_rows)
    counts = (reference.documents, reference.items, reference.failed)
    assert (fast.documents, fast.items, fast.failed) == counts
    return Path(fast.path), moved


def _parse_all(
    input_dir: Path, output: Path, items: list[str]
) -> tuple[list[ItemResult], list[DocumentStats | None]]:
    outputs = [parse_item(str(input_dir), item, str(output)) for item in items]
    stats: list[DocumentStats | None] = [out.stats for out in outputs]
    return [out.result for out in outputs], stats


def _write_inputs(inputs: Path, bodies: Mapping[str, Sequence[Sequence[str]]]) -> Path:
    """One WikiExtractor file per item under ``inputs``, its documents from ``bodies``."""
    for item, docs in bodies.items():
        path = inputs / item
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(DOC.format(*doc) for doc in docs), encoding="utf-8")
    return inputs


@pytest.mark.parametrize("max_rows", [3, 4, 1_048_576])
def test_hostile_documents_give_equal_cells_in_both_writers(tmp_path: Path, max_rows: int) -> None:
    inputs = _write_inputs(tmp_path / "in", HOSTILE)
    results, stats = _parse_all(inputs, tmp_path / "out", list(HOSTILE))
    results.append(ItemResult(item="AC/failed", status=ItemStatus.FAILED, error="binary file"))
    stats.append(None)

    fast, reference = _build_both(tmp_path / "out", results, stats, max_rows)

    cells = _cells(fast)
    assert cells == _cells(reference)
    documents = sum(len(docs) for docs in HOSTILE.values())
    assert len(cells["docs"]) == 1 + min(documents, max_rows - 1)
    rows = list(read_sheet(fast, "docs"))
    expected = [(item, doc[0], doc[2], doc[3]) for item, docs in HOSTILE.items() for doc in docs]
    assert [(row[0], row[1], row[3], join_cells(row[4:])) for row in rows] == expected


@pytest.mark.corpus
def test_shared_corpus_gives_equal_cells_in_both_writers(corpus: Path, tmp_path: Path) -> None:
    results, stats = _parse_all(corpus, tmp_path / "out", list_items(corpus, DEFAULT_PATTERN))

    fast, reference = _build_both(tmp_path / "out", results, stats, 1_048_576)

    assert fast.name == REPORT_NAME
    assert _cells(fast) == _cells(reference)


def test_a_part_cut_by_sheet_ends_is_split_between_rows(tmp_path: Path) -> None:
    # 3 data rows a sheet: wiki_00's 2 rows and wiki_01's first; wiki_01's next 3; its last 2 and wiki_02.
    bodies = {
        "AA/wiki_00": [("1", "u1", "t1", "one\n"), ("2", "", "", "")],
        "AA/wiki_01": [
            (f"1{n}", f"u{n}", "", f"_x0041_ {n}\x01" + "가" * 20_000 * (n % 3) + "\n") for n in range(6)
        ],
        "AA/wiki_02": [("3", "u3", "<r>t</r>", "last\n")],
    }
    inputs = _write_inputs(tmp_path / "in", bodies)
    results, stats = _parse_all(inputs, tmp_path / "out", list(bodies))

    fast, reference = _build_both(tmp_path / "out", results, stats, 4)

    cells = _cells(fast)
    assert cells == _cells(reference)
    assert [len(cells[name]) for name in ("docs", "docs_2", "docs_3")] == [4, 4, 4]
    assert "docs_4" not in cells
    rows = list(read_sheet(fast, "docs"))
    expected = [(item, *doc) for item, docs in bodies.items() for doc in docs]
    assert [(row[0], row[1], row[2], row[3], join_cells(row[4:])) for row in rows] == expected
