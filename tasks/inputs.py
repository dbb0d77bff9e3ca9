"""The work-list: every file under the input directory that matches the pattern, and every
path that could not be looked at.

``Path.glob`` skips symlinked directories and unreadable ones without a word, so a dump
whose ``AB`` is a link, or whose ``AC`` is mode 000, lost those documents silently. This
walk follows links to directories (a link back to one of its own ancestors is a loop: named
once, never entered), and returns what it could not list or resolve next to the items, so
the flow reports each as a failed row.

Patterns are globs on the path relative to the input: ``*`` and ``?`` stay within one
path segment, ``[...]`` is a character class, and ``**`` is any number of directories
(none included), so ``**/wiki_*`` matches ``wiki_00`` and ``AA/wiki_00``.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Unreadable:
    """A path under the input that could not be listed or resolved, and why."""

    path: str  # relative POSIX path; "." is the input directory itself
    reason: str


@dataclass
class InputListing:
    """What ``list_inputs`` found."""

    items: list[str] = field(default_factory=list)  # matching files, sorted relative POSIX paths
    unreadable: list[Unreadable] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)  # links back to an ancestor, not entered


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """The regular expression a relative POSIX path must match in full for ``pattern``."""
    parts: list[str] = []
    for segment in pattern.strip("/").split("/"):
        if segment == "**":
            parts.append("(?:[^/]+/)*")
        else:
            parts.append(_segment_regex(segment) + "/")
    return re.compile("".join(parts).removesuffix("/") + r"\Z")


def _segment_regex(segment: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := segment.find("]", i + 2)) != -1:
            body = segment[i + 1 : end].replace("\\", "\\\\")
            out.append("[^" + body[1:] + "]" if body[0] in "!^" else "[" + body + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def list_inputs(input_dir: Path, pattern: str) -> InputListing:
    """Walk ``input_dir`` (following links to directories) for files matching ``pattern``.

    Hidden entries (names starting with ".") are not inputs: poolflow's own temp files and
    editors' swap files live there.
    """
    listing = InputListing()
    regex = pattern_regex(pattern)
    root = os.stat(input_dir)
    _walk(input_dir, "", frozenset({(root.st_dev, root.st_ino)}), regex, listing)
    listing.items.sort()
    return listing


def _walk(
    input_dir: Path,
    relative: str,
    ancestors: frozenset[tuple[int, int]],
    regex: re.Pattern[str],
    listing: InputListing,
) -> None:
    directory = input_dir / relative if relative else input_dir
    try:
        names = sorted(entry.name for entry in os.scandir(directory))
    except OSError as exc:
        listing.unreadable.append(Unreadable(relative or ".", f"cannot list directory: {exc.strerror}"))
        return
    for name in names:
        if name.startswith("."):
            continue
        path = f"{relative}/{name}" if relative else name
        try:
            info = os.stat(input_dir / path)
        except OSError as exc:
            listing.unreadable.append(Unreadable(path, _stat_problem(input_dir / path, exc)))
            continue
        if stat.S_ISDIR(info.st_mode):
            key = (info.st_dev, info.st_ino)
            if key in ancestors:
                listing.loops.append(path)
            else:
                _walk(input_dir, path, ancestors | {key}, regex, listing)
        elif regex.match(path):
            listing.items.append(path)


def _stat_problem(path: Path, exc: OSError) -> str:
    if path.is_symlink():
        return f"dangling symbolic link to {os.readlink(path)}"
    return f"cannot read: {exc.strerror}"


def list_items(input_dir: Path, pattern: str) -> list[str]:
    """The matching files only (benchmarks and tools that do not report problems)."""
    return list_inputs(input_dir, pattern).items
