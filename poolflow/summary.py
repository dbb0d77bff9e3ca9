"""The few lines a ``poolflow run`` leaves on the terminal after its progress bar.

Prefect's per-task lines stay in the API and the UI (``--verbose`` brings them back); the
person at the terminal gets what the run did, what failed and why, and where to look next.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from poolflow.flows.outcome import Outcome

SHOWN_FAILURES = 20  # the report's summary sheet lists every one


def print_summary(console: Console, state_name: str, outcome: Outcome, flow_run_url: str | None) -> None:
    """A table of totals, where the report is, then one line per failed item with its reason."""
    table = Table(title=f"wiki-report: {state_name}", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "items",
        f"{outcome.items:,}: {outcome.done:,} done, {outcome.skipped:,} skipped as current, "
        f"{len(outcome.failed):,} failed",
    )
    table.add_row("documents", f"{outcome.documents:,}")
    table.add_row("warnings", f"{outcome.warnings:,} (see each item's warnings sheet)")
    table.add_row("wall time", f"{outcome.seconds:.1f} s")
    console.print(table)
    # Paths and links on lines of their own, never cut or wrapped, so they can be copied.
    if outcome.report is not None:
        console.print(f"report: {outcome.report.path}", soft_wrap=True, highlight=False)
    else:
        console.print(f"[red]report not written:[/red] {outcome.report_error}", soft_wrap=True)
    if outcome.parquet is not None:
        console.print(f"parquet: {outcome.parquet.path}", soft_wrap=True, highlight=False)
    elif outcome.parquet_error:
        console.print(f"[red]parquet not written:[/red] {outcome.parquet_error}", soft_wrap=True)
    if flow_run_url:
        console.print(f"flow run: {flow_run_url}", soft_wrap=True, highlight=False)
    for note in outcome.notes:
        console.print(f"note: {note}", highlight=False)
    # Output errors (a full disk) fail every later item the same way: one line says it all.
    unwritten = set(outcome.unwritten)
    failed = [(item, why) for item, why in outcome.failed if item not in unwritten]
    if failed:
        _print_failures(console, failed)
    if outcome.output_error:
        console.print(
            f"[red]error:[/red] {outcome.output_error} ({len(unwritten):,} items not written); "
            "free the space or fix the output, then rerun the same command: it resumes",
            soft_wrap=True,
            highlight=False,
        )


def _print_failures(console: Console, failed: list[tuple[str, str]]) -> None:
    for item, reason in failed[:SHOWN_FAILURES]:
        console.print(f"[red]failed:[/red] {item}: {reason}", soft_wrap=True, highlight=False)
    hidden = len(failed) - SHOWN_FAILURES
    if hidden > 0:
        console.print(f"… and {hidden:,} more: see the report's summary sheet", highlight=False)
