"""The parallel-deflate zip writer makes archives that zipfile reads back byte for byte."""

from __future__ import annotations

import io
import os
import threading
import zipfile

import pytest

from poolflow.tasks.zip_stream import DeflatedPiece, ZipStreamWriter, deflate_piece, inflate_piece


@pytest.mark.parametrize("threads", [1, 3])
def test_members_of_many_deflated_pieces_read_back_exactly(threads: int) -> None:
    pieces = [os.urandom(1000) + ("한국어 " * n).encode() for n in range(0, 3000, 97)]
    buffer = io.BytesIO()
    before = threading.active_count()
    with ZipStreamWriter(buffer, threads=threads) as writer:
        writer.write_member("xl/worksheets/sheet1.xml", pieces)
        writer.write_member("empty.xml", [])
        writer.write_member("한.xml", [b"", b"x", b""])
        if threads == 1:  # the caller's own: no pool is started for it
            assert threading.active_count() == before
        writer.finish()

    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        assert archive.testzip() is None  # every member's CRC-32 and size check out
        assert archive.namelist() == ["xl/worksheets/sheet1.xml", "empty.xml", "한.xml"]
        assert archive.read("xl/worksheets/sheet1.xml") == b"".join(pieces)
        assert archive.read("empty.xml") == b""
        assert archive.read("한.xml") == b"x"


def test_pieces_deflated_ahead_are_copied_with_their_crc_and_length() -> None:
    texts = [f"행 {n} ".encode() * n for n in range(1, 400, 37)]
    ahead = [deflate_piece([text]) for text in texts]
    assert [inflate_piece(piece) for piece in ahead] == texts
    assert inflate_piece(deflate_piece(texts[:3])) == b"".join(texts[:3])  # blocks deflate as one piece
    # Deflated ahead, deflated by the writer and empty pieces mix in one member, in order.
    mixed: list[bytes | DeflatedPiece] = [b"<start>", *ahead[:5], b"middle", deflate_piece([]), *ahead[5:]]
    buffer = io.BytesIO()
    with ZipStreamWriter(buffer, threads=2) as writer:
        writer.write_member("sheet.xml", mixed)
        writer.write_member("ahead-only.xml", [ahead[0]])
        # A piece whose recorded CRC-32 is wrong: the member's CRC-32 is built from the records.
        writer.write_member("lying.xml", [DeflatedPiece(ahead[1].data, ahead[1].crc ^ 1, ahead[1].size)])
        writer.finish()

    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        assert archive.read("sheet.xml") == b"<start>" + b"".join(texts[:5]) + b"middle" + b"".join(texts[5:])
        assert archive.read("ahead-only.xml") == texts[0]
        assert archive.testzip() == "lying.xml"
    with pytest.raises(ValueError, match="does not match its CRC-32"):
        inflate_piece(DeflatedPiece(ahead[1].data, ahead[1].crc, ahead[1].size + 1))
