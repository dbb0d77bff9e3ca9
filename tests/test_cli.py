"""The ``poolflow`` command: bad arguments fail fast; run, sample and demo work."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

POOLFLOW = str(Path(sys.executable).parent / "poolflow")


def poolflow(*args: str, api_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return subprocess.run([POOLFLOW, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "{tmp}/missing", "-o", "{tmp}/out"], "does not exist"),
        (["run", "{tmp}", "-o", "{tmp}/out", "--processes", "0"], "at least 1"),
        (["run", "{tmp}", "-o", "{tmp}/out", "--parser", "lxml"], "invalid choice"),
        (["run", "{tmp}", "-o", "{tmp}/inside"], "inside the input"),
        (["run", "{tmp}", "-o", "{tmp}/out", "--encoding", "klingon"], "unknown encoding"),
    ],
)
def test_bad_arguments_fail_fast_with_one_line_and_write_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = poolflow(*[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2
    assert message in result.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_sample_then_run_writes_report(tmp_path: Path, prefect_server: str) -> None:
    sample = poolflow("sample", str(tmp_path / "corpus"), "--files", "3", "--docs", "5")
    assert sample.returncode == 0, sample.stderr
    out = str(tmp_path / "out")
    run = poolflow("run", str(tmp_path / "corpus"), "-o", out, "--processes", "2", api_url=prefect_server)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "report.xlsx").exists()
    # One line of what runs, the bar, a summary; Prefect's per-task lines only with --verbose.
    assert run.stderr.startswith(f"poolflow: {tmp_path / 'corpus'}/**/wiki_* -> {out} on 2 processes")
    assert "items" in run.stderr and "3/3" in run.stderr  # the terminal progress bar
    assert "3: 3 done, 0 skipped as current, 0 failed" in run.stderr
    assert f"report: {out}/report.xlsx\n" in run.stderr
    assert f"flow run: {prefect_server.removesuffix('/api')}/runs/flow-run/" in run.stderr
    assert "Finished in state" not in run.stderr and " seconds ---" not in run.stderr

    verbose = poolflow(
        "run", str(tmp_path / "corpus"), "-o", out, "--verbose", "--parquet", api_url=prefect_server
    )
    assert verbose.returncode == 0, verbose.stderr
    assert f"parquet: {out}/report.parquet\n" in verbose.stderr
    assert (tmp_path / "out" / "report.parquet").exists()
    assert "Finished in state Completed" in verbose.stderr and " seconds ---" in verbose.stderr
    assert "3: 0 done, 3 skipped as current, 0 failed" in verbose.stderr


def test_run_with_a_failed_item_exits_non_zero(tmp_path: Path, prefect_server: str) -> None:
    poolflow("sample", str(tmp_path / "corpus"), "--files", "2", "--docs", "2")
    (tmp_path / "corpus" / "AA" / "wiki_05").write_bytes(b"\xff\xfe\x00bad")
    run = poolflow("run", str(tmp_path / "corpus"), "-o", str(tmp_path / "out"), api_url=prefect_server)
    assert run.returncode == 1
    assert "wiki-report: Failed" in run.stderr
    assert "failed: AA/wiki_05: binary file (contains NUL bytes), not WikiExtractor text\n" in run.stderr
    assert "Traceback" not in run.stderr


def test_demo_runs_items_on_several_processes(prefect_server: str) -> None:
    demo = poolflow(
        "demo", "--items", "4", "--processes", "2", "--max-seconds", "0.2", api_url=prefect_server
    )
    assert demo.returncode == 0, demo.stderr
    assert "4 items on 2 worker processes" in demo.stderr


def test_an_api_that_is_down_at_the_start_gives_one_line_exit_3_and_writes_nothing(tmp_path: Path) -> None:
    from helpers import free_port

    corpus, out = tmp_path / "corpus", tmp_path / "out"
    assert poolflow("sample", str(corpus), "--files", "1", "--docs", "2").returncode == 0
    down = f"http://127.0.0.1:{free_port()}/api"
    # The check's own deadline is tested below; a command that hung would fail at the
    # helper's timeout. How long the command takes to start depends on the machine's load.
    result = poolflow("run", str(corpus), "-o", str(out), api_url=down)
    assert result.returncode == 3
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith(f"poolflow: error: Prefect's API at {down} does not answer")
    assert "prefect server start" in lines[-1]
    assert not out.exists()


def test_the_reachability_check_waits_its_timeout_then_gives_up(tmp_path: Path) -> None:
    from helpers import free_port

    from poolflow.local_api import ApiStartError, check_reachable
    from poolflow.prefect_settings import ApiSettings

    down = f"http://127.0.0.1:{free_port()}/api"
    settings = ApiSettings(api_url=down, api_key=None, home=tmp_path, database_url=None)
    started = time.monotonic()
    with pytest.raises(ApiStartError, match="does not answer"):
        check_reachable(settings, timeout=1.0)
    waited = time.monotonic() - started
    # Not before its timeout; after it, within one more attempt (a refused connection fails
    # at once, so that is a quarter-second sleep), bounded loosely for a loaded machine.
    assert 1.0 <= waited < 15.0, waited
