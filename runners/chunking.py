"""How many consecutive mapped items go into one Prefect task run.

Prefect spends a fixed cost on every task run (engine CPU in the flow process, state
writes in the API server), so items much shorter than that cost should share a task run.
``ChunkSizer`` decides each chunk's size from the items not yet chunked; ``AutoChunkSizer``
learns from measured item durations in the spirit of ``Pool.map``'s ``chunksize`` and
joblib's automatic batching: a chunk should carry about ``target_seconds`` of work, but
the first chunks are single items (so results and progress show at once) and chunks
shrink near the end of the input (so no worker idles while others finish big chunks).

Pure and thread-safe: no Prefect, no processes, easy to test with synthetic durations.
"""

from __future__ import annotations

import threading
from typing import Literal, Protocol

ChunkSize = int | Literal["auto"]

DEFAULT_TARGET_SECONDS = 0.5
DEFAULT_MAX_CHUNK = 1000
_SMOOTHING = 0.3  # weight of the newest duration in the moving average


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
    """Sizes chunks to about ``target_seconds`` of work from a moving average of item times.

    - The first ``processes`` chunks hold one item each, and so does every chunk until a
      duration has been measured.
    - Afterwards ``target_seconds / average item seconds``, at most double the previous
      chunk (sizes ramp up instead of jumping on a first noisy measurement) and at most
      ``max_size``.
    - Never more than ``remaining / (2 × processes)`` items, so the tail of the input is
      spread over all workers in ever smaller chunks.
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
            self._formed += 1
            if self._formed <= self.processes or self.mean_seconds is None:
                size = 1
            else:
                wanted = self.target_seconds / max(self.mean_seconds, 1e-6)
                size = int(min(wanted, 2 * self._previous, self.max_size))
            size = min(size, remaining // (2 * self.processes))
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
