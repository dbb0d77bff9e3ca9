"""``wiki-report``: every WikiExtractor file to an xlsx artifact, then one lossless report.

Work-list: the files under ``input_dir`` matching ``pattern``. Per file, one ``parse`` task
reads and parses the file once, writes ``<output>/items/<file>.xlsx`` and returns the item's
result with a tuple of per-document stats lists; a ``report`` task then streams the
artifacts and the gathered stats into ``<output>/report.xlsx`` (and, with ``parquet``, a
``parquet`` task writes ``<output>/report.parquet`` from the same). A file that fails is
listed in the report's ``summary`` with its reason and the flow run ends ``Failed`` with
"N of M items failed"; every other file still reaches the report.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import State, Task, flow, get_run_logger, task
from prefect.cache_policies import INPUTS, NO_CACHE, RUN_ID
from prefect.futures import PrefectFuture, as_completed
from prefect.states import Cancelled, Completed, Failed
from prefect.utilities.annotations import unmapped

from flows.artifacts import ProgressArtifact, publish_results
from flows.parameters import DEFAULT_PATTERN, check_wiki_parameters
from runners.choice import make_task_runner
from tasks.items import ITEMS_DIR, ItemOutput, ItemResult, list_items, parse_item
from tasks.parquet import write_parquet
from tasks.report import ReportResult, build_report
from tasks.stats import DocumentStats
from tasks.storage import is_remote
from tasks.xlsx import remove_stale_temp_files

# Results persist and the cache key is the inputs within one flow run (not the task's
# source), so a retry of a failed run from the UI reuses every finished item — also after
# the task code was fixed — and runs only the items that failed.
RETRY_REUSE: dict[str, Any] = {"persist_result": True, "cache_policy": INPUTS + RUN_ID}
# Typed loosely: TaskRunner.map's annotation (R | Coroutine[R]) does not unify with a plain R.
parse_task: Task[..., Any] = task(name="parse", task_run_name="parse({item})", **RETRY_REUSE)(parse_item)
report_task = task(name="report", cache_policy=NO_CACHE)(build_report)
parquet_task = task(name="parquet", cache_policy=NO_CACHE)(write_parquet)


def _item_output(item: str, future: PrefectFuture[ItemOutput]) -> tuple[ItemResult, DocumentStats | None]:
    """The task's result and stats, or a failed result carrying the first line of its error."""
    outcome = future.result(raise_on_failure=False)
    if isinstance(outcome, ItemOutput):
        return outcome.result, outcome.stats
    reason = f"{type(outcome).__name__}: {outcome}" if isinstance(outcome, BaseException) else str(outcome)
    return ItemResult(item=item, status="failed", error=reason.splitlines()[0]), None


def _wait_with_progress(futures: Sequence[PrefectFuture[Any]], show_bar: bool) -> None:
    """Wait for ``futures``, updating the UI's progress artifact (and a terminal bar)."""
    from tqdm import tqdm

    progress = ProgressArtifact(len(futures))
    with tqdm(total=len(futures), unit="item", disable=not show_bar, desc="items") as bar:
        for done, _ in enumerate(as_completed(list(futures)), start=1):
            bar.update()
            progress.update(done)


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
) -> State[ReportResult]:
    """Parse every matching file of ``input_dir`` and write ``output_dir/report.xlsx``.

    With ``parquet``, also ``output_dir/report.parquet``: one row per document, text whole.
    """
    started = time.perf_counter()
    logger = get_run_logger()
    source, target = check_wiki_parameters(input_dir, output_dir, processes, parser, encoding, runner)
    items = list_items(source, pattern)
    items_dir = Path(target) / ITEMS_DIR
    stale = 0 if is_remote(target) or not items_dir.exists() else remove_stale_temp_files(items_dir)
    logger.info("%d items in %s (%d stale temp files removed)", len(items), source, stale)
    common = dict(input_dir=unmapped(str(source)), parser=unmapped(parser), encoding=unmapped(encoding))
    with make_task_runner(runner, processes, dask_address) as task_runner:
        parsed = task_runner.map(parse_task, {**common, "item": items, "output_dir": unmapped(target)})
        _wait_with_progress(parsed, progress_bar)
        if getattr(task_runner, "cancelled", False):
            done = sum(1 for f in parsed if isinstance(f.result(raise_on_failure=False), ItemOutput))
            return Cancelled(message=f"cancelled after {done} of {len(items)} items; rerun to resume")
        outputs = [_item_output(item, future) for item, future in zip(items, parsed, strict=True)]
        results = [result for result, _ in outputs]
        columns = [stats for _, stats in outputs]
        report = task_runner.submit(
            report_task, {"output_dir": target, "items": results, "stats": columns}
        ).result()
        if parquet:
            written = task_runner.submit(
                parquet_task, {"output_dir": target, "items": results, "stats": columns}
            ).result()
            logger.info("parquet %s: %d documents", written.path, written.documents)
    publish_results(target, results, report)
    failed = [r for r in results if r.status == "failed"]
    for result in failed:
        logger.error("%s failed: %s", result.item, result.error)
    logger.info(
        "report %s: %d documents from %d items (%d skipped as current)",
        report.path,
        report.documents,
        len(items),
        sum(r.status == "skipped" for r in results),
    )
    logger.info("--- %s seconds ---", round(time.perf_counter() - started, 4))
    if failed:
        return Failed(message=f"{len(failed)} of {len(items)} items failed", data=report)
    return Completed(message=f"{len(items)} items, {report.documents} documents", data=report)
