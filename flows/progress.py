"""Progress of a run's items: a progress artifact in the UI and, from the command line, a bar.

The artifact is updated at most every ``step`` percent (each update is an API call); the
terminal bar is rich's, drawn on stderr, so it does not mix with anything piped from stdout.
"""

from __future__ import annotations

from types import TracebackType
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


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
        if percent - self.shown >= self.step or done >= self.total:
            update_progress_artifact(self.artifact_id, percent)
            self.shown = percent
