"""``Whole``: a task parameter that Prefect's engine passes on as one object, without walking it.

Before a task runs, Prefect's engine walks its parameters element by element (lists, tuples,
dicts, dataclasses), twice: to find the futures it must wait on and record as upstream
inputs, and to replace them by their results. Over the report step's parameters, every
item's result and the stats of every document (150,000 on a 700-file dump), the walks took
seconds: longer than writing the report. A ``Whole`` is none of the walked types; the task
function takes its ``value``. Wrap only values that hold no futures. (Prefect's ``quote`` is
meant for this, but it is a tuple, and Dask's argument packing hands the worker a plain tuple.)
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Whole(Generic[T]):
    """``value``, handed to a task without Prefect's engine walking into it."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value
