"""Output files get the mode the user's umask gives any new file, not mkstemp's 0600."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from poolflow.tasks.sample import write_sample_corpus

REPO = Path(__file__).resolve().parents[1]

RUN = """
import sys
from poolflow.flows.wiki_report import wiki_report
state = wiki_report(sys.argv[1], sys.argv[2], processes=2, parquet=True, return_state=True)
sys.exit(0 if state.is_completed() else 1)
"""


def written_files(out: Path) -> list[Path]:
    """Every regular file below ``out``."""
    return sorted(p for p in out.rglob("*") if p.is_file())


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_a_run_under_a_umask_writes_files_with_the_mode_it_gives(
    tmp_path: Path, prefect_server: str, umask: int
) -> None:
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    write_sample_corpus(corpus, files=3, docs_per_file=4)
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    result = subprocess.run(
        [sys.executable, "-c", RUN, str(corpus), str(out)],
        umask=umask,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    files = written_files(out)
    assert {p.relative_to(out).as_posix() for p in files} >= {
        "report.xlsx",
        "report.parquet",
        "items/AA/wiki_00.xlsx",
        "items/AA/wiki_01.xlsx",
        "items/AA/wiki_02.xlsx",
    }
    modes = {p.relative_to(out).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert modes == dict.fromkeys(modes, oct(0o666 & ~umask))
