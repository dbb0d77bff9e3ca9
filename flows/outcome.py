"""What a wiki-report run did, in a form the command's summary and other callers can read."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from poolflow.tasks.items import ItemResult, ItemStatus
from poolflow.tasks.parquet import ParquetResult
from poolflow.tasks.report import ReportResult


@dataclass(frozen=True)
class Outcome:
    """Counts and reasons of one wiki-report run (the data of its final state)."""

    items: int
    done: int
    skipped: int
    failed: tuple[tuple[str, str], ...]  # (item, reason) for every failed item
    documents: int  # in the report
    warnings: int
    seconds: float
    report: ReportResult | None  # None when the report could not be written
    report_error: str = ""
    parquet: ParquetResult | None = None  # when asked for and written
    parquet_error: str = ""
    output_error: str = ""  # the first OS error writing an item's output, naming the path
    unwritten: tuple[str, ...] = ()  # the failed items that failed on such an error
    notes: tuple[str, ...] = ()  # things worth a line that are not failures (links not followed)

    @classmethod
    def of(
        cls,
        results: Sequence[ItemResult],
        *,
        seconds: float,
        report: ReportResult | None,
        report_error: str = "",
        parquet: ParquetResult | None = None,
        parquet_error: str = "",
        output_errors: Mapping[str, str] | None = None,
        notes: tuple[str, ...] = (),
    ) -> Outcome:
        """The outcome of ``results`` and the report step."""
        return cls(
            items=len(results),
            done=sum(r.status is ItemStatus.DONE for r in results),
            skipped=sum(r.status is ItemStatus.SKIPPED for r in results),
            failed=tuple((r.item, r.error) for r in results if r.status is ItemStatus.FAILED),
            documents=report.documents if report is not None else 0,
            warnings=sum(r.warnings for r in results),
            seconds=seconds,
            report=report,
            report_error=report_error,
            parquet=parquet,
            parquet_error=parquet_error,
            output_error=next(iter((output_errors or {}).values()), ""),
            unwritten=tuple(output_errors or ()),
            notes=notes,
        )


class RunFailed(Exception):
    """A wiki-report run ended with failed items or an unwritten report: the data of its
    Failed state. Prefect resolves a Failed state into an exception (a served deployment's
    engine does so at the end of every run); this is one, carrying the run's ``outcome``."""

    def __init__(self, message: str, outcome: Outcome) -> None:
        super().__init__(message)
        self.outcome = outcome


def without_run_failed_tracebacks(record: logging.LogRecord) -> bool:
    """A filter for Prefect's flow-run logger: drop the record that logs a ``RunFailed`` with
    its traceback. A deployment's engine resolves every Failed state into its exception and
    logs it as an unexpected one ("Engine execution exited with unexpected exception"); for
    a run whose items failed, the state and its message already say all of it."""
    return not (record.exc_info and isinstance(record.exc_info[1], RunFailed))


def outcome_of(result: object) -> Outcome | None:
    """The ``Outcome`` a wiki-report state's result holds, completed or failed."""
    if isinstance(result, RunFailed):
        return result.outcome
    return result if isinstance(result, Outcome) else None
