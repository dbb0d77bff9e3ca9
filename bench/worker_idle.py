"""``python -m bench.worker_idle``: how long each worker waits for its next job.

A user's flow script (``task.map`` of the per-file parse-to-xlsx job, as in
``bench.user_script``) on a default ``prefect server start``, with
``MultiprocessingTaskRunner(processes=2)``, in variants alternating as fresh processes:
``held`` (a busy worker holds its next job in its pipe, the runner as shipped), ``single``
(one job per worker at a time, and a 0.5 ms thread switch interval in the flow process: the
runner before 9182bec) and ``held-0.5ms`` (held, with that 0.5 ms interval instead of
Python's default 5 ms: the runner from 9182bec until the interval was dropped). ``--tiny N``
maps N one-document files (``bench.tiny_files``' corpus, items of ~1 ms) instead of copies
of the corpus. Each worker's initializer wraps the worker loop's ``receive_order`` to add
up the time it blocks before each job after its first, and the waits over 5 ms among them;
on ``Stop`` it appends one JSON line per worker to a file.
Wall times are printed too, but on a noisy machine the waits are the measure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.default_server import default_server
from bench.homes import fresh_home
from bench.run import HERE
from bench.scale import build_corpus
from bench.tiny_files import write_tiny_corpus

LONG_WAIT = 0.005  # seconds: a wait longer than this is the manager thread held up, not the pipe
# Per variant: jobs a worker holds at most (``worker_pool._HANDED``), and the thread switch
# interval of the flow process (None: Python's own).
VARIANTS = {"held": (2, None), "single": (1, 0.0005), "held-0.5ms": (2, 0.0005)}

SCRIPT = """\
import sys
from pathlib import Path
from prefect import flow, task
from prefect.utilities.annotations import unmapped
from poolflow import MultiprocessingTaskRunner
from poolflow.runners import worker_pool
from poolflow.tasks.inputs import list_items
from poolflow.tasks.items import parse_item
from bench.worker_idle import count_waits

worker_pool._HANDED = int(sys.argv[3])
if sys.argv[5] != "None":
    sys.setswitchinterval(float(sys.argv[5]))


@task
def parse(input_dir, item, output_dir):
    return parse_item(input_dir, item, output_dir)


@flow(task_runner=MultiprocessingTaskRunner(2, initializer=count_waits, initargs=(sys.argv[4],)))
def parse_all(input_dir, output_dir):
    items = list_items(Path(input_dir), "**/wiki_*")
    return len([f.result() for f in parse.map(unmapped(input_dir), items, unmapped(output_dir))])


if __name__ == "__main__":
    parse_all(sys.argv[1], sys.argv[2])
"""


def count_waits(path: str) -> None:
    """In a worker: time every wait for a job; on ``Stop``, append the totals to ``path``."""
    from poolflow.runners import worker

    receive = worker.receive_order
    totals = {"jobs": 0, "waited": 0.0, "long_waits": 0, "long_waited": 0.0}

    def timed_receive(conn: Any) -> Any:
        started = time.perf_counter()
        message = receive(conn)
        waited = time.perf_counter() - started
        if not isinstance(message, worker.RunJob):
            with open(path, "a") as out:
                out.write(json.dumps(totals) + "\n")
        elif totals["jobs"] == 0:  # the first job waits for the flow run to start
            totals["jobs"] = 1
        else:
            totals["jobs"] += 1
            totals["waited"] += waited
            if waited > LONG_WAIT:
                totals["long_waits"] += 1
                totals["long_waited"] += waited
        return message

    worker.receive_order = timed_receive


def _describe(worker: dict[str, Any]) -> str:
    return (
        f"{worker['waited']:.3f} s over {worker['jobs']} jobs "
        f"({worker['long_waits']} over 5 ms: {worker['long_waited']:.3f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=HERE.parent.parent / "shared" / "corpus" / "kowiki")
    parser.add_argument("--times", type=int, default=50, help="copies of the corpus (50 x 20 = 1,000 files)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tiny", type=int, default=0, help="map this many one-document files instead")
    parser.add_argument("--variants", default="held,single", help=f"comma-separated: {', '.join(VARIANTS)}")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=fresh_home(),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONPATH=str(HERE.parent),
    )
    variants = {name: VARIANTS[name] for name in args.variants.split(",")}
    waits: dict[str, list[float]] = {name: [] for name in variants}
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="poolflow-idle-") as work:
        env["PREFECT_API_URL"] = stack.enter_context(default_server(env))
        root = Path(work)
        if args.tiny:
            write_tiny_corpus(root / "corpus", args.tiny)
        else:
            build_corpus(args.corpus.resolve(), args.times, root / "corpus")
        (root / "my_flow.py").write_text(SCRIPT)
        for round_ in range(args.rounds):
            for name, (handed, interval) in variants.items():
                log = root / f"waits-{name}-{round_}.jsonl"
                output = root / f"out-{name}-{round_}"
                command = [sys.executable, str(root / "my_flow.py"), str(root / "corpus"), str(output)]
                started = time.perf_counter()
                subprocess.run(
                    [*command, str(handed), str(log), str(interval)], env=env, check=True, capture_output=True
                )
                wall = time.perf_counter() - started
                workers = [json.loads(line) for line in log.read_text().splitlines()]
                waits[name] += [worker["waited"] for worker in workers]
                shown = "; ".join(_describe(worker) for worker in workers)
                print(f"round {round_ + 1} {name}: wall {wall:.2f} s; per worker: {shown}", flush=True)
    for name, values in waits.items():
        low, high, middle = min(values), max(values), statistics.median(values)
        print(f"{name}: waits per worker {low:.3f}-{high:.3f} s, median {middle:.3f} s")


if __name__ == "__main__":
    main()
