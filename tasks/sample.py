"""Generate a synthetic corpus in WikiExtractor's format (``AA/wiki_00``, …).

The documents carry what real Korean Wikipedia output carries and what broke the old
script: Hangul and emoji, texts longer than an Excel cell, markup remnants (``<ref>``,
``<br>``, ``<nowiki>``, ``<math>``), an unterminated ``<!--``, lines starting with ``=``,
``+``, ``-`` or ``@``, and a control character.
"""

from __future__ import annotations

import random
from pathlib import Path

_SYLLABLES = "가나다라마바사아자차카타파하대한민국서울역사문화과학수학철학언어지리정치경제사회예술음악"
_EMOJI = "😀🎉🚀🌏📚🧪"
_REMNANTS = (
    '<ref name="src">출처</ref>',
    "<br>",
    "<nowiki>[[링크]]</nowiki>",
    "<math>x^2 + y^2 = z^2</math>",
    "<chem>H2O</chem>",
)
_TRICKY_LINES = ("=SUM(A1:A9)", "+82 2 123 4567", "-1", "@멘션", "제어문자\x01포함", "_x0041_ 이스케이프")


_VOCABULARY = 4096  # distinct words per corpus: drawing whole words keeps generation fast


def _vocabulary(rng: random.Random) -> list[str]:
    return ["".join(rng.choices(_SYLLABLES, k=rng.randint(1, 4))) for _ in range(_VOCABULARY)]


def _sentence(rng: random.Random, vocabulary: list[str]) -> str:
    words = rng.choices(vocabulary, k=rng.randint(4, 14))
    if rng.random() < 0.1:
        words.append(rng.choice(_EMOJI))
    if rng.random() < 0.15:
        words.append(rng.choice(_REMNANTS))
    return " ".join(words) + "."


def _paragraphs(rng: random.Random, vocabulary: list[str], characters: int) -> str:
    lines: list[str] = []
    size = 0
    while size < characters:
        line = " ".join(_sentence(rng, vocabulary) for _ in range(rng.randint(1, 6)))
        lines.append(line)
        size += len(line) + 2
    return "\n\n".join(lines)


def _document(
    rng: random.Random, vocabulary: list[str], doc_id: int, characters: int, extra: str = ""
) -> str:
    title = "".join(rng.choices(_SYLLABLES, k=rng.randint(2, 6)))
    body = _paragraphs(rng, vocabulary, characters) + extra
    return (
        f'<doc id="{doc_id}" url="https://ko.wikipedia.org/wiki?curid={doc_id}" title="{title}">\n'
        f"{title}\n\n{body}\n\n</doc>\n"
    )


def write_sample_corpus(root: Path, files: int = 20, docs_per_file: int = 40, seed: int = 7) -> int:
    """Write ``files`` WikiExtractor files under ``root/AA``; return the number of documents."""
    rng = random.Random(seed)
    vocabulary = _vocabulary(rng)
    folder = root / "AA"
    folder.mkdir(parents=True, exist_ok=True)
    doc_id = 5
    total = 0
    for number in range(files):
        parts: list[str] = []
        for index in range(docs_per_file):
            characters = rng.choice((300, 1_000, 3_000, 8_000))
            extra = ""
            if index == 0 and number % 5 == 0:
                characters = 40_000 + 20_000 * (number % 3)  # longer than one Excel cell
            if index == 1:
                extra = "\n" + "\n".join(rng.sample(_TRICKY_LINES, 3))
            if index == 2 and number == files // 2:
                extra = "\n<!-- 닫히지 않은 주석"  # swallows later documents in html5lib
            parts.append(_document(rng, vocabulary, doc_id, characters, extra))
            doc_id += rng.randint(1, 9)
            total += 1
        (folder / f"wiki_{number:02d}").write_text("".join(parts), encoding="utf-8")
    return total
