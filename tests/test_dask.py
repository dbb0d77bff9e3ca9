"""The same flow on a real Dask cluster: a scheduler and two workers in separate processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port, stop_process_group

from poolflow.flows.wiki_report import wiki_report
from poolflow.tasks.parse import parse_exact
from poolflow.tasks.sample import write_sample_corpus
from poolflow.tasks.xlsx import join_cells, read_sheet

pytestmark = pytest.mark.usefixtures("prefect_api")
BIN = Path(sys.executable).parent


@pytest.fixture
def dask_cluster(prefect_server: str) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1, as on separate machines."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    quiet = {
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
        "start_new_session": True,
        "env": env,
    }
    scheduler = subprocess.Popen(
        [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], **quiet
    )
    workers = [
        subprocess.Popen(
            [
                BIN / "dask",
                "worker",
                address,
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
                "--name",
                f"worker-{n}",
            ],
            **quiet,
        )
        for n in range(2)
    ]
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address, workers
    finally:
        for process in [*workers, scheduler]:
            stop_process_group(process)


def report_documents(out: Path) -> list[tuple[str, str, str, str]]:
    return [(r[0], r[1], r[3], join_cells(r[4:])) for r in read_sheet(out / "report.xlsx", "docs")]


@pytest.mark.corpus
def test_dask_cluster_report_equals_the_multiprocessing_report(
    corpus: Path, tmp_path: Path, dask_cluster: tuple[str, list[subprocess.Popen[bytes]]]
) -> None:
    address, _ = dask_cluster
    on_dask = wiki_report(
        str(corpus), str(tmp_path / "dask"), runner="dask", dask_address=address, return_state=True
    )
    on_pool = wiki_report(str(corpus), str(tmp_path / "pool"), processes=2, return_state=True)
    assert on_dask.is_completed() and on_pool.is_completed()
    dask_docs = report_documents(tmp_path / "dask")
    assert len(dask_docs) == 4274
    assert dask_docs == report_documents(tmp_path / "pool")
    assert list(read_sheet(tmp_path / "dask" / "report.xlsx", "stats")) == list(
        read_sheet(tmp_path / "pool" / "report.xlsx", "stats")
    )


@pytest.mark.soak
def test_a_dask_worker_killed_mid_run_loses_no_item(
    tmp_path: Path, dask_cluster: tuple[str, list[subprocess.Popen[bytes]]]
) -> None:
    address, workers = dask_cluster
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    write_sample_corpus(corpus, files=30, docs_per_file=120)

    def kill_a_worker_once_work_started() -> None:
        deadline = time.monotonic() + 120
        while not list(out.rglob("*.xlsx")) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(workers[0].pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_a_worker_once_work_started)
    killer.start()
    state = wiki_report(str(corpus), str(out), runner="dask", dask_address=address, return_state=True)
    killer.join()
    assert workers[0].wait(10) == -signal.SIGKILL

    summary = {row[0]: row[1] for row in read_sheet(out / "report.xlsx", "summary")}
    assert sorted(summary) == [f"AA/wiki_{n:02d}" for n in range(30)]
    # "skipped": Dask re-ran a task whose worker died after its artifact was complete; the
    # rerun found that artifact current and kept it.
    assert set(summary.values()) <= {"done", "skipped", "failed"}
    assert state.is_completed() or " items failed; see the summary sheet of " in (state.message or "")
    expected = []
    for item, status in sorted(summary.items()):
        if status in ("done", "skipped"):
            text = (corpus / item).read_text(encoding="utf-8")
            expected += [(item, d.id, d.title, d.text) for d in parse_exact(text).documents]
    assert report_documents(out) == expected
