"""poolflow's xlsx files as pandas DataFrames, with every document's text whole.

``read_report`` loads ``report.xlsx`` or an item's artifact (``items/AA/wiki_00.xlsx``) with
python-calamine: one DataFrame per sheet, spill sheets (``docs_2``, …) appended to their
base sheet, and a text split over ``text``, ``text_2``, … re-joined into one ``text`` column.
Whole numbers come back as integers. For large reports ``report.parquet`` (see
``poolflow.tasks.parquet``) loads much faster: ``pandas.read_parquet``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from python_calamine import CalamineWorkbook

from poolflow.tasks.xlsx import join_cells, spill_sheet_name

_TEXT_COLUMN = re.compile(r"text(?:_\d+)?")


def base_sheets(names: Sequence[str]) -> list[str]:
    """The sheets that are not spill sheets (``docs_2``, ``docs_3`` of ``docs``), in order."""
    present = set(names)

    def is_spill(name: str) -> bool:
        base, _, number = name.rpartition("_")
        return number.isdigit() and int(number) >= 2 and base in present

    return [name for name in names if not is_spill(name)]


def _column(values: Sequence[Any]) -> list[Any]:
    """Calamine reads every number as float; give whole-number columns back as ints."""
    if values and all(isinstance(v, float) and v.is_integer() for v in values):
        return [int(v) for v in values]
    return list(values)


def _frame(header: list[str], rows: list[list[Any]]) -> pd.DataFrame:
    """A DataFrame of ``rows`` under ``header``; the text columns joined into one ``text``."""
    texts = [i for i, name in enumerate(header) if _TEXT_COLUMN.fullmatch(name)]
    columns: dict[str, list[Any]] = {}
    for i, name in enumerate(header):
        if texts and i == texts[0]:
            columns["text"] = [join_cells([row[j] for j in texts]) for row in rows]
        elif i not in texts:
            columns[name] = _column([row[i] for row in rows])
    return pd.DataFrame(columns, columns=list(columns))


def read_report(path: str | Path) -> dict[str, pd.DataFrame]:
    """Load a poolflow xlsx (``report.xlsx`` or an artifact) as ``{sheet: DataFrame}``.

    ``read_report("OUT/report.xlsx")["docs"]`` has the columns source, id, url, title and
    text (whole, however long); ``["stats"]`` and ``["summary"]`` are the other sheets. An
    artifact gives ``docs`` (line, id, url, title, text), ``warnings`` and ``meta``.
    """
    workbook = CalamineWorkbook.from_path(str(path))
    names = list(workbook.sheet_names)
    frames = {}
    for base in base_sheets(names):
        header: list[str] = []
        rows: list[list[Any]] = []
        index = 0
        while (name := spill_sheet_name(base, index)) in names:
            sheet_rows = workbook.get_sheet_by_name(name).to_python()
            if sheet_rows:
                header = [str(cell) for cell in sheet_rows[0]]
                rows.extend(sheet_rows[1:])
            index += 1
        frames[base] = _frame(header, rows)
    return frames
