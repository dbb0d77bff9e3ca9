"""Flow-process memory when mapping many small items: ``python -m bench.many_tasks [--record] N [N …]``.

Each N runs in a fresh process: a flow streams N trivial task runs through
``MultiprocessingTaskRunner.imap`` (``max_pending=1000``) and reports the flow process's
resident memory before mapping, at each tenth of the items, and its peak; a bounded map
shows a flat line. By default ``record_timeout=0`` skips the final wait for the API to
record every run, which at this scale is the API's time, not poolflow's; ``--record``
keeps that wait and reports how long the flow took to end after its last result
(``exit_seconds``). Set ``PREFECT_API_URL`` to use a running server instead of the
embedded one.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from typing import Any

from prefect import flow, task

from poolflow.runners import MultiprocessingTaskRunner


@task
def small(x: int) -> int:
    return x + 1


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# Prefect annotates a flow's task runner as TaskRunner[PrefectFuture[Any]]; TaskRunner is invariant in
# its future type, so no TaskRunner[PrefectConcurrentFuture[Any]] (Prefect's own thread pool included) fits.
@flow(task_runner=MultiprocessingTaskRunner(2, record_timeout=0))  # type: ignore[arg-type]
def many(count: int) -> dict[str, Any]:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    runner = context.task_runner if context is not None else None
    if not isinstance(runner, MultiprocessingTaskRunner):
        raise TypeError(f"many() needs a MultiprocessingTaskRunner, not {runner!r}")
    before = _rss_mib()
    started = time.perf_counter()
    total, tenths = 0, []
    for done, result in enumerate(runner.imap(small, ({"x": x} for x in range(count))), 1):
        total += result
        if done % max(count // 10, 1) == 0:
            tenths.append(round(_rss_mib()))
    assert total == count * (count + 1) // 2
    return {
        "items": count,
        "mapped_at": time.perf_counter(),
        "seconds": round(time.perf_counter() - started, 1),
        "rss_before_mib": round(before),
        "rss_each_tenth_mib": tenths,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def child(count: int, record: bool) -> dict[str, Any]:
    """One flow run of ``count`` items; with ``record``, the runner's wait for the API is timed too."""
    run = many
    if record:  # the default record_timeout: wait for the API to record every run
        run = many.with_options(task_runner=MultiprocessingTaskRunner(2))  # type: ignore[arg-type]  # as above
    result = run(count)
    mapped_at = result.pop("mapped_at")
    if record:
        result["exit_seconds"] = round(time.perf_counter() - mapped_at, 1)
    return result


if __name__ == "__main__":
    record = "--record" in sys.argv
    arguments = [a for a in sys.argv[1:] if a != "--record"]
    if arguments[:1] == ["--child"]:
        print(json.dumps(child(int(arguments[1]), record)))
    else:
        for count in arguments or ["2000", "10000"]:
            command = [sys.executable, "-m", "bench.many_tasks", "--child", count, *(["--record"] * record)]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            print(output.strip().splitlines()[-1])
