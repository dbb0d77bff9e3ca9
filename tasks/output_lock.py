"""One run per output directory at a time.

Two runs writing one output collided: the second one's start-up cleanup deleted the first
one's in-flight temp files and the first lost items. A run holds an exclusive ``flock`` on
``OUT/.poolflow.lock`` from before its cleanup until its report is written; a second run
refuses at once, naming the holder. The kernel drops the lock when its process dies, so a
killed run never leaves the directory locked.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".poolflow.lock"


class OutputInUse(RuntimeError):
    """Another run holds the output directory."""


@contextmanager
def exclusive_output(output_dir: Path) -> Iterator[None]:
    """Hold ``output_dir`` for this process, or raise ``OutputInUse`` at once."""
    output_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(output_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
            raise OutputInUse(
                f"output directory {output_dir} is in use by another poolflow run ({holder}); "
                "wait for it to finish or choose another output directory"
            ) from None
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
