"""Per-item result caching for chunked maps, as Prefect caches one task run's result.

A chunk's task run holds many items, so Prefect's own cache (one key per task run) cannot
serve them; ``ItemCache`` computes each item's key with the task's cache policy and
reads and writes the task's result store, so a retried flow run reuses every item that
succeeded before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.context import FlowRunContext, TaskRunContext
from prefect.results import get_result_store

if TYPE_CHECKING:
    from prefect.results import ResultStore
    from prefect.tasks import Task


class ItemCache:
    """Per-item results under the task's cache policy, in the task's result store."""

    def __init__(self, task: Task[Any, Any], policy: CachePolicy, store: ResultStore) -> None:
        self.task, self.policy, self.store = task, policy, store

    @classmethod
    def for_task(cls, task: Task[Any, Any]) -> ItemCache | None:
        """A cache when ``task`` persists results under a cache policy, else None."""
        policy = task.cache_policy
        if not task.persist_result or not isinstance(policy, CachePolicy) or policy is NO_CACHE:
            return None
        store = get_result_store().update_for_task(task, _sync=True)  # type: ignore[call-arg]
        return cls(task, policy, cast("ResultStore", store))

    def key(self, context: TaskRunContext, inputs: dict[str, Any]) -> str | None:
        """The item's cache key, computed as Prefect would for a task run of the item alone."""
        flow_context = FlowRunContext.get()
        item_context = context.model_copy(update={"task": self.task, "parameters": inputs})
        flow_parameters = flow_context.parameters if flow_context is not None else {}
        return self.policy.compute_key(
            task_ctx=item_context, inputs=inputs, flow_parameters=flow_parameters or {}
        )

    def read(self, key: str) -> tuple[bool, Any]:
        """(True, result) for a stored, unexpired result under ``key``; (False, None) otherwise."""
        if not self.store.exists(key):
            return False, None
        record = self.store.read(key)
        expiration = record.metadata.expiration
        if expiration is not None:
            from prefect.types._datetime import now

            if expiration < now("UTC"):
                return False, None
        return True, record.result

    def write(self, key: str, value: Any) -> None:
        self.store.write(value, key=key)
