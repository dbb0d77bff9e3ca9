"""A full disk is one clear line: the path, that a rerun resumes; items already written stay."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from poolflow.tasks.items import read_meta

POOLFLOW = str(Path(sys.executable).parent / "poolflow")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 6 MiB tmpfs (the tests run as root), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)


@pytest.mark.corpus
def test_a_full_disk_is_one_line_and_the_rerun_resumes(
    corpus: Path, small_disk: Path, prefect_server: str
) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    args = [POOLFLOW, "run", str(corpus), "-o", str(small_disk / "out"), "--processes", "2"]

    full = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)

    assert full.returncode == 1
    assert "Traceback" not in full.stderr
    errors = [line for line in full.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, full.stderr
    assert f"error: cannot write {small_disk}/out/" in errors[0]
    assert "No space left on device" in errors[0] and "rerun the same command: it resumes" in errors[0]
    assert "report not written: cannot write" in full.stderr
    assert len(full.stderr.splitlines()) < 30, full.stderr
    written = sorted((small_disk / "out" / "items").rglob("wiki_*.xlsx"))
    assert 0 < len(written) < 20
    assert all(read_meta(path).get("format") for path in written), "a half-written artifact"

    subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"20: {20 - len(written)} done, {len(written)} skipped as current, 0 failed" in rerun.stderr
    assert (small_disk / "out" / "report.xlsx").exists()
