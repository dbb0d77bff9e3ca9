"""Write an output file atomically, with the mode a plain new file would get.

The file is written under a temporary name next to its target and renamed into place on
success, so a crash or kill leaves either the previous complete file or none. The temp file
comes from ``tempfile.mkstemp``, which creates it ``0600``; before the rename it gets
``0o666 & ~umask``, so ``report.xlsx`` is as readable as any file the user creates.
"""

from __future__ import annotations

import os
import tempfile
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


class AtomicTarget:
    """A temp path to write ``path``'s content to; ``commit`` renames it over ``path``.

    The temp file is ``.<name>.<random>.tmp`` in the target's directory (created if missing),
    so a killed writer's leftovers are recognisable. As a context manager it yields the temp
    path, commits if the block succeeds and removes the temp file in every case.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        self.temp = Path(name)

    def commit(self) -> None:
        """Give the written temp file a new file's mode and rename it into place."""
        os.chmod(self.temp, new_file_mode())
        os.replace(self.temp, self.path)

    def discard(self) -> None:
        """Remove the temp file if it is still there (after a failure; a no-op after commit)."""
        self.temp.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        return self.temp

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self.commit()
        finally:
            self.discard()
