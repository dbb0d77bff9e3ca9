"""How Excel stores text in its XML: control characters as ``_xHHHH_`` escapes.

Excel reads ``_xHHHH_`` in a cell's XML as the character U+HHHH, so a control character is
written as its escape and a literal ``_xHHHH_`` in the text has its underscore escaped
(``_x005F_``) to read back as itself. Both of poolflow's writers (the workbooks through
xlsxwriter and the report's own sheet XML) escape through this one function.
"""

from __future__ import annotations

import re

# Every underscore that starts an _xHHHH_ sequence is escaped, overlapping ones included
# (xlsxwriter's own pattern misses "_x005F_x0041_"'s second sequence).
_LITERAL_ESCAPE = re.compile(r"_(?=x[0-9a-fA-F]{4}_)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\ufffe\uffff]")


def escape_for_xlsx(text: str) -> str:
    """Escape ``text`` the way Excel stores it in XML (``_xHHHH_``)."""
    if "_x" in text:
        text = _LITERAL_ESCAPE.sub("_x005F_", text)
    return _CONTROL.sub(lambda m: f"_x{ord(m.group()):04X}_", text)
