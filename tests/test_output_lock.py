"""One run per output directory: a second run refuses at once and touches nothing of the first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POOLFLOW = str(Path(sys.executable).parent / "poolflow")

# A stand-in for a live run: holds the output as a run does, then sleeps.
HOLDER = """
import sys, time
from pathlib import Path
from poolflow.tasks.output_lock import exclusive_output
with exclusive_output(Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(600)
"""


def test_a_second_run_refuses_at_once_and_leaves_the_live_runs_temp_files(
    tmp_path: Path, prefect_server: str
) -> None:
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    subprocess.run([POOLFLOW, "sample", str(corpus), "--files", "3", "--docs", "4"], check=True)
    in_flight = out / "items" / "AA" / ".wiki_00.xlsx.abc123.tmp"
    in_flight.parent.mkdir(parents=True)
    in_flight.write_bytes(b"a live run is writing this")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        env = {**os.environ, "PREFECT_API_URL": prefect_server}
        args = [POOLFLOW, "run", str(corpus), "-o", str(out), "--processes", "2"]
        second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 1
        assert f"output directory {out} is in use by another poolflow run (pid {holder.pid} on" in (
            second.stderr
        )
        assert in_flight.exists()
        assert not (out / "report.xlsx").exists()
        assert sorted(p.name for p in (out / "items" / "AA").iterdir()) == [in_flight.name]

        # A run that is killed holds nothing: the kernel drops its lock, the rerun cleans up.
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        rerun = subprocess.run([*args, "--verbose"], env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert "(1 stale temp files removed)" in rerun.stderr
        assert not in_flight.exists()
        assert (out / "report.xlsx").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_report_leaves_a_temp_file_the_rerun_removes(tmp_path: Path, prefect_server: str) -> None:
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    subprocess.run([POOLFLOW, "sample", str(corpus), "--files", "2", "--docs", "3"], check=True)
    out.mkdir()
    stale = out / ".report.xlsx.k1ll3d.tmp"
    stale.write_bytes(b"half a report")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    run = subprocess.run(
        [POOLFLOW, "run", str(corpus), "-o", str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert not stale.exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".report")) == []
