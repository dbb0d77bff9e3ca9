"""``wiki-report``: every WikiExtractor file to an xlsx artifact, then one lossless report.

Work-list: the files under ``input_dir`` matching ``pattern``. Per file, a ``parse`` task
writes ``<output>/items/<file>.xlsx`` and the file's report part (its rows of the report,
deflated) and returns a tuple of per-document stats lists; a ``report`` task then copies the
parts into ``<output>/report.xlsx``. A file
that fails is listed in the report's ``summary`` with its reason and the flow run ends
``Failed`` with "N of M items failed"; every other file still reaches the report.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS, NO_CACHE, RUN_ID
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.filesystems import RemoteFileSystem
from prefect.futures import PrefectFuture
from prefect.states import Cancelled, Completed, Failed
from prefect.utilities.annotations import unmapped

from poolflow.flows.artifacts import publish_files, publish_summary
from poolflow.flows.outcome import Outcome, RunFailed, without_run_failed_tracebacks
from poolflow.flows.parameters import DEFAULT_PATTERN, check_wiki_parameters
from poolflow.flows.progress import wait_with_progress
from poolflow.flows.report_steps import parquet_step, report_step, step_parameters
from poolflow.flows.runner_choice import make_task_runner
from poolflow.flows.task_map import map_task
from poolflow.tasks import storage
from poolflow.tasks.atomic import OutputError, remove_stale_temp_files
from poolflow.tasks.inputs import InputListing, list_inputs
from poolflow.tasks.items import ItemError, ItemOutput, ItemResult, ItemStatus, parse_item
from poolflow.tasks.output_lock import OutputInUse, exclusive_output
from poolflow.tasks.parquet import ParquetResult
from poolflow.tasks.report import ReportResult
from poolflow.tasks.report_parts import PART_SUFFIX
from poolflow.tasks.stats import DocumentStats
from poolflow.tasks.storage import is_remote

# Results persist and the cache key is the inputs within one flow run (not the task's
# source), so a retry of a failed run from the UI reuses every finished item — also after
# the task code was fixed — and runs only the items that failed.
RETRY_REUSE: dict[str, Any] = {"persist_result": True, "cache_policy": INPUTS + RUN_ID}
parse_task = task(name="parse", task_run_name="parse({item})", **RETRY_REUSE)(parse_item)
report_task = task(name="report", cache_policy=NO_CACHE)(report_step)
parquet_task = task(name="parquet", cache_policy=NO_CACHE)(parquet_step)
RESULTS_DIR = (".poolflow", "results")
# A run whose items failed ends in a Failed state that says so; Prefect's deployment engine
# would log it again as an unexpected exception, traceback and all (see the filter).
logging.getLogger("prefect.flow_runs").addFilter(without_run_failed_tracebacks)


def results_storage(target: str) -> Path | str:
    """Where the parse task persists results for UI retries: inside the run's own output.

    Prefect's default (``~/.prefect/storage``) grows with every run and outlives the output
    it belongs to; here deleting the output directory deletes its retry state too. Prefect
    takes a local path as is; a bucket needs a storage block saved on the server, named
    after the URL.
    """
    if not is_remote(target):
        return Path(target).joinpath(*RESULTS_DIR)
    url = storage.join(target, *RESULTS_DIR)
    name = f"poolflow-results-{hashlib.sha256(url.encode()).hexdigest()[:16]}"
    RemoteFileSystem(basepath=url).save(name, overwrite=True)
    return f"remote-file-system/{name}"


def _item_output(item: str, future: PrefectFuture[ItemOutput]) -> tuple[ItemResult, DocumentStats | None]:
    """The task's result and stats (one parse), or a failed result carrying its reason."""
    outcome = future.result(raise_on_failure=False)
    if isinstance(outcome, ItemOutput):
        return outcome.result, outcome.stats
    reason = failure_reason(outcome).splitlines()[0]
    return ItemResult(item=item, status=ItemStatus.FAILED, error=reason), None


def failure_reason(outcome: object) -> str:
    """Why an item failed, without repeating its name: ``ItemError`` and ``OutputError``
    messages already say it; anything else is named by its exception type."""
    if isinstance(outcome, ItemError):
        return outcome.reason
    if isinstance(outcome, OutputError):
        return str(outcome)
    return f"{type(outcome).__name__}: {outcome}" if isinstance(outcome, BaseException) else str(outcome)


def _output_errors(items: Sequence[str], futures: Sequence[PrefectFuture[Any]]) -> dict[str, str]:
    """The items that failed on an OS error writing the output (disk full…), with the error."""
    errors = {}
    for item, future in zip(items, futures, strict=True):
        outcome = future.result(raise_on_failure=False)
        if isinstance(outcome, OutputError):
            errors[item] = str(outcome)
    return errors


