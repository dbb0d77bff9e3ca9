"""Per-document statistics returned as a tuple of equal-length lists (the tuple-task pattern).

The flow gathers the tuples of all items by position into the report's ``stats`` columns,
as the old ``apply_async`` example gathered ``(list_a, list_b, list_c)``.
"""

from __future__ import annotations

from pathlib import Path

from tasks.items import read_input
from tasks.parse import parse_text
from tasks.xlsx import split_cell

STATS_COLUMNS = ("id", "characters", "lines", "text_cells")

DocumentStats = tuple[list[str], list[int], list[int], list[int]]


def document_stats(
    input_dir: str, item: str, parser: str = "exact", encoding: str = "utf-8"
) -> DocumentStats:
    """For each document of ``item``: its id, characters, lines and the cells its text needs."""
    text, _ = read_input(Path(input_dir), item, encoding)
    documents = parse_text(text, parser).documents
    return (
        [doc.id for doc in documents],
        [len(doc.text) for doc in documents],
        [doc.text.count("\n") for doc in documents],
        [len(split_cell(doc.text)) for doc in documents],
    )
