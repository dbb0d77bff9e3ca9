"""The exact parser keeps every document of real and malformed input; html5lib does not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from poolflow.tasks.parse import parse_exact, parse_html5lib, parse_text

OPEN_LINE = re.compile(r"^<doc ", re.M)


def doc(doc_id: str, body: str, title: str = "t") -> str:
    return f'<doc id="{doc_id}" url="u{doc_id}" title="{title}">\n{body}</doc>\n'


@pytest.mark.corpus
def test_every_corpus_document_is_parsed_and_rebuilds_the_file(corpus: Path) -> None:
    total = 0
    for path in sorted((corpus / "AA").iterdir()):
        text = path.read_text(encoding="utf-8")
        result = parse_exact(text)
        assert len(result.documents) == len(OPEN_LINE.findall(text)), path.name
        assert result.warnings == []
        rebuilt = "".join(
            f'<doc id="{d.id}" url="{d.url}" title="{d.title}">\n{d.text}</doc>\n' for d in result.documents
        )
        assert rebuilt == text, f"{path.name} does not rebuild byte for byte"
        total += len(result.documents)
    assert total == 4274


@pytest.mark.corpus
def test_wiki_09_keeps_all_451_documents_where_html5lib_drops_97(corpus: Path) -> None:
    text = (corpus / "AA" / "wiki_09").read_text(encoding="utf-8")
    assert len(parse_exact(text).documents) == 451
    kept = parse_html5lib(text).documents
    assert len(kept) == 451 - 97  # everything after the unterminated <!-- becomes a comment
    exact_ids = [d.id for d in parse_exact(text).documents]
    assert [d.id for d in kept] == exact_ids[: len(kept)]


def test_text_is_verbatim_including_markup_and_entities() -> None:
    body = 'Title\n\n<ref name="x">a &amp; b</ref> <br> <!-- open\n=SUM(A1)\n'
    result = parse_exact(doc("1", body) + doc("2", "next\n"))
    assert [d.text for d in result.documents] == [body, "next\n"]
    assert result.documents[1].line == 7


def test_missing_close_tag_ends_at_next_document_with_a_warning() -> None:
    text = '<doc id="1" url="u" title="a">\nfirst\n' + doc("2", "second\n")
    result = parse_exact(text)
    assert [(d.id, d.text) for d in result.documents] == [("1", "first\n"), ("2", "second\n")]
    assert "no </doc>" in result.warnings[0]


def test_missing_close_tag_at_end_of_file_keeps_the_rest() -> None:
    result = parse_exact(doc("1", "a\n") + '<doc id="2" url="u" title="b">\ntail without end')
    assert [d.text for d in result.documents] == ["a\n", "tail without end"]
    assert "end of file" in result.warnings[0]


def test_stray_close_tag_and_outside_text_are_reported_not_merged() -> None:
    result = parse_exact("junk\n</doc>\n" + doc("1", "a\n"))
    assert [d.text for d in result.documents] == ["a\n"]
    assert len(result.warnings) == 2


def test_bom_crlf_reordered_and_missing_attributes() -> None:
    text = '\ufeff<doc title="T" id="7">\r\nline\r\n</doc>\r\n'
    result = parse_exact(text)
    (document,) = result.documents
    assert (document.id, document.title, document.url) == ("7", "T", "")
    assert document.text == "line\r\n"
    assert any("byte-order mark" in w for w in result.warnings)
    assert any("no url" in w for w in result.warnings)


def test_title_with_quote_and_doc_text_inside_body() -> None:
    body = 'the string <doc id="x"> inline and\n<doc without closing bracket\n'
    result = parse_exact(doc("1", body, title='say "hi"'))
    (document,) = result.documents
    assert document.title == 'say "hi"'
    assert document.text == body


def test_empty_document_and_file_without_documents() -> None:
    assert [d.text for d in parse_exact(doc("1", "")).documents] == [""]
    assert parse_exact("").documents == []


def test_unknown_parser_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown parser"):
        parse_text("", "lxml")
