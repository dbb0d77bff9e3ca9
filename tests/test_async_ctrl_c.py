"""The one signal handler the runner changes, and only in an async flow: see ``runners/async_ctrl_c``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import run_user_script

HANDLERS = """\
import asyncio
import signal

from prefect import flow

from poolflow import MultiprocessingTaskRunner


def name(handler):
    if handler is signal.default_int_handler:
        return "python"
    return type(getattr(getattr(handler, "func", handler), "__self__", None)).__name__


@flow(task_runner=MultiprocessingTaskRunner(1))
async def async_probe():
    return name(signal.getsignal(signal.SIGINT))


@flow(task_runner=MultiprocessingTaskRunner(1))
def sync_probe():
    return name(signal.getsignal(signal.SIGINT))


async def main():
    before = name(signal.getsignal(signal.SIGINT))
    during = await async_probe()
    print("async", before, during, name(signal.getsignal(signal.SIGINT)))


if __name__ == "__main__":
    asyncio.run(main())
    before = name(signal.getsignal(signal.SIGINT))
    print("sync", before, sync_probe(), name(signal.getsignal(signal.SIGINT)))
"""


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.run has no handler before 3.11")
def test_only_an_async_flow_gets_pythons_ctrl_c_and_only_while_its_runner_runs(
    tmp_path: Path, prefect_server: str
) -> None:
    done = run_user_script(tmp_path, "handlers.py", HANDLERS, prefect_server)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(("async ", "sync "))]
    # before the flow, inside it, after it
    assert lines == ["async Runner python Runner", "sync python python python"], done.stdout
