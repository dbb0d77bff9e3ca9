"""Flow-process memory when mapping many small items: ``python -m bench.many_tasks N [N …]``.

Each N runs in a fresh process: a flow streams N trivial task runs through
``MultiprocessingTaskRunner.imap`` (``max_pending=1000``) and reports the flow process's
resident memory before mapping, at each tenth of the items, and its peak; a bounded map
shows a flat line. ``record_timeout=0`` skips the final wait for the API to record every
run, which at this scale is the API's time, not poolflow's. Set ``PREFECT_API_URL`` to
use a running server instead of the embedded one.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

from prefect import flow, task

from runners import MultiprocessingTaskRunner


@task
def small(x: int) -> int:
    return x + 1


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@flow(task_runner=MultiprocessingTaskRunner(2, record_timeout=0))
def many(count: int) -> dict[str, object]:
    from prefect.context import FlowRunContext

    runner = FlowRunContext.get().task_runner  # type: ignore[union-attr]
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
        "seconds": round(time.perf_counter() - started, 1),
        "rss_before_mib": round(before),
        "rss_each_tenth_mib": tenths,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(many(int(sys.argv[2]))))
    else:
        for count in sys.argv[1:] or ["2000", "10000"]:
            command = [sys.executable, "-m", "bench.many_tasks", "--child", count]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            print(output.strip().splitlines()[-1])
