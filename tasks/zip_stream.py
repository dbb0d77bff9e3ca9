"""A zip file written member by member, each member's data deflated in parallel threads.

A zip member is one raw deflate stream, but independent pieces can each be deflated on their
own and concatenated: every piece ends with a sync flush (byte-aligned, no final block), and
the stream ends with an empty final block. ISA-L (python-isal) deflates and checksums with
the GIL released, so a thread per core gives real parallelism; each thread also writes its
piece once the piece before it is written, so the caller's thread never waits on the disk,
and each piece's CRC-32 is combined into the member's in order. Sizes follow each member in
a data descriptor, so nothing is known or held in advance; ZIP64 records are added only where
a size or offset reaches 4 GiB. A piece deflated elsewhere in the same form (``deflate_piece``,
a ``DeflatedPiece`` with its CRC-32 and length) is copied into a member as it is.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO

from isal import isal_zlib

# ISA-L's level 1 deflates this text 4x faster than zlib's level 1 and a little smaller.
DEFLATE_LEVEL = 1
_EMPTY_FINAL_BLOCK = zlib.compressobj(1, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
_ZIP32_LIMIT = 0xFFFFFFFF
_DOS_DATE = (1 << 5) | 1  # 1980-01-01, a fixed stamp keeps the output reproducible
_DATA_DESCRIPTOR_FLAG = 0x08
_UTF8_NAME_FLAG = 0x800


@dataclass(frozen=True)
class DeflatedPiece:
    """A piece of a member deflated ahead of time: raw deflate ending with a sync flush and no
    final block, with the CRC-32 and length of what it inflates to."""

    data: bytes
    crc: int
    size: int


class PieceDeflater:
    """Deflates blocks handed to it one at a time into one piece; only the deflated bytes are held."""

    def __init__(self) -> None:
        self._compressor = isal_zlib.compressobj(DEFLATE_LEVEL, isal_zlib.DEFLATED, -15)
        self._deflated: list[bytes] = []
        self._crc = 0
        self._size = 0

    def add(self, block: bytes) -> None:
        """Append ``block`` to the piece."""
        self._deflated.append(self._compressor.compress(block))
        self._crc = isal_zlib.crc32(block, self._crc)
        self._size += len(block)

    def finish(self) -> DeflatedPiece:
        """The piece of every block added; nothing may be added after."""
        self._deflated.append(self._compressor.flush(isal_zlib.Z_SYNC_FLUSH))
        return DeflatedPiece(b"".join(self._deflated), self._crc, self._size)


def deflate_piece(blocks: Iterable[bytes]) -> DeflatedPiece:
    """The concatenation of ``blocks`` as a piece any other piece may precede or follow in a member."""
    deflater = PieceDeflater()
    for block in blocks:
        deflater.add(block)
    return deflater.finish()


def inflate_piece(piece: DeflatedPiece) -> bytes:
    """What ``piece`` inflates to, checked against its CRC-32 and length."""
    data = isal_zlib.decompressobj(-15).decompress(piece.data)
    if len(data) != piece.size or isal_zlib.crc32(data) != piece.crc:
        raise ValueError("a deflated piece does not match its CRC-32 and length")
    return data


@dataclass(frozen=True)
class _Member:
    name: bytes
    offset: int
    crc: int
    compressed: int
    size: int


# A piece deflated and written by a thread: (bytes written, the piece's CRC-32, its length).
_Written = Future[tuple[int, int, int]]


class _InCaller:
    """Runs each submitted call at once in the caller's thread: one thread needs no pool (a
    small workbook would spend more starting a thread than deflating)."""

    def submit(self, fn: Callable[..., tuple[int, int, int]], /, *args: object) -> _Written:
        done: _Written = Future()
        try:
            done.set_result(fn(*args))
        except Exception as exc:
            done.set_exception(exc)
        return done

    def shutdown(self, cancel_futures: bool = False) -> None:
        """Nothing runs after its call returned."""


class ZipStreamWriter:
    """Writes a zip to ``file`` (any writable binary stream) one member at a time.

    Use it as a context manager (which stops its threads) and call ``finish`` once the last
    member is written; a zip left unfinished by an error has no directory and is unreadable.
    """

    def __init__(self, file: BinaryIO, threads: int | None = None) -> None:
        self._file = file
        self._offset = 0
        self._members: list[_Member] = []
        self._threads = threads or os.cpu_count() or 1
        self._pool: ThreadPoolExecutor | _InCaller = (
            ThreadPoolExecutor(self._threads, thread_name_prefix="poolflow-deflate")
            if self._threads > 1
            else _InCaller()
        )

    def __enter__(self) -> ZipStreamWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._pool.shutdown(cancel_futures=True)

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._offset += len(data)

    def write_member(self, name: str, pieces: Iterable[bytes | DeflatedPiece]) -> None:
        """Member ``name``: the concatenation of ``pieces``, each deflated in a thread unless it is a
        ``DeflatedPiece`` already, keeping few pieces in flight."""
        encoded = name.encode("utf-8")
        offset = self._offset
        flags = _DATA_DESCRIPTOR_FLAG | _UTF8_NAME_FLAG
        self._write(
            struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, 8, 0, _DOS_DATE, 0, 0, 0, len(encoded), 0)
        )
        self._write(encoded)
        crc = size = 0
        start = self._offset
        in_flight: deque[_Written] = deque()
        for piece in pieces:
            previous = in_flight[-1] if in_flight else None
            in_flight.append(self._pool.submit(self._write_piece, piece, previous))
            while len(in_flight) > 2 * self._threads:
                crc, size = self._append(in_flight.popleft(), crc, size)
        while in_flight:
            crc, size = self._append(in_flight.popleft(), crc, size)
        self._write(_EMPTY_FINAL_BLOCK)
        compressed = self._offset - start
        if compressed >= _ZIP32_LIMIT or size >= _ZIP32_LIMIT:
            self._write(struct.pack("<IIQQ", 0x08074B50, crc, compressed, size))
        else:
            self._write(struct.pack("<IIII", 0x08074B50, crc, compressed, size))
        self._members.append(_Member(encoded, offset, crc, compressed, size))

    def _write_piece(self, piece: bytes | DeflatedPiece, previous: _Written | None) -> tuple[int, int, int]:
        """In a thread: deflate ``piece`` unless it is deflated, write it once ``previous`` is written;
        return the written length, the piece's CRC-32 and its inflated length.

        The pool runs pieces in submission order, so the piece waited for is always running or done.
        """
        deflated = piece if isinstance(piece, DeflatedPiece) else deflate_piece([piece])
        if previous is not None:
            previous.result()
        self._file.write(deflated.data)
        return len(deflated.data), deflated.crc, deflated.size

    def _append(self, future: _Written, crc: int, size: int) -> tuple[int, int]:
        """Account for a piece once written; return the member's CRC-32 and size so far."""
        written, piece_crc, length = future.result()
        self._offset += written
        return isal_zlib.crc32_combine(crc, piece_crc, length), size + length

    def finish(self) -> None:
        """Write the central directory; the stream stays open for the caller to close."""
        directory_offset = self._offset
        for member in self._members:
            self._write_directory_entry(member)
        directory_size = self._offset - directory_offset
        count = len(self._members)
        if directory_offset >= _ZIP32_LIMIT or directory_size >= _ZIP32_LIMIT or count >= 0xFFFF:
            zip64_end = self._offset
            self._write(
                struct.pack(
                    "<IQHHIIQQQQ",
                    0x06064B50,
                    44,
                    45,
                    45,
                    0,
                    0,
                    count,
                    count,
                    directory_size,
                    directory_offset,
                )
            )
            self._write(struct.pack("<IIQI", 0x07064B50, 0, zip64_end, 1))
        self._write(
            struct.pack(
                "<IHHHHIIH",
                0x06054B50,
                0,
                0,
                min(count, 0xFFFF),
                min(count, 0xFFFF),
                min(directory_size, _ZIP32_LIMIT),
                min(directory_offset, _ZIP32_LIMIT),
                0,
            )
        )

    def _write_directory_entry(self, member: _Member) -> None:
        """One central-directory record, with a ZIP64 extra field for values past 32 bits."""
        large = [value for value in (member.size, member.compressed, member.offset) if value >= _ZIP32_LIMIT]
        # The ZIP64 field lists, in this order, the size, compressed size and offset that overflowed.
        if large:
            extra = struct.pack("<HH", 1, 8 * len(large)) + b"".join(struct.pack("<Q", v) for v in large)
        else:
            extra = b""
        version = 45 if large else 20
        flags = _DATA_DESCRIPTOR_FLAG | _UTF8_NAME_FLAG
        self._write(
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                version,
                version,
                flags,
                8,
                0,
                _DOS_DATE,
                member.crc,
                min(member.compressed, _ZIP32_LIMIT),
                min(member.size, _ZIP32_LIMIT),
                len(member.name),
                len(extra),
                0,
                0,
                0,
                0,
                min(member.offset, _ZIP32_LIMIT),
            )
        )
        self._write(member.name + extra)
