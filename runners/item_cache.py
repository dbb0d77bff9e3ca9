"""Per-item result caching for chunked maps, as Prefect caches one task run's result.

A chunk's task run holds many items, so Prefect's own cache (one key per task run) cannot
serve them; ``ItemCache`` computes each item's key with the task's cache policy and reads
the task's result store, and its ``RecordWriter`` writes each record as that store makes it
(``ResultStore.create_result_record``). The writer travels with a chunk's jobs: the worker
that made a result writes its record, not the flow process.

The store's own calls resolve the storage path on every call and name a lock holder from the
host name: for thousands of short items the largest cost per item. When the store is a
plain local folder (``LocalFileSystem``, no separate metadata storage, no locks), a key whose
file is absent is a miss without asking the store, and a record is written straight to its
file. A record a killed worker left half-written cannot be read: it is a miss, and its item
runs again. Reads of present records and every other store go through Prefect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, cast

import prefect.runtime
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.context import FlowRunContext, TaskRunContext
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore, should_persist_result
from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, get_current_settings

from poolflow.runners.prefect_compat import task_result_store

if TYPE_CHECKING:
    from prefect.tasks import Task
    from prefect.types import DateTime


RUNTIME_MODULES = ("deployment", "flow_run", "task_run")
"""The ``prefect.runtime`` modules a ``result_storage_key`` template may name."""


class ItemCache:
    """Per-item results under the task's cache policy, in the task's result store.

    As for a task run of its own, an item's record expires after the task's
    ``cache_expiration``, and ``refresh_cache`` (the task's, else Prefect's setting) skips
    the read but still writes, so the next run reuses the fresh value.
    """

    def __init__(
        self,
        task: Task[Any, Any],
        policy: CachePolicy | None,
        store: ResultStore,
        context: TaskRunContext | None = None,
    ) -> None:
        self.task, self.policy, self.store = task, policy, store
        # The chunk's task run context naming the mapped task; ``key`` gives it each item's
        # parameters in turn (one copy per chunk attempt, not one per item).
        self._item_context = None if context is None else context.model_copy(update={"task": task})
        self.writer = RecordWriter(_uncached(store), task.cache_expiration, plain_local_folder(store))
        refresh = task.refresh_cache
        self.refresh = bool(PREFECT_TASKS_REFRESH_CACHE.value() if refresh is None else refresh)

    @classmethod
    def for_task(cls, task: Task[Any, Any], context: TaskRunContext, persist: bool) -> ItemCache | None:
        """A cache for the items of ``task`` run in the task run of ``context``, when their
        results persist (``persist``: ``persists_results`` where the map was called) under a
        cache policy or a ``result_storage_key`` (Prefect then keys by it), else None."""
        given = task.cache_policy
        policy = given if isinstance(given, CachePolicy) and given is not NO_CACHE else None
        if not persist or (policy is None and task.result_storage_key is None):
            return None
        return cls(task, policy, task_result_store(task), context)

    def key(self, inputs: dict[str, Any]) -> str | None:
        """The item's key, as Prefect computes it for a task run of the item alone: from the
        cache policy, else from ``result_storage_key`` formatted with the item's parameters
        and ``prefect.runtime``."""
        item_context = self._item_context
        if item_context is None:
            raise RuntimeError("an ItemCache made without a task run context computes no keys")
        item_context.parameters = inputs
        if self.policy is None:
            with item_context:
                runtime = {name: getattr(prefect.runtime, name) for name in RUNTIME_MODULES}
                return str(self.task.result_storage_key).format(**runtime, parameters=inputs)
        flow_context = FlowRunContext.get()
        flow_parameters = flow_context.parameters if flow_context is not None else {}
        return self.policy.compute_key(
            task_ctx=item_context, inputs=inputs, flow_parameters=flow_parameters or {}
        )

    def read(self, key: str) -> tuple[bool, Any]:
        """(True, result) for a stored, unexpired result under ``key``; (False, None) otherwise
        (no record, one that cannot be read, or a refresh asked for)."""
        if self.refresh:
            return False, None
        path = self.writer.local_path(key)
        if path is not None and not path.is_file():
            return False, None
        try:
            record = self.store.read(key)
        except Exception:
            return False, None
        expiration = record.metadata.expiration
        if expiration is not None and expiration < datetime.now(timezone.utc):
            return False, None
        return True, record.result


def persists_results(task: Task[Any, Any]) -> bool:
    """Whether Prefect persists the result of a run of ``task`` started here, as its task engine
    decides: the task's ``persist_result``, else the ``PREFECT_TASKS_DEFAULT_PERSIST_RESULT``
    setting, else the enclosing run's (a flow's ``persist_result``, else
    ``PREFECT_RESULTS_PERSIST_BY_DEFAULT``). Asked where a map is called: a chunk's own task
    run persists nothing."""
    if task.persist_result is not None:
        return task.persist_result
    default = get_current_settings().tasks.default_persist_result
    return default if default is not None else should_persist_result()


@dataclass(frozen=True)
class RecordWriter:
    """Writes items' result records as the task's result store makes them, in whichever process
    made the result, each expiring ``lifetime`` after it is written; straight to its file in
    ``folder``, the store's plain local folder, if it has one."""

    store: ResultStore
    lifetime: timedelta | None
    folder: Path | None

    def write(self, key: str, value: Any) -> None:
        """Store ``value`` as the record of ``key``; raises what the store or the file raises."""
        record = self.store.create_result_record(value, key=key, expiration=_expiration(self.lifetime))
        path = self.local_path(key)
        if path is None:
            self.store.persist_result_record(record)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(record.serialize())

    def local_path(self, key: str) -> Path | None:
        """Where ``key``'s record lives in the plain local folder; None: ask the store."""
        relative = PurePosixPath(key)
        if self.folder is None or relative.is_absolute() or ".." in relative.parts:
            return None  # the store refuses keys outside its folder with its own error
        return self.folder / relative


def _expiration(lifetime: timedelta | None) -> DateTime | None:
    """When a record written now for ``lifetime`` expires (None: never)."""
    # Prefect's ``DateTime`` is a datetime its models validate from a stdlib one.
    return cast("DateTime | None", None if lifetime is None else datetime.now(timezone.utc) + lifetime)


def _uncached(store: ResultStore) -> ResultStore:
    """``store`` keeping no record in memory, for a writer whose copies live as long as a
    chunk's jobs in a worker: the worker never reads the records it writes."""
    return ResultStore(
        result_storage=store.result_storage,
        metadata_storage=store.metadata_storage,
        lock_manager=store.lock_manager,
        serializer=store.serializer,
        cache_result_in_memory=False,
    )


def plain_local_folder(store: ResultStore) -> Path | None:
    """The resolved folder of a store that keeps whole records as files in one local folder."""
    storage = store.result_storage
    if (
        type(storage) is not LocalFileSystem
        or store.metadata_storage is not None
        or store.lock_manager is not None
        or store.result_storage_block_id is not None
    ):
        return None
    return Path(storage.basepath).expanduser().resolve() if storage.basepath else Path(".").resolve()
