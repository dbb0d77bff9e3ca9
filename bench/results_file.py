"""``bench/results.md``: one main table (``make bench``) followed by one section per benchmark."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, section: str) -> None:
    """Put ``section`` into ``path`` (made if missing) in place of the one with the same ``## ``
    title, or at the end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    title = section.split(" (", 1)[0].split("\n", 1)[0]
    text = path.read_text() if path.exists() else ""
    # The title whole: "## User script" is not "## User script on a default prefect server start".
    starts = [text.find(f"\n{title}{end}") for end in (" (", "\n")]
    start = max(starts) if min(starts) < 0 else min(starts)
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + text[end:] if end >= 0 else text[:start]
    path.write_text(text.rstrip("\n") + "\n\n" + section)
