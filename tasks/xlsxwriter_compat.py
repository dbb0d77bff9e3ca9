"""Every non-public part of xlsxwriter that poolflow relies on, in one place.

``tests/test_xlsxwriter_compat.py`` fails, naming the installed and the pinned xlsxwriter,
as soon as a release changes any of them:

- ``Worksheet._escape_control_characters``: the method a constant-memory worksheet passes
  every string through before writing it; ``ExactWorksheet`` replaces it so that
  overlapping literal ``_xHHHH_`` sequences round-trip.
- ``Worksheet._xml_rich_inline_string`` and ``Worksheet._xml_inline_string``: what a
  constant-memory worksheet calls to write a string that looks like rich-text XML, and a
  plain one; ``ExactWorksheet`` writes the first as the second.
"""

from __future__ import annotations

from typing import Any

from xlsxwriter.worksheet import Worksheet

from poolflow.tasks.xlsx_escape import escape_for_xlsx


class ExactWorksheet(Worksheet):  # type: ignore[misc]
    """A worksheet whose strings round-trip: literal ``_xHHHH_`` texts and ``<r>…</r>`` texts too."""

    _escape_control_characters = staticmethod(escape_for_xlsx)

    def _xml_rich_inline_string(self, string: str, attributes: list[tuple[str, Any]]) -> None:
        """Write a string shaped like ``<r>…</r>`` as the plain text it is.

        In constant-memory mode xlsxwriter takes such a string for rich-text XML and writes it
        unescaped (a title ``<r>x</r>`` would read back empty); we never write rich text.
        """
        self._xml_inline_string(string, False, attributes)
