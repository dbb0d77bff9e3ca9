"""What a wiki-report run leaves in the Prefect UI: a summary table and links to its files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from tasks.items import ItemResult, ItemStatus, artifact_path, artifact_url
from tasks.report import SUMMARY_COLUMNS, ReportResult, summary_row
from tasks.storage import is_remote


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
        if result.status is ItemStatus.FAILED:
            lines.append(f"- {result.item}: **failed**: {result.error}")
        else:
            uri, status = _uri(output_dir, result.item), result.status.value
            lines.append(f"- [{result.item}.xlsx]({uri}): {result.documents} documents ({status})")
    create_markdown_artifact("\n".join(lines), key="wiki-report-files", description="per-item xlsx files")
