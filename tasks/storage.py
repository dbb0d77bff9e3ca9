"""Where the output lives: a local directory, or an fsspec URL every worker can reach.

For a URL (``s3://bucket/run``, ``gs://…``) a step runs through ``run_staged``: what it reads
of the output is downloaded into a local temporary directory, the step's local code runs
there unchanged (writing atomically), and each file it wrote is uploaded with a single ``put``
(an object appears whole or not at all). ``file://`` URLs are plain local paths.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

T = TypeVar("T")


def is_remote(location: str) -> bool:
    """True for fsspec URLs other than ``file://``."""
    return "://" in location and not location.startswith("file://")


def local_path(location: str) -> str:
    """``file:///a/b`` → ``/a/b``; other locations unchanged."""
    return location.removeprefix("file://")


def check_protocol(location: str) -> None:
    """Raise ValueError unless fsspec knows the URL's protocol (and its package is installed)."""
    import fsspec  # here, not at import: a local run needs none of its import time

    protocol = location.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except (ValueError, ImportError) as exc:
        raise ValueError(f"cannot write to {location!r}: {exc}") from None


def join(location: str, *parts: str) -> str:
    """``location/part/…`` for URLs."""
    return "/".join([location.rstrip("/"), *parts])


def _filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem of ``url`` and the path on it."""
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(url)
    return fs, path


@contextmanager
def staging() -> Iterator[Path]:
    """A local directory that mirrors the part of the remote output a task touches."""
    with tempfile.TemporaryDirectory(prefix="poolflow-stage-") as directory:
        yield Path(directory)


def download_if_exists(url: str, local: Path) -> None:
    """Copy ``url`` to ``local`` if there is something at ``url``."""
    fs, path = _filesystem(url)
    fs.invalidate_cache(path)  # another process may have written it since this one last looked
    if fs.exists(path):
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(path, str(local))


def upload(local: Path, url: str) -> None:
    """Put ``local`` at ``url`` in one write."""
    fs, path = _filesystem(url)
    fs.put_file(str(local), path)


def _file_versions(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file below ``root`` by relative path, with what tells its versions apart.

    The steps' writers rename a new file into place, so a rewritten file has a new inode.
    """
    versions = {}
    for path in root.rglob("*"):
        if path.is_file():
            status = path.stat()
            versions[path.relative_to(root).as_posix()] = (status.st_ino, status.st_size, status.st_mtime_ns)
    return versions


def run_staged(output_url: str, reads: Iterable[str], step: Callable[[str], T]) -> T:
    """Run a local ``step`` for the remote output ``output_url`` and return what it returns.

    ``reads`` are the paths, relative to the output, that the step reads: each one that exists
    is downloaded into a local stage first. ``step`` gets the stage's path as its output
    directory. Then every file the step created or replaced in the stage is uploaded to the
    same relative path under ``output_url``; what it only read is not sent back. If the step
    raises, nothing is uploaded.
    """
    with staging() as stage:
        for relative in reads:
            download_if_exists(join(output_url, relative), stage / relative)
        downloaded = _file_versions(stage)
        result = step(str(stage))
        for relative, version in _file_versions(stage).items():
            if downloaded.get(relative) != version:
                upload(stage / relative, join(output_url, relative))
        return result
