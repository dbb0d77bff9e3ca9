"""Flow runs whose ``poolflow`` process was killed are marked Crashed by the next command.

A process killed with SIGKILL cannot report its own end, so its flow run stayed RUNNING in
the database for ever. Each command tags its flow runs with its host, PID and process start
time; when a command starts, RUNNING flow runs tagged by a process of this host that no
longer exists (or whose PID now belongs to another process) are set to Crashed, with their
unfinished task runs.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

import psutil

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

TAG_PREFIX = "poolflow-process:"
_PAGE = 200  # the most the API returns at once


@dataclass(frozen=True)
class ProcessTag:
    """Which process ran a flow run: ``poolflow-process:<host>:<pid>:<start time>``."""

    host: str
    pid: int
    started: float

    def __str__(self) -> str:
        return f"{TAG_PREFIX}{self.host}:{self.pid}:{self.started:.2f}"

    @classmethod
    def of_this_process(cls) -> ProcessTag:
        return cls(socket.gethostname(), psutil.Process().pid, psutil.Process().create_time())

    @classmethod
    def parse(cls, tag: str) -> ProcessTag | None:
        host, _, rest = tag.removeprefix(TAG_PREFIX).partition(":")
        pid, _, started = rest.partition(":")
        try:
            return cls(host, int(pid), float(started))
        except ValueError:
            return None

    def is_gone(self) -> bool:
        """True when this host has no such process any more (a reused PID does not count)."""
        try:
            started: float = psutil.Process(self.pid).create_time()
        except psutil.NoSuchProcess:
            return True
        return abs(started - self.started) > 0.05


@contextmanager
def tagged_with_this_process() -> Iterator[None]:
    """Flow runs created inside carry this process's tag."""
    from prefect import tags

    with tags(str(ProcessTag.of_this_process())):
        yield


def mark_crashed_runs() -> list[str]:
    """Set RUNNING flow runs of dead poolflow processes of this host to Crashed; their names."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    host = socket.gethostname()
    running = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])))
    marked = []
    with get_client(sync_client=True) as client:
        for flow_run in client.read_flow_runs(flow_run_filter=running, limit=_PAGE):
            owner = next((ProcessTag.parse(t) for t in flow_run.tags if t.startswith(TAG_PREFIX)), None)
            if owner is None or owner.host != host or not owner.is_gone():
                continue
            _crash(client, flow_run.id, owner)
            marked.append(flow_run.name)
    return marked


def _crash(client: SyncPrefectClient, flow_run_id: UUID, owner: ProcessTag) -> None:
    """Crash the flow run and whatever of its task runs had not finished."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    message = f"the poolflow process {owner.pid} that ran it is gone (killed?); rerun to resume"
    left = [StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED]
    unfinished = TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=left)))
    of_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    while page := client.read_task_runs(flow_run_filter=of_run, task_run_filter=unfinished, limit=_PAGE):
        for task_run in page:  # each one leaves the filter once crashed
            client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
    client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)
