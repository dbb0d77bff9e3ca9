"""An item's rows of the report's ``docs`` sheet, rendered and deflated by the item's own task.

The ``docs`` sheet is every item's documents, item after item, under one header. Each item
task writes its rows once, as the sheet will hold them, into a *report part* (the item's
``REPORT_PARTS_DIR`` file, see ``poolflow.tasks.items``): placeable rows without ``r`` attributes
(``poolflow.tasks.sheet_xml.render_placeable_row``), which mean the same at any row of any sheet,
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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from poolflow.tasks.atomic import AtomicTarget
from poolflow.tasks.sheet_xml import render_placeable_row
from poolflow.tasks.xlsx import Row
from poolflow.tasks.zip_stream import DeflatedPiece, deflate_piece

PART_FORMAT = "poolflow-report-part/1"
PART_SUFFIX = ".docs.part"
_HEADER_LIMIT = 1 << 16  # bytes: a header line is far shorter; a longer first line is not ours
_BLOCK_CHARACTERS = 1 << 20  # rendered XML handed to the compressor at a time


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


def _xml_blocks(rows: Sequence[Row]) -> Iterator[bytes]:
    """``rows`` as placeable row XML, in blocks of about ``_BLOCK_CHARACTERS``."""
    batch: list[str] = []
    length = 0
    for row in rows:
        batch.append(render_placeable_row(row))
        length += len(batch[-1])
        if length >= _BLOCK_CHARACTERS:
            yield "".join(batch).encode("utf-8")
            batch.clear()
            length = 0
    if batch:
        yield "".join(batch).encode("utf-8")


def write_part(path: Path, item: str, made_from: Mapping[str, str], rows: Sequence[Row]) -> ReportPart:
    """Write ``item``'s ``docs`` rows (source, id, url, title, text…) to the part at ``path``,
    atomically (an OS error is an ``OutputError`` naming ``path``); return its header."""
    piece = deflate_piece(_xml_blocks(rows))
    header = {
        "format": PART_FORMAT,
        "item": item,
        "made_from": dict(made_from),
        "rows": len(rows),
        "columns": max((len(row) for row in rows), default=0),
        "crc": piece.crc,
        "size": piece.size,
        "compressed": len(piece.data),
    }
    line = json.dumps(header, sort_keys=True).encode("utf-8") + b"\n"
    with AtomicTarget(path) as temp, temp.open("wb") as file:
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
