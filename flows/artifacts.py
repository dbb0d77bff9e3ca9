"""What a wiki-report run shows in the Prefect UI: progress, a summary table, file links."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from uuid import UUID

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from tasks.items import ItemResult, artifact_path, artifact_url
from tasks.report import SUMMARY_COLUMNS, ReportResult, summary_row
from tasks.storage import is_remote


class ProgressArtifact:
    """A progress artifact updated as items finish, at most every ``step`` percent."""

    def __init__(self, total: int, step: float = 5.0) -> None:
        self.total = max(total, 1)
        self.step = step
        self.shown = 0.0
        artifact_id = create_progress_artifact(0.0, key="wiki-report-progress", description="items finished")
        self.artifact_id: UUID = UUID(str(artifact_id))

    def update(self, done: int) -> None:
        percent = 100.0 * done / self.total
        if percent - self.shown >= self.step or done >= self.total:
            update_progress_artifact(self.artifact_id, percent)
            self.shown = percent


def _uri(output_dir: str, item: str) -> str:
    if is_remote(output_dir):
        return artifact_url(output_dir, item)
    return artifact_path(Path(output_dir), item).as_uri()


def publish_results(output_dir: str, items: Sequence[ItemResult], report: ReportResult) -> None:
    """A summary table, a link to the report and a markdown list of every item's xlsx."""
    rows = [dict(zip(SUMMARY_COLUMNS, summary_row(r), strict=True)) for r in items]
    create_table_artifact(rows, key="wiki-report-summary", description="one row per input file")
    report_uri = report.path if is_remote(report.path) else Path(report.path).resolve().as_uri()
    create_link_artifact(report_uri, link_text="report.xlsx", key="wiki-report-report")
    lines = [f"# wiki-report\n\n[report.xlsx]({report_uri}): {report.documents} documents\n"]
    for result in items:
        if result.status == "failed":
            lines.append(f"- {result.item}: **failed**: {result.error}")
        else:
            uri = _uri(output_dir, result.item)
            lines.append(f"- [{result.item}.xlsx]({uri}): {result.documents} documents ({result.status})")
    create_markdown_artifact("\n".join(lines), key="wiki-report-files", description="per-item xlsx files")
