"""The runner's engine threads: calls run in order, and a stuck one never holds up the end."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from poolflow.runners.engine_threads import EngineThreads


def _stuck(started: threading.Event, release: threading.Event) -> None:
    started.set()
    release.wait()


def test_calls_settle_their_futures_and_those_still_queued_are_cancelled_at_shutdown() -> None:
    engines = EngineThreads(1, "test-engine")
    assert engines.submit(sum, [1, 2]).result(timeout=10) == 3
    assert isinstance(engines.submit(lambda: 1 / 0).exception(timeout=10), ZeroDivisionError)
    started, release = threading.Event(), threading.Event()
    running = engines.submit(_stuck, started, release)
    assert started.wait(10)
    queued = engines.submit(sum, [3, 4])
    assert engines.shutdown(timeout=0.2) == ["test-engine_0"]
    assert queued.cancelled()
    with pytest.raises(RuntimeError, match="after shutdown"):
        engines.submit(print)
    release.set()
    running.result(timeout=10)


def test_shutdown_with_a_limit_names_the_threads_still_running() -> None:
    engines = EngineThreads(2, "test-engine")
    started, release = threading.Event(), threading.Event()
    engines.submit(_stuck, started, release)
    assert started.wait(10)
    assert engines.submit(sum, [1, 2]).result(timeout=10) == 3
    began = time.monotonic()
    left = engines.shutdown(timeout=0.5)
    assert len(left) == 1 and left[0].startswith("test-engine_")
    assert time.monotonic() - began < 5
    release.set()


def test_a_stuck_engine_thread_does_not_hold_up_the_interpreters_exit() -> None:
    script = (
        "import threading\n"
        "from poolflow.runners.engine_threads import EngineThreads\n"
        "engines, started = EngineThreads(1, 'e'), threading.Event()\n"
        "engines.submit(lambda: started.set() or threading.Event().wait())\n"
        "started.wait()\n"
        "print(engines.shutdown(timeout=0.2))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "['e_0']", done.stderr
