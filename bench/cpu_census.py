"""Where a command's CPU goes, process by process: ``python -m bench.cpu_census -- CMD ...``.

Wall time per test says little on two cores shared by four test processes; CPU seconds per
kind of process say what to cut. The kernel's process accounting (``acct(2)``, root only)
writes the exact user + system time of every process of the run as it exits; a thread
reads each new process's command line from ``/proc`` every 0.1 s, so the table can name
it (a process that ends sooner shows up under its accounting name in brackets). Processes
still running when the command ends (daemons it left) are not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

# struct acct_v3 (linux/acct.h): flag, version, tty, exitcode, uid, gid, pid, ppid, btime,
# etime, then comp_t utime, stime, mem, io, rw, minflt, majflt, swaps, and the command name.
_RECORD = struct.Struct("<bBHIIIIIIf8H16s")
_TICKS = 100  # AHZ: comp_t times count 1/100 s

KINDS = [
    ("sys.stdin.readline", "pytest-xdist worker"),
    ("poolflow.api_server", "poolflow command's API server"),
    ("prefect server start", "prefect server start"),
    ("multiprocessing.forkserver", "fork server and its workers"),
    ("spawn_main", "spawned worker (spawn start method)"),
    ("/bin/poolflow ", "poolflow command"),
    ("dask", "Dask scheduler or worker"),
    ("chrom", "chromium"),
    ("soffice", "LibreOffice"),
    ("moto_server", "moto (S3)"),
    ("/bin/pytest", "pytest"),
]
"""(command-line fragment, kind): the first that matches names a process's kind."""


def _comp(value: int) -> float:
    """Seconds in a comp_t: 13-bit mantissa, 3-bit base-8 exponent, in 1/100 s."""
    return ((value & 0x1FFF) << (3 * (value >> 13))) / _TICKS


def kind_of(command: str, accounting_name: str) -> str:
    for fragment, kind in KINDS:
        if fragment in command:
            return kind
    if command:
        words = command.split()
        if "-c" in words:
            return f"other: python -c {' '.join(words[words.index('-c') + 1 :])[:40]}"
        script = next((word for word in words[1:] if not word.startswith("-")), words[0])
        return f"other: {Path(script).name}"
    return f"[{accounting_name}]"


@contextlib.contextmanager
def accounting(path: Path) -> Iterator[dict[int, str]]:
    """Process accounting into ``path`` and command lines by PID while inside."""
    libc = ctypes.CDLL(None, use_errno=True)
    path.write_bytes(b"")
    if libc.acct(str(path).encode()) != 0:
        raise SystemExit(f"acct({path}): {os.strerror(ctypes.get_errno())} (process accounting needs root)")
    commands: dict[int, str] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    with contextlib.suppress(OSError):
                        command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                        if command:
                            commands[int(entry)] = command.decode(errors="replace")

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield commands
    finally:
        done.set()
        sampler.join()
        libc.acct(None)


def census(records: bytes, commands: dict[int, str]) -> tuple[dict[str, float], Counter[str]]:
    """CPU seconds and process count per kind."""
    seconds: dict[str, float] = {}
    processes: Counter[str] = Counter()
    for offset in range(0, len(records) - _RECORD.size + 1, _RECORD.size):
        fields = _RECORD.unpack_from(records, offset)
        pid, utime, stime, name = fields[6], fields[10], fields[11], fields[18]
        kind = kind_of(commands.get(pid, ""), name.rstrip(b"\0").decode(errors="replace"))
        seconds[kind] = seconds.get(kind, 0.0) + _comp(utime) + _comp(stime)
        processes[kind] += 1
    return seconds, processes


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the table here")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("name a command, e.g. python -m bench.cpu_census -- pytest tests/test_cli.py")
    with tempfile.TemporaryDirectory(prefix="poolflow-census-") as folder:
        log = Path(folder) / "pacct"
        started = time.monotonic()
        with accounting(log) as commands:
            code = subprocess.call(command)
            time.sleep(1)  # the last exits reach the log
        wall = time.monotonic() - started
        seconds, processes = census(log.read_bytes(), commands)
    total = sum(seconds.values())
    count = sum(processes.values())
    print(f"{' '.join(command)}: exit {code}, {wall:.0f} s wall, {total:.0f} CPU-s in {count} processes")
    print("| kind | CPU s | share | processes |\n|---|---|---|---|")
    for kind, cpu in sorted(seconds.items(), key=lambda pair: -pair[1]):
        if cpu >= 0.05:
            print(f"| {kind} | {cpu:.1f} | {cpu / total:.0%} | {processes[kind]} |")
    if args.json:
        args.json.write_text(json.dumps({"wall": wall, "cpu": dict(seconds), "processes": dict(processes)}))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
