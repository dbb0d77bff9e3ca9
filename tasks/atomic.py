"""Write an output file atomically, with the mode a plain new file would get.

The file is written under a temporary name next to its target and renamed into place on
success, so a crash or kill leaves either the previous complete file or none. The temp file
comes from ``tempfile.mkstemp``, which creates it ``0600``; before the rename it gets
``0o666 & ~umask``, so ``report.xlsx`` is as readable as any file the user creates.
"""

from __future__ import annotations

import fnmatch
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def _umask_from_proc() -> int | None:
    """This process's umask from ``/proc/self/status`` (Linux ≥ 4.7), read without changing it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_by_swap() -> int:
    """The umask via ``os.umask``, which must set one to read one (racy in threads: import time only)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _startup_umask() -> int:
    """The umask at import, while a process starts single-threaded: the fallback without /proc."""
    umask = _umask_from_proc()
    return _umask_by_swap() if umask is None else umask


_UMASK_AT_IMPORT = _startup_umask()


def new_file_mode() -> int:
    """The permission bits ``open(path, "w")`` would give a new file now: ``0o666 & ~umask``."""
    umask = _umask_from_proc()
    return 0o666 & ~(_UMASK_AT_IMPORT if umask is None else umask)


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
    path, commits if the block succeeds and removes the temp file in every case. An OS error
    creating, writing (in the block) or renaming it is an ``OutputError`` naming ``path``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as exc:
            raise OutputError(str(path), os_reason(exc)) from exc
        os.close(fd)
        self.temp = Path(name)

    def commit(self) -> None:
        """Give the written temp file a new file's mode and rename it into place."""
        try:
            os.chmod(self.temp, new_file_mode())
            os.replace(self.temp, self.path)
        except OSError as exc:
            raise OutputError(str(self.path), os_reason(exc)) from exc

    def failed(self, exc: BaseException) -> OutputError:
        """``exc``, raised while writing the temp file, as an error naming the target."""
        return exc if isinstance(exc, OutputError) else OutputError(str(self.path), os_reason(exc))

    def discard(self) -> None:
        """Remove the temp file if it is still there (after a failure; a no-op after commit)."""
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


def remove_stale_temp_files(directory: Path, suffixes: Iterable[str]) -> int:
    """Delete the temp files that killed writers of targets named ``*<suffix>`` left below
    ``directory``; return how many.

    Only call this while holding the directory (``tasks.output_lock``): a live writer's
    temp files look the same.
    """
    patterns = [f".*{suffix}.*.tmp" for suffix in suffixes]
    removed = 0
    for temp in directory.rglob(".*.tmp"):  # one walk of the output, whatever the suffixes
        if any(fnmatch.fnmatchcase(temp.name, pattern) for pattern in patterns):
            temp.unlink(missing_ok=True)
            removed += 1
    return removed
