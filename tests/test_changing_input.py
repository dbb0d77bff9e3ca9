"""An input file that a writer appends to while its item is processed: warned, read once, kept whole.

The writer is a real separate process. It is synchronized, not raced: the item's parse (after
the read) creates a marker file and waits until the writer has appended and says so, so the
append always lands between the read and the end of processing.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

import poolflow.tasks.items
from poolflow.tasks.items import artifact_path, parse_item, read_meta
from poolflow.tasks.parse import ParseResult, parse_exact
from poolflow.tasks.xlsx import join_cells, read_sheet

DOC = '<doc id="{0}" url="u{0}" title="t{0}">\n{1}</doc>\n'
ITEM = "AA/wiki_03"
WARNING = f"{ITEM} changed while it was being read; the report holds the version read at 20"

# Waits for ``read``, appends one document to the file, then creates ``appended``.
APPENDER = """
import os, sys, time
path, read, appended = sys.argv[1:]
deadline = time.monotonic() + 120
while not os.path.exists(read):
    if time.monotonic() > deadline:
        sys.exit("the item was never read")
    time.sleep(0.01)
with open(path, "a", encoding="utf-8") as f:
    f.write('<doc id="99" url="u99" title="late">\\nwritten during the run\\n</doc>\\n')
    f.flush()
    os.fsync(f.fileno())
open(appended, "w").close()
"""


def wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)


def append_during_parse(
    monkeypatch: pytest.MonkeyPatch, source: Path, markers: Path
) -> subprocess.Popen[bytes]:
    """Start the appender process and make the next parse wait until it has appended."""
    markers.mkdir()
    read, appended = markers / "read", markers / "appended"
    writer = subprocess.Popen([sys.executable, "-c", APPENDER, str(source), str(read), str(appended)])
    real_parse = poolflow.tasks.items.parse_text

    def parse_after_the_append(text: str, parser: str = "exact") -> ParseResult:
        read.touch()
        wait_for(appended)
        return real_parse(text, parser)

    monkeypatch.setattr(poolflow.tasks.items, "parse_text", parse_after_the_append)
    return writer


@pytest.mark.parametrize("artifact_was_current", [False, True])
def test_a_file_appended_to_during_its_item_is_warned_about_and_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, artifact_was_current: bool
) -> None:
    bodies = ["first\n", "second\n" * 3, "x" * 40_000 + "\n"]
    source = tmp_path / "in" / ITEM
    source.parent.mkdir(parents=True)
    source.write_text("".join(DOC.format(i, b) for i, b in enumerate(bodies)), encoding="utf-8")
    original = source.read_bytes()
    args = (str(tmp_path / "in"), ITEM, str(tmp_path / "out"))
    if artifact_was_current:
        assert parse_item(*args).result.status == "done"

    writer = append_during_parse(monkeypatch, source, tmp_path / "markers")
    output = parse_item(*args)
    assert writer.wait(timeout=120) == 0

    assert source.read_bytes() != original  # the writer really appended
    assert (output.result.status, output.result.documents, output.result.warnings) == ("done", 3, 1)
    artifact = artifact_path(tmp_path / "out", ITEM)
    (warning,) = [row[0] for row in read_sheet(artifact, "warnings")]
    assert warning.startswith(WARNING) and warning.endswith(" UTC")
    # docs and stats both come from the one read: the version before the append.
    assert [join_cells(row[4:]) for row in read_sheet(artifact, "docs")] == bodies
    assert output.stats[0] == ["0", "1", "2"]
    assert output.stats[1] == [len(b) for b in bodies]
    assert read_meta(artifact)["sha256"] == hashlib.sha256(original).hexdigest()
    assert read_meta(artifact)["warnings"] == "1"

    monkeypatch.undo()
    again = parse_item(*args)  # the file is quiet now: redone from its new content, no warning
    assert (again.result.status, again.result.documents, again.result.warnings) == ("done", 4, 0)
    assert again.stats[0] == [d.id for d in parse_exact(source.read_text(encoding="utf-8")).documents]
