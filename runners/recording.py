"""Make sure the API has stored every task run before the flow process moves on.

Task-run states reach Prefect as events, recorded asynchronously by the API. A flow
whose tasks finish fast can exit (and stop an embedded API) before that happens, leaving
runs missing or stuck in ``Running`` in the UI. ``wait_until_recorded`` flushes the events
and polls until each task run is stored in a final state.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Collection, Iterable
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import TERMINAL_STATES
from prefect.events.worker import EventsWorker
from prefect.logging.loggers import get_logger

_BATCH = 200
# Longest pause between checks: a recorder flushes every second or faster, and a check (one
# small query) is cheap next to making the end of a flow wait a second too long.
_MAX_POLL_DELAY = 0.25
logger = get_logger("poolflow.recording")


def unrecorded_task_runs(task_run_ids: Collection[UUID]) -> set[UUID]:
    """The subset of ``task_run_ids`` the API does not yet hold in a final state.

    The filter is sent as the API's JSON and only each run's state type is read: Prefect's
    filter and task-run models cost the flow process seconds of CPU to build the first time.
    """
    remaining = set(task_run_ids)
    ids = [str(run_id) for run_id in remaining]
    final = {state.value for state in TERMINAL_STATES}
    with get_client(sync_client=True) as client:
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            body = {"task_runs": {"id": {"any_": batch}}, "limit": len(batch)}
            response = client.request("POST", "/task_runs/filter", json=body)
            response.raise_for_status()
            for run in response.json():
                if (run.get("state") or {}).get("type") in final:
                    remaining.discard(UUID(run["id"]))
    return remaining


def wait_until_recorded(task_run_ids: Iterable[UUID], stall_timeout: float = 30.0) -> set[UUID]:
    """Flush events, then poll until all ``task_run_ids`` are final; return those that are not.

    The API records a few hundred task runs per second, so the wait lasts as long as it
    keeps making progress and gives up only after ``stall_timeout`` seconds without any.
    The ids are checked in batches as they are read and only unconfirmed ones are kept,
    so a long flow's ids need not all be in memory at once.
    """
    if stall_timeout <= 0:
        return set()
    ids = iter(task_run_ids)
    batch = list(itertools.islice(ids, _BATCH))
    if not batch:
        return set()
    drain_events(stall_timeout)
    remaining: set[UUID] = set()
    total = 0
    try:
        while batch:
            total += len(batch)
            remaining |= unrecorded_task_runs(batch)
            batch = list(itertools.islice(ids, _BATCH))
        remaining = _poll_while_progressing(remaining, stall_timeout)
    except Exception as exc:  # the API is gone (e.g. stopped with the process group)
        logger.warning("cannot confirm that task runs were recorded: %s", exc)
        return remaining | set(batch) | set(ids)
    if remaining:
        logger.warning(
            "%d of %d task runs were not recorded in a final state (no progress for %.0f s)",
            len(remaining),
            total,
            stall_timeout,
        )
    return remaining


def drain_events(timeout: float) -> None:
    """Send the events this process still holds, waiting up to ``timeout`` seconds.

    From a thread of its own: where the calling thread runs an event loop (the runner of an
    async flow exits on it), Prefect's ``EventsWorker.drain_all`` returns an awaitable instead
    of waiting, and a sync caller could only drop it unawaited.
    """
    drainer = threading.Thread(
        target=EventsWorker.drain_all,
        kwargs={"timeout": timeout, "at_exit": False},
        name="poolflow-drain-events",
        daemon=True,
    )
    drainer.start()
    drainer.join(timeout + 1)


def _poll_while_progressing(remaining: set[UUID], stall_timeout: float) -> set[UUID]:
    """Re-check ``remaining`` with backoff until none are left or ``stall_timeout`` passes idle."""
    last_progress = time.monotonic()
    delay = 0.05
    while remaining:
        still = unrecorded_task_runs(remaining)
        now = time.monotonic()
        if len(still) < len(remaining):
            last_progress = now
        remaining = still
        if not remaining or now - last_progress >= stall_timeout:
            break
        time.sleep(delay)
        delay = min(delay * 2, _MAX_POLL_DELAY)
    return remaining
