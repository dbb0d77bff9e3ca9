"""Progress of a run's items: a progress artifact in the UI and, from the command line, a bar.

The artifact is updated at most every ``step`` percent (each update is an API call); the
terminal bar is rich's, drawn on stderr, so it does not mix with anything piped from stdout.
Finished items are counted by their futures' done-callbacks and shown every
``SHOW_EVERY`` seconds: waking the flow's thread for each finished item (as waiting on
``as_completed`` does) cost the flow process CPU that the workers need, thousands of times
for many small items.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import PrefectFuture
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

SHOW_EVERY = 0.2  # seconds between progress updates while items run


class ItemProgress:
    """Counts finished items into the UI's progress artifact and an optional terminal bar."""

    def __init__(self, total: int, *, terminal: bool, step: float = 5.0) -> None:
        self.total = max(total, 1)
        self.step = step
        self.shown = 0.0
        artifact_id = create_progress_artifact(0.0, key="wiki-report-progress", description="items finished")
        self.artifact_id = UUID(str(artifact_id))
        self.bar: Progress | None = None
        if terminal:
            self.bar = Progress(
                TextColumn("items"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self.bar_task = self.bar.add_task("items", total=total)

    def __enter__(self) -> ItemProgress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, done: int) -> None:
        """``done`` items of ``total`` have finished."""
        if self.bar is not None:
            self.bar.update(self.bar_task, completed=done)
        percent = 100.0 * done / self.total
        if percent - self.shown >= self.step or (done >= self.total and self.shown < 100.0):
            update_progress_artifact(self.artifact_id, percent)
            self.shown = percent


def wait_with_progress(futures: Sequence[PrefectFuture[Any]], terminal: bool) -> None:
    """Wait for ``futures``, updating the UI's progress artifact (and a terminal bar)."""
    finished = FinishedCount(futures)
    with ItemProgress(len(futures), terminal=terminal) as progress:
        shown = 0
        while not finished.wait(SHOW_EVERY):
            if finished.count != shown:
                shown = finished.count
                progress.update(shown)
        progress.update(len(futures))


class FinishedCount:
    """How many of some futures are done, counted by their done-callbacks."""

    def __init__(self, futures: Sequence[PrefectFuture[Any]]) -> None:
        self.total = len(futures)
        self.count = 0
        self._lock = threading.Lock()
        self._all_done = threading.Event()
        if not futures:
            self._all_done.set()
        for future in futures:
            future.add_done_callback(self._one_done)

    def _one_done(self, future: PrefectFuture[Any]) -> None:
        with self._lock:
            self.count += 1
            if self.count == self.total:
                self._all_done.set()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True once every future is done."""
        return self._all_done.wait(timeout)
