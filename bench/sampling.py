"""Sample the processes of one benchmarked run: its peak resident memory and CPU seconds by role.

A run's processes are its own tree and, for a run on a kept API server (``poolflow.kept_api``),
that server and the warm interpreter whose copy runs the command outside the tree
(``poolflow.warm_interpreter``). Finding them means reading every process on the machine
(about 3 ms here, every 50 ms: 7 % of a core taken from the run being measured), so they are
found again only every ``rescan`` seconds; their memory and CPU are read at every sample.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import psutil

from poolflow import kept_api

ROLES = ("flow", "workers", "api")  # the process running the flow (or loop), its pool, Prefect's server


def kept_server(home: str) -> tuple[psutil.Process, float] | None:
    """The API server an earlier command kept on ``home`` and its CPU seconds so far: a run on
    it is charged its RSS and the CPU it adds."""
    server = kept_api.recorded(Path(home))
    if server is None:
        return None
    try:
        process = psutil.Process(server.pid)
        times = process.cpu_times()
    except psutil.Error:
        return None
    return process, times.user + times.system


def warm_interpreters(home: str) -> list[psutil.Process]:
    """The interpreters kept with ``home``'s API server: a command handed to one runs in a copy
    of it, outside the benchmarked process's tree."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if any("poolflow.warm_interpreter" in part for part in cmdline) and home in cmdline:
            found.append(process)
    pids = {process.pid for process in found}
    return [process for process in found if process.ppid() not in pids]  # not their copies


def _role(process: psutil.Process, flow: bool) -> str:
    if flow:
        return "flow"
    command = " ".join(process.cmdline())
    # poolflow's server, or the ephemeral one Prefect starts itself (stock modes)
    return "api" if "poolflow.api_server" in command or "prefect.server.api.server" in command else "workers"


class RunSampler:
    """The processes of the run rooted at ``root``: sampled with ``sample``, found every ``rescan`` s."""

    def __init__(
        self,
        root: int,
        server: tuple[psutil.Process, float] | None = None,
        interpreters: list[psutil.Process] | None = None,
        rescan: float = 0.5,
    ) -> None:
        self.root = psutil.Process(root)
        self.server = server
        self.interpreters = interpreters or []
        self.rescan = rescan
        self.peak = 0
        self.cpu: dict[int, tuple[str, float]] = {}  # by PID: role, CPU seconds at its last sample
        self._members: list[tuple[psutil.Process, str | None]] = []  # None: memory only
        self._found_at = -float("inf")

    def sample(self) -> None:
        """Read every member's memory and CPU (finding the members again when due)."""
        if time.monotonic() - self._found_at >= self.rescan:
            self._find()
        total = 0
        for process, role in self._members:
            try:
                with process.oneshot():
                    total += process.memory_info().rss
                    if role is not None:
                        times = process.cpu_times()
                        self.cpu[process.pid] = (role, times.user + times.system - self._before(process))
            except psutil.Error:  # exited since it was found: its last sample stands
                continue
        self.peak = max(self.peak, total)

    def cpu_by_role(self) -> dict[str, float]:
        return {role: sum(s for r, s in self.cpu.values() if r == role) for role in ROLES}

    def _before(self, process: psutil.Process) -> float:
        """CPU seconds a kept server had spent before this run."""
        return self.server[1] if self.server is not None and process.pid == self.server[0].pid else 0.0

    def _find(self) -> None:
        # Roles are asked every time: just after fork, before exec, a child still shows its
        # parent's command.
        members: list[tuple[psutil.Process, str | None]] = []
        roots = [self.root]
        for interpreter in self.interpreters:
            members.append((interpreter, None))
            with contextlib.suppress(psutil.Error):
                roots += interpreter.children()  # copies running commands (each runs the flow)
        for root in roots:
            with contextlib.suppress(psutil.Error):
                members += [(root, "flow")]
                members += [(child, _role(child, flow=False)) for child in root.children(recursive=True)]
        if self.server is not None:
            members.append((self.server[0], "api"))
        self._members = members
        self._found_at = time.monotonic()
