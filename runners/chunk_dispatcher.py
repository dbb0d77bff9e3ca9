"""Forms chunks from queued mapped items on one thread, as engine threads free up.

Forming a chunk only when it can start lets automatic sizing use the latest measured
durations; the caller's ``start_chunk`` turns the chunk into a task run.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
from collections.abc import Callable, Iterable
from contextvars import Context, copy_context
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefect.client.schemas.objects import RunInput
from prefect.futures import PrefectFuture
from prefect.states import Failed

from poolflow.runners.chunked_map import Chunk
from poolflow.runners.chunking import ChunkSizer
from poolflow.runners.mapped_items import UNASSIGNED, Item

if TYPE_CHECKING:
    from prefect.tasks import Task


@dataclass(eq=False)
class Batch:
    """The items of one ``map`` (or the stream of one ``imap``) and how to run them."""

    task: Task[Any, Any]
    sizer: ChunkSizer
    tracked: bool
    wait_for: list[PrefectFuture[Any]] | None
    dependencies: dict[str, set[RunInput]] | None
    context: Context = field(default_factory=copy_context)
    queue: collections.deque[Item] = field(default_factory=collections.deque)


class ChunkDispatcher:
    """Forms chunks from queued items whenever fewer than ``max_in_flight`` chunks run.

    One thread; batches are served in the order they were queued, so chunks (and task-run
    ids) come in mapping order.
    """

    def __init__(self, start_chunk: Callable[[Batch, list[Item]], Chunk], max_in_flight: int) -> None:
        self.start_chunk = start_chunk
        self.max_in_flight = max_in_flight
        self._batches: collections.deque[Batch] = collections.deque()
        self._in_flight = 0
        self._closing = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="poolflow-chunks", daemon=True)
        self._thread.start()

    def add(self, batch: Batch, items: Iterable[Item]) -> None:
        """Queue ``items`` of ``batch`` (a batch may be added to again, as ``imap`` does)."""
        with self._condition:
            if self._closing:
                raise RuntimeError("The task runner is shutting down")
            batch.queue.extend(items)
            if batch not in self._batches:
                self._batches.append(batch)
            self._condition.notify_all()

    def chunk_done(self) -> None:
        with self._condition:
            self._in_flight -= 1
            self._condition.notify_all()

    def close(self, *, cancel: bool) -> None:
        """Stop: start every queued item first, or (``cancel``) fail the queued items."""
        with self._condition:
            self._closing = True
            if cancel:
                for batch in self._batches:
                    for item in batch.queue:
                        item.future.assign(UNASSIGNED)
                        error = concurrent.futures.CancelledError(f"{item.name} was cancelled before it ran")
                        item.future.settle(Failed(data=error, message=str(error)), error=error)
                    batch.queue.clear()
                self._batches.clear()
            self._condition.notify_all()
        self._thread.join()

    def _next(self) -> tuple[Batch, list[Item]] | None:
        """The next chunk to start, waiting for a free engine slot and queued items."""
        with self._condition:
            while True:
                while self._batches and not self._batches[0].queue:
                    self._batches.popleft()
                if self._batches and self._in_flight < self.max_in_flight:
                    batch = self._batches[0]
                    size = batch.sizer.next_size(len(batch.queue))
                    items = [batch.queue.popleft() for _ in range(min(size, len(batch.queue)))]
                    self._in_flight += 1
                    return batch, items
                if self._closing and not self._batches:
                    return None
                self._condition.wait()

    def _run(self) -> None:
        while (work := self._next()) is not None:
            batch, items = work
            try:
                batch.context.run(self.start_chunk, batch, items)
            except BaseException as exc:  # the runner stopped: these items will not run
                self.chunk_done()
                for item in items:
                    item.future.assign(UNASSIGNED)
                    item.future.settle(Failed(data=exc, message=f"{type(exc).__name__}: {exc}"), error=exc)