@flow(name="wiki-report", log_prints=True)
def wiki_report(
    input_dir: str,
    output_dir: str,
    processes: int | None = None,
    pattern: str = DEFAULT_PATTERN,
    parser: str = "exact",
    encoding: str = "utf-8",
    runner: str = "multiprocessing",
    dask_address: str | None = None,
    progress_bar: bool = False,
    parquet: bool = False,
) -> State[Outcome]:
    """Parse every matching file of ``input_dir`` and write ``output_dir/report.xlsx``.

    With ``parquet``, also ``output_dir/report.parquet``: one row per document, text whole.
    ``progress_bar`` draws a bar on the terminal (the ``poolflow`` command sets it).
    """
    started = time.perf_counter()
    source, target = check_wiki_parameters(input_dir, output_dir, processes, parser, encoding, runner)
    # A second run into this output refuses at once; the lock is held until the report exists.
    held = contextlib.ExitStack()
    try:
        if not is_remote(target):
            held.enter_context(exclusive_output(Path(target)))
            # However the run ends (Ctrl-C included), once its workers are stopped: the temp
            # files of the writes they did not finish go, before the lock is released.
            held.callback(remove_stale_temp_files, Path(target), (".xlsx", PART_SUFFIX))
    except OutputInUse as exc:
        return Failed(message=str(exc))
    with held:
        listing = list_inputs(source, pattern)
        # Left by killed writers of artifacts and reports (.xlsx) and of report parts.
        stale = 0 if is_remote(target) else remove_stale_temp_files(Path(target), (".xlsx", PART_SUFFIX))
        _log_listing(listing, source, stale)
        items = listing.items
        common = dict(input_dir=unmapped(str(source)), parser=unmapped(parser), encoding=unmapped(encoding))
        with make_task_runner(runner, processes, dask_address) as task_runner:
            parse = parse_task.with_options(result_storage=results_storage(target))
            parsed = map_task(task_runner, parse, {**common, "item": items, "output_dir": unmapped(target)})
            wait_with_progress(parsed, progress_bar)
            if _cancelled():
                done = sum(1 for f in parsed if isinstance(f.result(raise_on_failure=False), ItemOutput))
                return Cancelled(message=f"cancelled after {done} of {len(items)} items; rerun to resume")
            outputs = [_item_output(item, future) for item, future in zip(items, parsed, strict=True)]
            results = [result for result, _ in outputs]
            columns = [stats for _, stats in outputs]
            unlisted = [
                ItemResult(item=u.path, status=ItemStatus.FAILED, error=u.reason) for u in listing.unreadable
            ]
            results += unlisted
            columns += [None] * len(unlisted)
            report_future = task_runner.submit(report_task, step_parameters(target, results, columns))
            publish_summary(results)
            # A report that cannot be written (disk full) is said so; the items stay written.
            report = report_future.result(raise_on_failure=False)
            exported = _write_parquet(task_runner, target, results, columns) if parquet else None
            outcome = Outcome.of(
                results,
                seconds=round(time.perf_counter() - started, 4),
                report=report if isinstance(report, ReportResult) else None,
                report_error="" if isinstance(report, ReportResult) else failure_reason(report),
                output_errors=_output_errors(items, parsed),
                parquet=exported if isinstance(exported, ParquetResult) else None,
                parquet_error=exported if isinstance(exported, str) else "",
                notes=tuple(_loop_note(loop) for loop in listing.loops),
            )
            # Before the runner's end, which waits until the API has stored every task run:
            # the API stores them while the artifacts are published.
            _log_outcome(outcome, target, results)
    return _final_state(outcome, target)


def _cancelled() -> bool:
    """Whether this flow run was cancelled from the UI or API while its items ran.

    The runner stops its workers when that happens (``poolflow.runners.cancellation``); the flow reads
    the fact where Prefect keeps it, the flow run's state, not from the runner.
    """
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return False
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(context.flow_run.id).state
    return state is not None and (state.is_cancelling() or state.is_cancelled())


def _write_parquet(
    task_runner: Any, target: str, results: list[ItemResult], columns: list[DocumentStats | None]
) -> ParquetResult | str:
    """``report.parquet`` next to the report, or why it could not be written."""
    future = task_runner.submit(parquet_task, step_parameters(target, results, columns))
    written = future.result(raise_on_failure=False)
    return written if isinstance(written, ParquetResult) else failure_reason(written)


def _log_outcome(outcome: Outcome, target: str, results: list[ItemResult]) -> None:
    """Log every failure and the totals; publish the UI artifacts when there is a report."""
    logger = get_run_logger()
    for item, reason in outcome.failed:
        logger.error("%s failed: %s", item, reason)
    if outcome.parquet_error:
        logger.error("report.parquet could not be written: %s", outcome.parquet_error)
    if outcome.report is None:
        logger.error("the report could not be written: %s; rerun to resume", outcome.report_error)
    else:
        publish_files(target, results, outcome.report)
        logger.info(
            "report %s: %d documents from %d items (%d skipped as current)",
            outcome.report.path,
            outcome.documents,
            outcome.items,
            outcome.skipped,
        )
    logger.info("--- %s seconds ---", outcome.seconds)


def _final_state(outcome: Outcome, target: str) -> State[Outcome]:
    """Completed when every item and the report are there (data: the outcome); Failed
    otherwise, its message saying what failed and where to read why (data: ``RunFailed``)."""
    summary = f"see the summary sheet of {target}/report.xlsx and this run's artifacts"
    if outcome.failed:
        message = f"{len(outcome.failed)} of {outcome.items} items failed; {summary}"
    elif outcome.report is None:
        message = f"the report could not be written: {outcome.report_error}"
    elif outcome.parquet_error:
        message = f"report.parquet could not be written: {outcome.parquet_error}"
    else:
        return Completed(message=f"{outcome.items} items, {outcome.documents} documents", data=outcome)
    return Failed(message=message, data=RunFailed(message, outcome))


def _log_listing(listing: InputListing, source: Path, stale: int) -> None:
    """Say what the work-list holds and which links it did not follow (unreadable paths are
    reported with the failed items)."""
    logger = get_run_logger()
    logger.info("%d items in %s (%d stale temp files removed)", len(listing.items), source, stale)
    for loop in listing.loops:
        logger.warning(_loop_note(loop))


def _loop_note(loop: str) -> str:
    return f"{loop} leads back to a directory above it; not followed again"
