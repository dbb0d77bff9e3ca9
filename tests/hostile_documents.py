"""Documents that have broken spreadsheets before, shared by the report and LibreOffice tests."""

from __future__ import annotations

DOC = '<doc id="{0}" url="{1}" title="{2}">\n{3}</doc>\n'

# (id, url, title, text) per document; empty attributes leave cells out of the artifact rows.
HOSTILE: dict[str, list[tuple[str, str, str, str]]] = {
    "AA/wiki_00": [
        ("1", "u1", "=1+1", "=SUM(A1:A2)\n"),
        ("2", "u2", '_x0041_ & <b> "q"', "_x0041_ _x005F_x0041_ _x005f_ _xABCD_\n"),
        ("3", "", "", "control \x01\x02\x1f and tab\t\n"),
        ("", "u4", " padded ", "  leading and trailing  \n"),
    ],
    "AA/wiki_01": [("5", "u5", "astral", "😀" * 20_000 + "\n"), ("6", "u6", "long", "가" * 70_000 + "\n")],
    "AA/wiki_02": [],  # a file without documents
    "AB/x&y_x0042_<z>": [("7", "u7", "name needs escapes", "\n"), ("8", "u8", "<r>rich?</r>", "text\n")],
    "AB/wiki_03": [(f"9{n}", "u9", "t", f"row {n}\n") for n in range(7)],
}
