"""``report.parquet``: one row per document with its whole text and stats, for pandas users.

Columns: source, id, url, title, text, characters, lines, text_cells. Built item by item from
the artifacts (the text re-joined from its cells) and the items' stats tuples, each item
turned into a DataFrame and handed to a ``pyarrow.parquet.ParquetWriter``. Items are grouped
into row groups of about ``row_group_bytes``, so memory holds at most one row group plus one
item, however large the dump. Written atomically with a new file's mode (``poolflow.tasks.atomic``).
pandas and pyarrow, slow to import, are imported when a file is written, not when a flow imports this.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from poolflow.tasks import storage
from poolflow.tasks.atomic import AtomicTarget
from poolflow.tasks.items import ItemResult, ItemStatus, artifact_keys, artifact_path
from poolflow.tasks.stats import STATS_COLUMNS, DocumentStats
from poolflow.tasks.xlsx import join_cells, read_sheet

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

PARQUET_NAME = "report.parquet"
ROW_GROUP_BYTES = 64 * 2**20
COMPRESSION = "zstd"  # on the Korean corpus: 27% smaller than snappy and as fast to read


@cache
def schema() -> pa.Schema:
    """The file's columns and types."""
    import pyarrow as pa

    return pa.schema(
        [
            ("source", pa.string()),
            ("id", pa.string()),
            ("url", pa.string()),
            ("title", pa.string()),
            ("text", pa.large_string()),  # one row group's texts may pass the 2 GiB of 32-bit offsets
            *((name, pa.int64()) for name in STATS_COLUMNS[1:]),
        ]
    )


@dataclass(frozen=True)
class ParquetResult:
    """Where the Parquet file went, its documents and its row groups."""

    path: str
    documents: int
    row_groups: int


def item_frame(output_dir: Path, result: ItemResult, stats: DocumentStats) -> pd.DataFrame:
    """One item's documents (from its artifact) beside its stats, one row per document."""
    import pandas as pd

    rows = list(read_sheet(artifact_path(output_dir, result.item), "docs"))
    ids = [str(row[1]) for row in rows]
    if ids != stats[0]:
        raise ValueError(f"{result.item}: the artifact's documents do not match the item's stats")
    columns: dict[str, list[str] | list[int]] = {
        "source": [result.item] * len(rows),
        "id": ids,
        "url": [str(row[2]) for row in rows],
        "title": [str(row[3]) for row in rows],
        "text": [join_cells(row[4:]) for row in rows],
    }
    columns.update(zip(STATS_COLUMNS[1:], stats[1:], strict=True))
    return pd.DataFrame(columns)


def _row_groups(
    output_dir: Path, items: Sequence[ItemResult], stats: Sequence[DocumentStats | None], row_group_bytes: int
) -> Iterator[pa.Table]:
    """Tables of whole items, each about ``row_group_bytes`` (an item larger than that alone)."""
    import pyarrow as pa

    pending: list[pa.Table] = []
    size = 0
    for result, columns in zip(items, stats, strict=True):
        if result.status is ItemStatus.FAILED or columns is None:
            continue
        table = pa.Table.from_pandas(item_frame(output_dir, result, columns), schema(), preserve_index=False)
        if table.num_rows == 0:
            continue
        pending.append(table)
        size += table.nbytes
        if size >= row_group_bytes:
            yield pa.concat_tables(pending)
            pending, size = [], 0
    if pending:
        yield pa.concat_tables(pending)


def write_parquet(
    output_dir: str,
    items: Sequence[ItemResult],
    stats: Sequence[DocumentStats | None],
    row_group_bytes: int = ROW_GROUP_BYTES,
) -> ParquetResult:
    """Write ``<output_dir>/report.parquet`` from the artifacts of ``items`` and their ``stats``."""
    if storage.is_remote(output_dir):
        local = storage.run_staged(
            output_dir,
            artifact_keys(items),
            lambda stage: write_parquet(stage, items, stats, row_group_bytes),
        )
        return replace(local, path=storage.join(output_dir, PARQUET_NAME))
    import pyarrow.parquet as pq

    root = Path(storage.local_path(output_dir))
    path = root / PARQUET_NAME
    documents = groups = 0
    with AtomicTarget(path) as temp, pq.ParquetWriter(temp, schema(), compression=COMPRESSION) as writer:
        for table in _row_groups(root, items, stats, row_group_bytes):
            writer.write_table(table, row_group_size=table.num_rows)
            documents += table.num_rows
            groups += 1
    return ParquetResult(str(path), documents, groups)
