"""The old script's second example: a chunk of work items becomes three labelled lists.

``label_chunk`` returns ``(list_a, list_b, list_c)`` like the original ``doWork``; the
tuple-report flow gathers the tuples by position into columns ``a``, ``b`` and ``c``.
"""

from __future__ import annotations

from pathlib import Path

from poolflow.tasks.xlsx import write_table

LabelColumns = tuple[list[str], list[str], list[str]]
COLUMNS = ("a", "b", "c")


def make_chunks(chunks: int, per_chunk: int) -> list[list[str]]:
    """The original work-list: ``work_<chunk>_<n>`` names, ``per_chunk`` to a chunk."""
    return [[f"work_{i}_{w}" for w in range(per_chunk)] for i in range(chunks)]


def label_chunk(chunk: list[str]) -> LabelColumns:
    """Prefix every work item with ``a_``, ``b_`` and ``c_``: one list per column."""
    return (
        [f"a_{work}" for work in chunk],
        [f"b_{work}" for work in chunk],
        [f"c_{work}" for work in chunk],
    )


def write_label_columns(path: str, results: list[LabelColumns]) -> int:
    """Gather the tuples by position into columns a, b, c, one row per element, in order."""
    rows = (row for a, b, c in results for row in zip(a, b, c, strict=True))
    return write_table(Path(path), "labels", COLUMNS, rows)
