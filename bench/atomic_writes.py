"""``python -m bench.atomic_writes [--files 2000] [--dir DIR]``: what one atomic file write costs.

Writes ``--files`` small files (3 KB each) in a fresh folder under ``--dir`` two ways, alternating
rounds: through ``written_atomically`` (the descriptor that created the temp file), and by
reopening the temp file by name with ``"wb"``, as the writers did before. Prints the median
microseconds per file of each. The reopen truncates an empty file, and ext4 then starts
writing the file's data out when it is closed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from poolflow.tasks.atomic import AtomicTarget, written_atomically

CONTENT = b"x" * 3000


def through_descriptor(path: Path) -> None:
    with written_atomically(path) as file:
        file.write(CONTENT)


def reopened_by_name(path: Path) -> None:
    with AtomicTarget(path) as temp, temp.open("wb") as file:
        file.write(CONTENT)


def per_file(write: Callable[[Path], None], folder: Path, files: int) -> float:
    """Microseconds per file for ``files`` writes into the new folder ``folder``."""
    folder.mkdir()
    started = time.perf_counter()
    for n in range(files):
        write(folder / f"f{n}")
    return (time.perf_counter() - started) * 1e6 / files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp folder)")
    args = parser.parse_args()
    ways = {"through the descriptor": through_descriptor, 'reopened with "wb"': reopened_by_name}
    times: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="poolflow-atomic-") as work:
        for round_ in range(args.rounds):
            for index, (name, write) in enumerate(ways.items()):
                times[name].append(per_file(write, Path(work) / f"{round_}-{index}", args.files))
    for name, values in times.items():
        print(f"{name}: {statistics.median(values):.0f} µs a file ({', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
