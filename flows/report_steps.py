"""The steps over every item at once, the report and ``report.parquet``, as their tasks run them.

Their parameters are every item's result and the stats of every document. Before a task runs,
Prefect's engine walks its parameters element by element (lists, tuples, dicts, dataclasses),
twice: to find the futures it must wait on and record as upstream inputs, and to replace them
by their results. Over the stats of 150,000 documents (a 700-file dump) the walks took
seconds, longer than writing the report. So the flow hands them over in a ``Whole``, which is
none of the walked types, and the step takes its ``value``. (Prefect's ``quote`` is meant for
this, but it is a tuple, and Dask's argument packing hands the worker a plain tuple.)

This module imports no Prefect, and pandas only for the parquet step: the worker that runs a
step imports this module and the tasks it calls, not the flow's module (Prefect would cost
that worker its memory and import time; pandas and pyarrow about as much).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from poolflow.tasks.items import ItemResult
from poolflow.tasks.report import ReportResult, build_report
from poolflow.tasks.stats import DocumentStats

if TYPE_CHECKING:
    from poolflow.tasks.parquet import ParquetResult

T = TypeVar("T")


class Whole(Generic[T]):
    """``value``, handed to a task without Prefect's engine walking into it (module doc)."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value


def step_parameters(
    output_dir: str, items: list[ItemResult], stats: list[DocumentStats | None]
) -> dict[str, Any]:
    """The parameters of ``report_step`` and ``parquet_step``: the lists hold no futures."""
    return {"output_dir": output_dir, "items": Whole(items), "stats": Whole(stats)}


def report_step(
    output_dir: str, items: Whole[list[ItemResult]], stats: Whole[list[DocumentStats | None]]
) -> ReportResult:
    """``build_report`` over every item's result and stats."""
    return build_report(output_dir, items.value, stats.value)


def parquet_step(
    output_dir: str, items: Whole[list[ItemResult]], stats: Whole[list[DocumentStats | None]]
) -> ParquetResult:
    """``write_parquet`` over every item's result and stats."""
    # Imported here: pandas and pyarrow would cost every worker that runs the report their memory.
    from poolflow.tasks.parquet import write_parquet

    return write_parquet(output_dir, items.value, stats.value)
