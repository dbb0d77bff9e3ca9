"""Mapped items: one parameter dict, name and future per item of a ``map``.

``expand_map`` expands ``map``'s parameters with Prefect's own ``TaskRunner.map``;
each item gets an ``ItemFuture`` that holds its own final state, value or error, while the
item runs inside a chunk's task run (``poolflow.runners.chunked_map``).
"""

from __future__ import annotations

import concurrent.futures
import inspect
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefect.client.schemas.objects import RunInput, State
from prefect.futures import PrefectConcurrentFuture
from prefect.states import Pending
from prefect.task_runners import TaskRunner
from typing_extensions import Self

if TYPE_CHECKING:
    from prefect.tasks import Task

UNASSIGNED = uuid.UUID(int=0)
_SETTLE_LOCK = threading.Lock()
_CALL_FORM = re.compile(r"^([^(]+)\((.*)\)$", re.DOTALL)


class ItemFuture(PrefectConcurrentFuture[Any]):
    """The future of one mapped item: its own final state, in its chunk's task run.

    ``task_run_id`` is the chunk's, known once the item's chunk forms; reading it earlier
    waits for that (items are chunked in the order they were mapped, so a later item's
    upstream futures always get theirs first). It keeps its own run id and reads and settles
    its state through the public ``wrapped_future``: none of ``PrefectFuture``'s private
    attributes is set here.
    """

    def __init__(self) -> None:
        super().__init__(task_run_id=UNASSIGNED, wrapped_future=concurrent.futures.Future())
        self._assigned = threading.Event()
        self._chunk_run_id = UNASSIGNED
        self._value: Any = None
        self._error: BaseException | None = None
        self._claimed = False

    @property
    def task_run_id(self) -> uuid.UUID:
        self._assigned.wait()
        return self._chunk_run_id

    @property
    def state(self) -> State[Any]:
        if self.wrapped_future.done():
            state: State[Any] = self.wrapped_future.result()
            return state
        return Pending()

    def assign(self, task_run_id: uuid.UUID) -> None:
        self._chunk_run_id = task_run_id
        self._assigned.set()

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        """The item's result, or its error (raised unless ``raise_on_failure`` is False).

        Read from the future itself: ``State.result`` would cross to Prefect's event-loop
        thread for every item.
        """
        try:
            self.wrapped_future.result(timeout=timeout)
        except concurrent.futures.TimeoutError as exc:
            raise TimeoutError(f"item did not complete within {timeout} seconds") from exc
        if self._error is None:
            return self._value
        if raise_on_failure:
            raise self._error
        return self._error

    def settle(self, state: State[Any], value: Any = None, error: BaseException | None = None) -> bool:
        """Give the item its final state and value or error (once); False if it had them."""
        with _SETTLE_LOCK:  # an engine thread and the shutting-down dispatcher may race
            if self._claimed:
                return False
            self._claimed = True
        self._value, self._error = value, error
        self.wrapped_future.set_result(state)
        return True

    @property
    def settled(self) -> bool:
        return self.wrapped_future.done()


@dataclass
class Item:
    """One mapped call: its parameters (maybe holding futures) and its names."""

    index: int
    parameters: dict[str, Any]
    name: str  # like a task run's name, e.g. "parse(AA/wiki_00)": job labels and errors
    label: str  # the short form in a chunk's name, e.g. "AA/wiki_00"
    future: ItemFuture = field(default_factory=ItemFuture)
    error: BaseException | None = None


class _ItemCollector(TaskRunner[Any]):
    """A task runner that runs nothing: Prefect's own ``TaskRunner.map`` expands a map's
    parameters through it, and it keeps each item's parameters and the map's upstream runs."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.calls: list[dict[str, Any]] = []
        self.dependencies: dict[str, set[RunInput]] = {}

    def duplicate(self) -> Self:
        return type(self)()

    def submit(  # type: ignore[override]
        self,
        task: Task[Any, Any],
        parameters: dict[str, Any],
        wait_for: object = None,
        dependencies: dict[str, set[RunInput]] | None = None,
    ) -> None:
        self.calls.append(parameters)
        self.dependencies = dependencies or {}


def expand_map(
    task: Task[Any, Any], parameters: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, set[RunInput]]]:
    """``map``'s parameters as one parameter dict per item, and the map's upstream runs,
    expanded by Prefect's own ``TaskRunner.map`` (``unmapped``, ``allow_failure``, defaults,
    ``**kwargs``, its errors for a map without iterables or of unequal lengths)."""
    collector = _ItemCollector()
    with collector:
        collector.map(task, parameters)
    return collector.calls, collector.dependencies


def item_names(task: Task[Any, Any], index: int, parameters: dict[str, Any]) -> tuple[str, str]:
    """(name, label) of an item: its ``task_run_name`` rendered, else its index in the map.

    ``parse({item})`` gives ("parse(AA/wiki_00)", "AA/wiki_00"); no template ("parse[3]", "3").
    """
    template = task.task_run_name
    try:
        if isinstance(template, str):
            name = template.format(**parameters)
            return name, split_name(name, task.name)[1]
        if callable(template):
            wants_parameters = "parameters" in inspect.signature(template).parameters
            name = str(template(parameters=parameters) if wants_parameters else template())  # type: ignore[call-arg]
            return name, split_name(name, task.name)[1]
    except Exception:  # a template that needs the task-run context or other parameters
        pass
    return f"{task.name}[{index}]", str(index)


def split_name(name: str, default_stem: str) -> tuple[str, str]:
    """("parse", "AA/wiki_00") for "parse(AA/wiki_00)"; (``default_stem``, name) for other forms."""
    match = _CALL_FORM.match(name)
    return (match[1], match[2]) if match else (default_stem, name)
