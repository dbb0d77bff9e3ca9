"""An item's rows of the report's ``docs`` sheet, rendered and deflated by the item's own task.

The ``docs`` sheet is every item's documents, item after item, under one header. Each item
task writes its rows once, as the sheet will hold them, into a *report part* (the item's
``REPORT_PARTS_DIR`` file, see ``poolflow.tasks.items``): placeable rows without ``r`` attributes
(``poolflow.tasks.sheet_xml``), which mean the same at any row of any sheet, rendered with the
rows of the item's artifact (``poolflow.tasks.document_rows``) and
deflated as one piece a zip member may continue (``poolflow.tasks.zip_stream.DeflatedPiece``). The
report then copies the parts' bytes into its package without inflating them, so the work per
document runs in parallel in the pool and the report step is close to copying files.

A part file is one line of JSON, its header, then the deflated rows. The header names the
item, what the part was made from (the keys of the item's artifact: format, input sha256,
parser, encoding), its rows, its widest row in cells, and the CRC-32, length and deflated
length of its XML; a part made from another input, by another version or cut short is not
current (``is_current``) and its item task writes it again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from poolflow.tasks.atomic import written_atomically
from poolflow.tasks.zip_stream import DeflatedPiece

PART_FORMAT = "poolflow-report-part/1"
PART_SUFFIX = ".docs.part"
_HEADER_LIMIT = 1 << 16  # bytes: a header line is far shorter; a longer first line is not ours


@dataclass(frozen=True)
class ReportPart:
    """A part file's header, and where in the file its deflated rows are."""

    path: Path
    item: str
    made_from: dict[str, str]
    rows: int
    columns: int
    crc: int
    size: int
    compressed: int
    offset: int

    def deflated(self) -> DeflatedPiece:
        """The part's rows as a piece a sheet member copies as it is."""
        with self.path.open("rb") as file:
            file.seek(self.offset)
            data = file.read(self.compressed)
        if len(data) != self.compressed:
            raise ValueError(f"{self.path}: the report part was cut short while it was read")
        return DeflatedPiece(data, self.crc, self.size)


def write_part(
    path: Path, item: str, made_from: Mapping[str, str], piece: DeflatedPiece, rows: int, columns: int
) -> ReportPart:
    """Write ``item``'s ``docs`` rows, ``rows`` placeable rows at most ``columns`` cells wide
    deflated as ``piece``, to the part at ``path``, atomically (an OS error is an ``OutputError``
    naming ``path``); return its header."""
    header = {
        "format": PART_FORMAT,
        "item": item,
        "made_from": dict(made_from),
        "rows": rows,
        "columns": columns,
        "crc": piece.crc,
        "size": piece.size,
        "compressed": len(piece.data),
    }
    line = json.dumps(header, sort_keys=True).encode("utf-8") + b"\n"
    with written_atomically(path) as file:
        file.write(line)
        file.write(piece.data)
    return _part(path, header, len(line))


def _count(header: Mapping[str, object], key: str) -> int:
    value = header[key]
    if not isinstance(value, int) or value < 0:
        raise TypeError(f"{key} is not a count")
    return value


def _part(path: Path, header: Mapping[str, object], offset: int) -> ReportPart:
    """The ``ReportPart`` a header describes; ``KeyError`` or ``TypeError`` if it is not one."""
    made_from = header["made_from"]
    if not isinstance(made_from, dict):
        raise TypeError("made_from is not an object")
    return ReportPart(
        path=path,
        item=str(header["item"]),
        made_from={str(key): str(value) for key, value in made_from.items()},
        rows=_count(header, "rows"),
        columns=_count(header, "columns"),
        crc=_count(header, "crc"),
        size=_count(header, "size"),
        compressed=_count(header, "compressed"),
        offset=offset,
    )


def read_part(path: Path) -> ReportPart | None:
    """The header of the part at ``path``; None if there is none, or it is not a whole part of
    this format."""
    try:
        with path.open("rb") as file:
            line = file.readline(_HEADER_LIMIT)
            file.seek(0, 2)
            length = file.tell()
        header = json.loads(line)
        if not isinstance(header, dict) or header.get("format") != PART_FORMAT:
            return None
        part = _part(path, header, len(line))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return part if length == part.offset + part.compressed else None


def is_current(path: Path, item: str, made_from: Mapping[str, str]) -> bool:
    """Whether ``path`` holds a whole part of ``item`` made from exactly ``made_from``."""
    part = read_part(path)
    return part is not None and part.item == item and part.made_from == dict(made_from)
