"""An item's documents rendered once as sheet rows, for its artifact and for its report part.

An artifact's ``docs`` row is (line, id, url, title, text…); the report's is (source item, id,
url, title, text…). Only the first cell differs, so each document's other cells, nearly all of
its bytes, are escaped and rendered once (``render_placeable_cells``) and end both rows. The
artifact's rows go to its package as they are rendered (``take``, sheet by sheet); the report
part's rows are deflated as they come, so neither is ever held uncompressed as a whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import islice

from poolflow.tasks.sheet_xml import ROWS_PER_PIECE, render_placeable_cells
from poolflow.tasks.xlsx import Row
from poolflow.tasks.zip_stream import DeflatedPiece, PieceDeflater


class DocumentRows:
    """``rows`` (first cell the line number, never empty) as the artifact's and the part's rows."""

    def __init__(self, item: str, rows: Sequence[Row]) -> None:
        self.count = len(rows)
        self.columns = max((len(row) for row in rows), default=0)
        self._rows = iter(rows)
        self._source = render_placeable_cells([item])
        self._part = PieceDeflater()

    def take(self, count: int) -> Iterator[bytes]:
        """The artifact's next ``count`` rows as placeable row XML, in blocks; the same documents'
        report rows are added to the part on the way."""
        rows = islice(self._rows, count)
        while batch := list(islice(rows, ROWS_PER_PIECE)):
            cells = [render_placeable_cells(row[1:]) for row in batch]
            self._part.add("".join(f"<row>{self._source}{rest}</row>" for rest in cells).encode())
            yield "".join(
                f"<row>{render_placeable_cells(row[:1])}{rest}</row>"
                for row, rest in zip(batch, cells, strict=True)
            ).encode()

    def part(self) -> DeflatedPiece:
        """The report part's rows, deflated: those of the rows ``take`` handed out, and the rest."""
        for _ in self.take(self.count):
            pass
        return self._part.finish()
