"""Per-document statistics returned as a tuple of equal-length lists (the tuple-task pattern).

The flow gathers the tuples of all items by position into the report's ``stats`` columns,
as the old ``apply_async`` example gathered ``(list_a, list_b, list_c)``. They are computed
from the same parse that writes the item's artifact (``poolflow.tasks.items.parse_item``).
"""

from __future__ import annotations

from collections.abc import Sequence

from poolflow.tasks.parse import Document
from poolflow.tasks.xlsx import split_cell

STATS_COLUMNS = ("id", "characters", "lines", "text_cells")

DocumentStats = tuple[list[str], list[int], list[int], list[int]]


def document_stats(documents: Sequence[Document]) -> DocumentStats:
    """For each document: its id, characters, lines and the cells its text needs."""
    return (
        [doc.id for doc in documents],
        [len(doc.text) for doc in documents],
        [doc.text.count("\n") for doc in documents],
        [len(split_cell(doc.text)) for doc in documents],
    )
