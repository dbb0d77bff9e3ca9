"""Where the output lives: a local directory, or an fsspec URL every worker can reach.

For a URL (``s3://bucket/run``, ``gs://…``) each task stages its files in a local temporary
directory — reading there what already exists, writing there atomically — and uploads a
finished file with a single ``put`` (an object appears whole or not at all). ``file://``
URLs are plain local paths.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec
from fsspec.core import url_to_fs


def is_remote(location: str) -> bool:
    """True for fsspec URLs other than ``file://``."""
    return "://" in location and not location.startswith("file://")


def local_path(location: str) -> str:
    """``file:///a/b`` → ``/a/b``; other locations unchanged."""
    return location.removeprefix("file://")


def check_protocol(location: str) -> None:
    """Raise ValueError unless fsspec knows the URL's protocol (and its package is installed)."""
    protocol = location.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except (ValueError, ImportError) as exc:
        raise ValueError(f"cannot write to {location!r}: {exc}") from None


def join(location: str, *parts: str) -> str:
    """``location/part/…`` for URLs."""
    return "/".join([location.rstrip("/"), *parts])


@contextmanager
def staging() -> Iterator[Path]:
    """A local directory that mirrors the part of the remote output a task touches."""
    with tempfile.TemporaryDirectory(prefix="poolflow-stage-") as directory:
        yield Path(directory)


def download_if_exists(url: str, local: Path) -> None:
    """Copy ``url`` to ``local`` if there is something at ``url``."""
    fs, path = url_to_fs(url)
    fs.invalidate_cache(path)  # another process may have written it since this one last looked
    if fs.exists(path):
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(path, str(local))


def upload(local: Path, url: str) -> None:
    """Put ``local`` at ``url`` in one write."""
    fs, path = url_to_fs(url)
    fs.put_file(str(local), path)
