"""Shared fixtures: an isolated Prefect home, a real Prefect server, the shared corpus."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PrefectServer, free_port, run_temp_folder, seeded_home, stop_process_group, wait_for_http

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("POOLFLOW_CORPUS", REPO.parent / "shared" / "corpus" / "kowiki"))
CORPUS_FILES = 20
CORPUS_DOCUMENTS = 4274


def _run_temp_folder() -> str | None:
    """Point the temp folder of every process this test run starts at one folder under the
    system's, which the run removes at its end: Prefect homes, servers' databases, outputs, and
    what processes killed on purpose leave (multiprocessing's ``pymp-*``) would otherwise pile
    up in a shared ``/tmp`` from run to run. pytest-xdist's workers and tests' nested runs
    inherit it; returns the folder if this process made it (and so removes it).

    This process keeps the system's temp folder for its own files: multiprocessing removes its
    folder there at exit, after the removal below (fixtures put their homes in the run's
    folder themselves: ``run_temp_folder``)."""
    if os.environ.get("POOLFLOW_TEST_TMP"):
        return None
    folder = tempfile.mkdtemp(prefix="poolflow-tests-")
    os.environ.update(POOLFLOW_TEST_TMP=folder, TMPDIR=folder)
    return folder


_OWN_TEMP_FOLDER = _run_temp_folder()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the run's temp folder once every test, fixture and xdist worker has finished."""
    if _OWN_TEMP_FOLDER:
        shutil.rmtree(_OWN_TEMP_FOLDER, ignore_errors=True)


# Prefect reads its settings when imported: isolate it before any test module imports it.
_PREFECT_HOME = tempfile.mkdtemp(prefix="poolflow-test-prefect-", dir=run_temp_folder())
os.environ["PREFECT_HOME"] = _PREFECT_HOME
# Persisted results and the servers' memo too: Prefect 3.7 keeps them in ~/.prefect whatever the
# home says, so records of one test run were found by the next one whose tmp_path had the same name.
os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = os.path.join(_PREFECT_HOME, "storage")
os.environ["PREFECT_MEMO_STORE_PATH"] = os.path.join(_PREFECT_HOME, "memo_store.toml")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# Flows run in this process use Prefect's own ephemeral API; a fresh database takes longer
# than its 20 s start-up limit on a busy 2-core machine (`poolflow` commands start their own).
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "600"
os.environ.pop("PREFECT_API_URL", None)
# Each command's server ends with it, as the tests of starts, ends and faults expect; servers
# kept between commands are tested with this unset (``test_kept_api``).
os.environ["POOLFLOW_API_IDLE"] = "0"


# The local S3 (moto) that the fsspec tests use. Worker processes are forked from a server
# started early in the session, so its address must be in the environment from the start.
S3_PORT = free_port()
os.environ.update(
    AWS_ENDPOINT_URL=f"http://127.0.0.1:{S3_PORT}",
    AWS_ACCESS_KEY_ID="poolflow-test",
    AWS_SECRET_ACCESS_KEY="poolflow-test",
    AWS_DEFAULT_REGION="us-east-1",
)


@pytest.fixture(scope="session", autouse=True)
def current_database() -> None:
    """This test process's Prefect home starts with a current database, as after a first run
    (first runs are tested with homes of their own: ``test_local_api``)."""
    seeded_home(Path(_PREFECT_HOME))


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real ``prefect server start`` on a free loopback port, its database already current;
    yields its API URL."""
    home = Path(tempfile.mkdtemp(prefix="poolflow-test-server-", dir=run_temp_folder()))
    server = PrefectServer(seeded_home(home), free_port())
    server.start()
    try:
        yield server.api_url
    finally:
        from poolflow.local_api import flush_to_api

        flush_to_api()  # the logs Prefect still holds for it, rather than failing at exit
        server.stop()


@pytest.fixture
def prefect_api(prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point this test process's Prefect client at the session's server, for one test.

    Per test, not per session: a test that asks for no API (``local_api``'s tests) must not
    find the URL left behind by whichever test ran before it in the same process. In the
    environment too, for the processes a test starts (Prefect's process pool workers read it
    there).

    Also in the settings Prefect read from the environment when imported, which its threads
    that run outside any context use: the thread of Prefect's own ``ProcessPoolTaskRunner``
    that forwards its workers' events and logs would otherwise find no API and start Prefect's
    ephemeral server in this process (once for ten minutes on a loaded machine).
    """
    from prefect.context import refresh_global_settings_context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    refresh_global_settings_context()
    try:
        with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
            yield prefect_server
    finally:
        monkeypatch.delenv("PREFECT_API_URL")
        refresh_global_settings_context()


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The shared kowiki corpus; missing is a failure in CI and a skip elsewhere."""
    if not (CORPUS / "AA" / "wiki_00").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared corpus missing at {CORPUS}; CI must provide ../shared")
        pytest.skip(f"shared corpus not found at {CORPUS}")
    return CORPUS


@pytest.fixture
def served(tmp_path: Path, prefect_server: str) -> Iterator[object]:
    """`poolflow serve` with a 4-file sample corpus in ``tmp_path`` (see test_deployments)."""
    from prefect_helpers import start_serving

    serving = start_serving(tmp_path, prefect_server)
    yield serving
    stop_process_group(serving.process)


@pytest.fixture(scope="session")
def s3_bucket() -> Iterator[str]:
    """A real S3 API (moto's server) on 127.0.0.1 with an empty bucket; yields ``s3://bucket``."""
    import s3fs

    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(S3_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{S3_PORT}/moto-api/")
        s3fs.S3FileSystem().mkdir("poolflow-test")
        yield "s3://poolflow-test"
    finally:
        stop_process_group(process)
