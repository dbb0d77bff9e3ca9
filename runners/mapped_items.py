"""Mapped items: one parameter dict, name and future per item of a ``map``.

``expand_map`` expands ``map``'s parameters the way Prefect's ``TaskRunner.map`` does;
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
from prefect.exceptions import MappingLengthMismatch, MappingMissingIterable
from prefect.futures import PrefectConcurrentFuture
from prefect.states import Pending
from prefect.utilities.annotations import allow_failure, opaque, quote, unmapped
from prefect.utilities.callables import (
    collapse_variadic_parameters,
    explode_variadic_parameter,
    get_parameter_defaults,
)
from prefect.utilities.collections import isiterable
from prefect.utilities.engine import (
    collect_task_run_inputs_sync,
    resolve_inputs_sync,
)

if TYPE_CHECKING:
    from prefect.tasks import Task

UNASSIGNED = uuid.UUID(int=0)
_SETTLE_LOCK = threading.Lock()
_CALL_FORM = re.compile(r"^([^(]+)\((.*)\)$", re.DOTALL)


class ItemFuture(PrefectConcurrentFuture[Any]):
    """The future of one mapped item: its own final state, in its chunk's task run.

    ``task_run_id`` is the chunk's, known once the item's chunk forms; reading it earlier
    waits for that (items are chunked in the order they were mapped, so a later item's
    upstream futures always get theirs first).
    """

    def __init__(self) -> None:
        super().__init__(task_run_id=UNASSIGNED, wrapped_future=concurrent.futures.Future())
        self._assigned = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self._claimed = False

    @property
    def task_run_id(self) -> uuid.UUID:
        self._assigned.wait()
        return self._task_run_id

    @property
    def state(self) -> State[Any]:
        if self._final_state is not None:
            return self._final_state
        if self._wrapped_future.done():
            state: State[Any] = self._wrapped_future.result()
            return state
        return Pending()

    def assign(self, task_run_id: uuid.UUID) -> None:
        self._task_run_id = task_run_id
        self._assigned.set()

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        """The item's result, or its error (raised unless ``raise_on_failure`` is False).

        Read from the future itself: ``State.result`` would cross to Prefect's event-loop
        thread for every item.
        """
        try:
            self._final_state = self._wrapped_future.result(timeout=timeout)
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
        self._wrapped_future.set_result(state)
        return True

    @property
    def settled(self) -> bool:
        return self._wrapped_future.done()


@dataclass
class Item:
    """One mapped call: its parameters (maybe holding futures) and its names."""

    index: int
    parameters: dict[str, Any]
    name: str  # like a task run's name, e.g. "parse(AA/wiki_00)": job labels and errors
    label: str  # the short form in a chunk's name, e.g. "AA/wiki_00"
    future: ItemFuture = field(default_factory=ItemFuture)
    error: BaseException | None = None


def expand_map(
    task: Task[Any, Any], parameters: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, set[RunInput]]]:
    """``map``'s parameters as one parameter dict per item, and the map's upstream runs.

    The rules of Prefect's ``TaskRunner.map``: top-level futures are resolved to find the
    iterables (and recorded as dependencies), ``unmapped`` and non-iterable values go to
    every item, ``allow_failure``/``quote``/``opaque`` wrap each item's value again, and
    defaults and ``**kwargs`` are filled in. The function's signature is read once, not
    once per item.
    """
    dependencies: dict[str, set[RunInput]] = {
        key: set(collect_task_run_inputs_sync(v, max_depth=0)) for key, v in parameters.items()
    }
    parameters = explode_variadic_parameter(task.fn, resolve_inputs_sync(parameters, max_depth=0))
    mapped: dict[str, list[Any]] = {}
    static: dict[str, Any] = {}
    annotations: dict[str, Any] = {}
    for key, value in parameters.items():
        if isinstance(value, (allow_failure, opaque, quote)):
            annotations[key] = value
            value = value.unwrap()
        if isinstance(value, unmapped):
            static[key] = value.value
        elif isiterable(value):
            mapped[key] = list(value)
        else:
            static[key] = value
    if not mapped:
        raise MappingMissingIterable(f"map needs at least one iterable parameter; got {parameters}")
    lengths = {key: len(values) for key, values in mapped.items()}
    if len(set(lengths.values())) > 1:
        raise MappingLengthMismatch(f"mapped parameters differ in length: {lengths}")
    common = {**get_parameter_defaults(task.fn), **static}
    keys = set(common) | set(mapped)
    collapse = bool(keys - set(inspect.signature(task.fn).parameters))
    calls = []
    for index in range(next(iter(lengths.values()))):
        call = {**common, **{key: values[index] for key, values in mapped.items()}}
        for key, annotation in annotations.items():
            call[key] = annotation.rewrap(call[key])
        calls.append(collapse_variadic_parameters(task.fn, call) if collapse else call)
    return calls, dependencies


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
