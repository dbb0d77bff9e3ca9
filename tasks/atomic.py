"""Write an output file atomically, with the mode a plain new file would get.

The file is written under a temporary name next to its target and renamed into place on
success, so a crash or kill leaves either the previous complete file or none. The temp file
is created as any new file is (mode ``0o666`` less the umask, applied by the kernel), not
``0600`` as ``tempfile.mkstemp`` would, so ``report.xlsx`` is as readable as any file the
user creates, without reading the umask (a read of ``/proc/self/status``) for each file.

Writers that take a file write through the descriptor that created it (``written_atomically``)
rather than opening the path again with ``"wb"``: that truncation of an already empty file
makes ext4 start writing the file's data out when it is closed (its ``auto_da_alloc`` guard
for files replaced by truncation), a write-out per artifact, report part and record.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO


def _new_temp_file(path: Path) -> tuple[Path, int]:
    """Create ``.<name>.<random>.tmp`` beside ``path``, empty, as ``open(…, "w")`` creates a
    file; return it and a descriptor open for writing it."""
    while True:
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            # 0o666: the kernel takes off the umask (or applies the folder's default ACL) itself.
            return temp, os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue  # another writer's temp file of the same target: take another name


class OutputError(Exception):
    """An output file could not be written (disk full, permissions…); names the file."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[OutputError], tuple[str, str]]:
        return (type(self), (self.path, self.reason))


def os_reason(exc: BaseException) -> str:
    """The OS's words for ``exc`` or for the OS error it wraps (xlsxwriter's FileCreateError)."""
    cause = exc if isinstance(exc, OSError) else exc.__cause__ or exc.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(exc)


class AtomicTarget:
    """A temp path to write ``path``'s content to; ``commit`` renames it over ``path``.

    The temp file is ``.<name>.<random>.tmp`` in the target's directory (created if missing),
    so a killed writer's leftovers are recognisable. As a context manager it yields the temp
    path (for writers that open files by name; ``open()`` gives the others the file itself),
    commits if the block succeeds and removes the temp file in every case. An OS error
    creating, writing (in the block) or renaming it is an ``OutputError`` naming ``path``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.committed = False
        try:
            try:
                self.temp, fd = _new_temp_file(path)
            except FileNotFoundError:  # the target's folder is new
                path.parent.mkdir(parents=True, exist_ok=True)
                self.temp, fd = _new_temp_file(path)
        except OSError as exc:
            raise OutputError(str(path), os_reason(exc)) from exc
        self._fd: int | None = fd

    def open(self) -> BinaryIO:
        """The temp file, open for writing from its start (once; the caller closes it)."""
        fd, self._fd = self._fd, None
        if fd is None:
            raise ValueError(f"the temp file of {self.path} was already opened")
        return os.fdopen(fd, "wb")

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def commit(self) -> None:
        """Rename the written temp file into place."""
        self._close_fd()
        try:
            os.replace(self.temp, self.path)
        except OSError as exc:
            raise OutputError(str(self.path), os_reason(exc)) from exc
        self.committed = True

    def failed(self, exc: BaseException) -> OutputError:
        """``exc``, raised while writing the temp file, as an error naming the target."""
        return exc if isinstance(exc, OutputError) else OutputError(str(self.path), os_reason(exc))

    def discard(self) -> None:
        """Remove the temp file if it is still there (after a failure; a no-op after commit)."""
        self._close_fd()
        if not self.committed:
            self.temp.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        return self.temp

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            if exc is None:
                self.commit()
        finally:
            self.discard()
        if isinstance(exc, OSError):
            raise self.failed(exc) from exc


@contextlib.contextmanager
def written_atomically(path: Path) -> Iterator[BinaryIO]:
    """A file to write ``path``'s new content to; it replaces ``path`` if the block succeeds
    (``AtomicTarget``, written through the descriptor that created the temp file)."""
    target = AtomicTarget(path)
    with target, target.open() as file:
        yield file


def remove_stale_temp_files(directory: Path, suffixes: Iterable[str]) -> int:
    """Delete the temp files that killed writers of targets named ``*<suffix>`` left below
    ``directory``; return how many.

    Only call this while holding the directory (``poolflow.tasks.output_lock``): a live writer's
    temp files look the same.
    """
    patterns = [f".*{suffix}.*.tmp" for suffix in suffixes]
    removed = 0
    for temp in directory.rglob(".*.tmp"):  # one walk of the output, whatever the suffixes
        if any(fnmatch.fnmatchcase(temp.name, pattern) for pattern in patterns):
            temp.unlink(missing_ok=True)
            removed += 1
    return removed
