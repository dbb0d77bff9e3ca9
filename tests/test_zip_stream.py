"""The parallel-deflate zip writer makes archives that zipfile reads back byte for byte."""

from __future__ import annotations

import io
import os
import zipfile

from tasks.zip_stream import ZipStreamWriter


def test_members_of_many_deflated_pieces_read_back_exactly() -> None:
    pieces = [os.urandom(1000) + ("한국어 " * n).encode() for n in range(0, 3000, 97)]
    buffer = io.BytesIO()
    with ZipStreamWriter(buffer, threads=3) as writer:
        writer.write_member("xl/worksheets/sheet1.xml", pieces)
        writer.write_member("empty.xml", [])
        writer.write_member("한.xml", [b"", b"x", b""])
        writer.finish()

    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        assert archive.testzip() is None  # every member's CRC-32 and size check out
        assert archive.namelist() == ["xl/worksheets/sheet1.xml", "empty.xml", "한.xml"]
        assert archive.read("xl/worksheets/sheet1.xml") == b"".join(pieces)
        assert archive.read("empty.xml") == b""
        assert archive.read("한.xml") == b"x"
