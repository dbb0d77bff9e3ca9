"""What a wiki-report run leaves in the Prefect UI: a summary table and links to its files."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from poolflow.tasks.items import ItemResult, ItemStatus, artifact_folder, artifact_url
from poolflow.tasks.report import SUMMARY_COLUMNS, ReportResult, summary_row
from poolflow.tasks.storage import is_remote


def _artifact_uri(output_dir: str) -> Callable[[str], str]:
    """Where an item's xlsx artifact can be opened: its URL, or its file's URI (the item's
    name was checked when its artifact was written)."""
    if is_remote(output_dir):
        return functools.partial(artifact_url, output_dir)
    folder = artifact_folder(Path(output_dir))
    return lambda item: folder.joined(item).as_uri()


def publish_summary(items: Sequence[ItemResult]) -> None:
    """The summary table: one row per input file, as the report's ``summary`` sheet has it.

    It needs only the items' results, so the flow publishes it while the report is written.
    """
    rows = [dict(zip(SUMMARY_COLUMNS, summary_row(r), strict=True)) for r in items]
    create_table_artifact(rows, key="wiki-report-summary", description="one row per input file")


def publish_files(output_dir: str, items: Sequence[ItemResult], report: ReportResult) -> None:
    """A link to the report and a markdown list of every item's xlsx."""
    report_uri = report.path if is_remote(report.path) else Path(report.path).resolve().as_uri()
    create_link_artifact(report_uri, link_text="report.xlsx", key="wiki-report-report")
    lines = [f"# wiki-report\n\n[report.xlsx]({report_uri}): {report.documents} documents\n"]
    uri = _artifact_uri(output_dir)
    for result in items:
        if result.status is ItemStatus.FAILED:
            lines.append(f"- {result.item}: **failed**: {result.error}")
        else:
            link = f"[{result.item}.xlsx]({uri(result.item)})"
            lines.append(f"- {link}: {result.documents} documents ({result.status.value})")
    create_markdown_artifact("\n".join(lines), key="wiki-report-files", description="per-item xlsx files")
