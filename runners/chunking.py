"""How many consecutive mapped items go into one Prefect task run.

Prefect spends a fixed cost on every task run (engine CPU in the flow process, state
writes in the API server), so items much shorter than that cost should share a task run.
``ChunkSizer`` decides each chunk's size from the items not yet chunked; ``AutoChunkSizer``
learns from measured item durations, in the spirit of ``Pool.map``'s ``chunksize`` and
joblib's automatic batching, with one difference: a chunk's items are separate pool jobs
that spread over all workers, so a chunk of ``processes`` items takes about one item's
time, and no worker waits for another's chunk at the end of the input. A chunk should
therefore keep all workers busy for about ``target_seconds``.

Pure and thread-safe: no Prefect, no processes, easy to test with synthetic durations.
"""

from __future__ import annotations

import threading
from typing import Literal, Protocol

ChunkSize = int | Literal["auto"]

# Each task run costs the API server CPU for its state events (received, recorded, persisted)
# on the cores the workers use: chunks of a few seconds of work keep that cost small beside
# the work while keeping the progress and the retry unit fine-grained (bench/README.md).
DEFAULT_TARGET_SECONDS = 3.0
DEFAULT_MAX_CHUNK = 1000
_SMOOTHING = 0.3  # weight of the newest duration in the moving average
_RAMP = 4  # a chunk holds at most this many times the items of the one before
_TAIL = 4  # the end's chunks hold at least 1/_TAIL of the target


class ChunkSizer(Protocol):
    """Chooses chunk sizes and learns from how long items took."""

    def next_size(self, remaining: int) -> int:
        """Items for the next chunk when ``remaining`` items wait (1 to ``remaining``)."""
        ...

    def record(self, seconds: float) -> None:
        """One item ran for ``seconds`` in a worker."""
        ...


class FixedChunkSizer:
    """Always ``size`` items per chunk (fewer only for the last one)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("chunksize must be at least 1")
        self.size = size

    def next_size(self, remaining: int) -> int:
        return max(1, min(self.size, remaining))

    def record(self, seconds: float) -> None:
        """Measurements do not change a fixed size."""


class AutoChunkSizer:
    """Sizes chunks to keep the workers busy for about ``target_seconds`` each.

    - The first chunk is one item: its task run (and the first result) shows at once.
    - Until an item's duration is measured, chunks hold ``processes`` items (about one
      item's time on all workers, however long items take).
    - Then the target, ``target_seconds × processes / average item seconds`` items, at most
      four times the previous chunk (sizes ramp up instead of jumping on a first noisy
      measurement) and at most ``max_size``; at least one item, so slow items get a task
      run each.
    - Never more than half the items still waiting, so the end of the input is split into
      smaller chunks that finish one after another; but not below a quarter of the target,
      since every task run costs the same whatever its size.
    """

    def __init__(
        self,
        processes: int,
        *,
        target_seconds: float = DEFAULT_TARGET_SECONDS,
        max_size: int = DEFAULT_MAX_CHUNK,
    ) -> None:
        if processes < 1 or target_seconds <= 0 or max_size < 1:
            raise ValueError("processes, target_seconds and max_size must be positive")
        self.processes = processes
        self.target_seconds = target_seconds
        self.max_size = max_size
        self.mean_seconds: float | None = None
        self._formed = 0
        self._previous = 1
        self._lock = threading.Lock()

    def record(self, seconds: float) -> None:
        with self._lock:
            if self.mean_seconds is None:
                self.mean_seconds = seconds
            else:
                self.mean_seconds += _SMOOTHING * (seconds - self.mean_seconds)

    def next_size(self, remaining: int) -> int:
        with self._lock:
            if self._formed == 0:
                size = 1
            elif self.mean_seconds is None:
                size = min(self.processes, remaining // 2)
            else:
                wanted = self.target_seconds * self.processes / max(self.mean_seconds, 1e-6)
                target = int(min(wanted, self.max_size))
                size = min(target, _RAMP * self._previous, max(remaining // 2, target // _TAIL))
            self._formed += 1
            size = max(1, min(size, remaining))
            self._previous = size
            return size


def make_sizer(chunksize: ChunkSize, processes: int) -> ChunkSizer:
    """The sizer for a runner's ``chunksize`` setting ("auto" or a fixed int)."""
    if chunksize == "auto":
        return AutoChunkSizer(processes)
    if isinstance(chunksize, int) and not isinstance(chunksize, bool):
        return FixedChunkSizer(chunksize)
    raise ValueError(f"chunksize must be 'auto' or a positive int, not {chunksize!r}")
