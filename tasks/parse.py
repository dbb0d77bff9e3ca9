"""Parse WikiExtractor output (``<doc id=".." url=".." title="..">…</doc>`` records).

The default parser is exact: a document's text is every character between the end of
its opening-tag line and the start of its ``</doc>`` line, untouched. The ``html5lib``
parser reproduces the old BeautifulSoup script and is lossy (see ``parse_html5lib``).

Rules for malformed input (each produces a warning, never a lost document):
- a line that is a complete opening tag always starts a new document; if the previous
  one had no ``</doc>`` it ends there;
- a document still open at end of file ends at end of file;
- a ``</doc>`` line outside any document is ignored;
- non-blank text outside any document is ignored and counted;
- a byte-order mark at the start of the file is dropped;
- a document with a missing ``id``, ``url`` or ``title`` gets an empty value.
``\\r`` before a line end is kept in the text and tolerated after tags (CRLF files).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PARSERS = ("exact", "html5lib")

# A tag line is a whole line: an opening tag with attributes, or a closing tag.
_TAG_LINE = re.compile(r"^(?:<doc(?P<attrs>\s[^\n]*?)>|(?P<close></doc>))\r?$", re.M)
# Attribute values run to the quote that is followed by another attribute or the end,
# so a title containing a double quote is still read whole.
_ATTRIBUTE = re.compile(r'(\w+)="(.*?)"(?=\s+\w+="|\s*$)', re.S)
_ATTRIBUTE_NAMES = ("id", "url", "title")


@dataclass(frozen=True)
class Document:
    """One ``<doc>`` record; ``line`` is the 1-based line of its opening tag."""

    id: str
    url: str
    title: str
    text: str
    line: int


@dataclass
class ParseResult:
    """The documents of one file plus human-readable warnings about its shape."""

    documents: list[Document] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_attributes(attrs: str) -> dict[str, str]:
    """Read ``name="value"`` pairs of an opening tag, in any order."""
    return {name: value for name, value in _ATTRIBUTE.findall(attrs.strip())}


def _line_number(text: str, offset: int, cache: list[int]) -> int:
    """1-based line of ``offset``; ``cache`` holds [last_offset, last_line] to stay linear."""
    last_offset, last_line = cache
    line = last_line + text.count("\n", last_offset, offset)
    cache[0], cache[1] = offset, line
    return line


def _document(attrs: str, text: str, line: int, warnings: list[str]) -> Document:
    values = parse_attributes(attrs)
    missing = [name for name in _ATTRIBUTE_NAMES if name not in values]
    if missing:
        warnings.append(f"line {line}: document has no {', '.join(missing)} attribute")
    return Document(
        id=values.get("id", ""),
        url=values.get("url", ""),
        title=values.get("title", ""),
        text=text,
        line=line,
    )


def _note_outside_text(text: str, start: int, end: int, line: int, warnings: list[str]) -> None:
    stray = text[start:end].strip()
    if stray:
        warnings.append(f"line {line}: {len(stray)} characters outside any document ignored")


def parse_exact(text: str) -> ParseResult:
    """Split WikiExtractor text into documents without altering a character of their text."""
    result = ParseResult()
    warnings = result.warnings
    if text.startswith("\ufeff"):
        text = text[1:]
        warnings.append("byte-order mark at start of file dropped")
    lines = [0, 1]
    open_attrs: str | None = None
    open_line = 0
    body_start = 0
    outside_start = 0
    for match in _TAG_LINE.finditer(text):
        line = _line_number(text, match.start(), lines)
        if match.group("close"):
            if open_attrs is None:
                _note_outside_text(text, outside_start, match.start(), line, warnings)
                warnings.append(f"line {line}: </doc> outside any document ignored")
                outside_start = match.end()
                continue
            body = text[body_start : match.start()]
            result.documents.append(_document(open_attrs, body, open_line, warnings))
            open_attrs = None
            outside_start = match.end()
            continue
        if open_attrs is not None:
            warnings.append(
                f"line {open_line}: document has no </doc>; it ends at the next <doc> (line {line})"
            )
            body = text[body_start : match.start()]
            result.documents.append(_document(open_attrs, body, open_line, warnings))
        else:
            _note_outside_text(text, outside_start, match.start(), line, warnings)
        open_attrs = match.group("attrs")
        open_line = line
        body_start = min(match.end() + 1, len(text))
    if open_attrs is not None:
        warnings.append(f"line {open_line}: document has no </doc>; it ends at end of file")
        result.documents.append(_document(open_attrs, text[body_start:], open_line, warnings))
    else:
        _note_outside_text(text, outside_start, len(text), _line_number(text, len(text), lines), warnings)
    return result


def parse_html5lib(text: str) -> ParseResult:
    """The old script's parse: BeautifulSoup + html5lib. Lossy, kept for compatibility.

    html5lib treats document text as HTML: markup remnants (``<ref>``, ``<br>``) vanish
    from the text, entities are decoded, and an unterminated ``<!--`` swallows every
    later document of the file.
    """
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text.strip(), "html5lib")
    result = ParseResult()
    for doc in soup.find_all("doc"):
        result.documents.append(
            Document(
                id=str(doc.get("id", "")),
                url=str(doc.get("url", "")),
                title=str(doc.get("title", "")),
                text=doc.text,
                line=0,
            )
        )
    return result


def parse_text(text: str, parser: str = "exact") -> ParseResult:
    """Parse with the named parser (one of ``PARSERS``)."""
    if parser == "exact":
        return parse_exact(text)
    if parser == "html5lib":
        return parse_html5lib(text)
    raise ValueError(f"unknown parser {parser!r}; choose one of {', '.join(PARSERS)}")
