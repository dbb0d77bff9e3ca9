"""How long a ``poolflow`` command waits for its API server: ``python -m bench.api_start [--rounds 5]``.

Each round is a fresh process that starts the local API as the command does
(``poolflow.warm_start``: worker pool and ``poolflow.flows.wiki_report`` loaded meanwhile) and prints
the seconds until the server answered; this prints the median. The database is created
once first, in a temporary PREFECT_HOME, so rounds measure ordinary starts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.homes import NEW_SERVER, fresh_home

ROOT = Path(__file__).resolve().parents[1]


def one_start() -> float:
    """Start the API in this process; seconds until it answered."""
    import importlib

    from poolflow.warm_start import api_with_warm_start

    started = time.perf_counter()
    with api_with_warm_start(
        lambda message: None, lambda: importlib.import_module("poolflow.flows.wiki_report"), 2
    ):
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(f"{one_start():.3f}")
        return
    env = {
        **os.environ,
        "PREFECT_HOME": fresh_home("poolflow-api-start-"),
        **NEW_SERVER,  # each round starts a server, as a command finding none kept does
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "bench.api_start", "--child"]
    subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True)  # creates the database
    seconds = [
        float(subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True, text=True).stdout)
        for _ in range(args.rounds)
    ]
    print(f"API answered after {statistics.median(seconds):.2f} s (median of {args.rounds}: {seconds})")


if __name__ == "__main__":
    main()
