"""One work item: an input file parsed once into its xlsx artifact, its report part and its
per-document stats.

An item is named by its path relative to the input directory (``AA/wiki_00``); its artifact
is ``<output>/items/AA/wiki_00.xlsx`` and its rows of the report's ``docs`` sheet, rendered
and deflated here in the pool rather than in the report step, are
``<output>/.poolflow/report-parts/AA/wiki_00.docs.part`` (``poolflow.tasks.report_parts``). The
artifact's ``meta`` sheet records the input's fingerprint, so a rerun skips writing items
whose artifact is complete and whose input is unchanged; their stats still come from the one
read and parse of the input, and so does their report part if it is missing or was made from
something else (an output written before parts existed, say).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

from poolflow.tasks import storage
from poolflow.tasks.document_rows import DocumentRows
from poolflow.tasks.parse import Document, parse_text
from poolflow.tasks.report_parts import PART_SUFFIX, is_current, write_part
from poolflow.tasks.stats import DocumentStats, document_stats
from poolflow.tasks.xlsx import EXCEL_MAX_COLUMNS, Row, read_sheet, split_cell
from poolflow.tasks.xlsx_package import Table, rendered, write_package

ARTIFACT_FORMAT = "poolflow-item/1"
ITEMS_DIR = "items"
REPORT_PARTS_DIR = ".poolflow/report-parts"
DOC_COLUMNS = ["line", "id", "url", "title"]
MAX_TEXT_CELLS = EXCEL_MAX_COLUMNS - len(DOC_COLUMNS)


class ItemError(Exception):
    """An item that cannot be processed; the message names the file and the reason."""

    def __init__(self, item: str, reason: str) -> None:
        super().__init__(f"{item}: {reason}")
        self.item = item
        self.reason = reason

    def __reduce__(self) -> tuple[type[ItemError], tuple[str, str]]:
        return (type(self), (self.item, self.reason))


class ItemStatus(str, Enum):
    """What became of an item; the value is what the report's ``summary`` sheet shows."""

    DONE = "done"  # its artifact was written now
    SKIPPED = "skipped"  # its artifact was already current
    FAILED = "failed"

    def __str__(self) -> str:  # the value, as a plain ``str`` would print, on every Python version
        return self.value


@dataclass(frozen=True)
class ItemResult:
    """What one item produced; one row of the report's ``summary`` sheet."""

    item: str
    status: ItemStatus
    documents: int = 0
    characters: int = 0
    text_columns: int = 1
    warnings: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class ItemOutput:
    """What one item's single task returns: its summary row and its stats tuple (one parse)."""

    result: ItemResult
    stats: DocumentStats


class ItemFolder:
    """The files ``<output_dir>/<folder>/<item><suffix>`` of many items.

    The folder is resolved once; each item's path is resolved on its own (one ``realpath``
    walk, not two), and names that lead outside the folder are refused.
    """

    def __init__(self, output_dir: Path, folder: str, suffix: str) -> None:
        self.root = (output_dir / folder).resolve()
        self.suffix = suffix

    def path(self, item: str) -> Path:
        """``item``'s file; ``ItemError`` if its name escapes the folder."""
        path = Path(os.path.realpath(self.joined(item)))
        if not path.is_relative_to(self.root):
            raise ItemError(item, "item name leads outside the output directory")
        return path

    def joined(self, item: str) -> Path:
        """``item``'s file as its name reads, not resolved: for an item whose file ``path``
        has accepted already (a link to a written artifact), without a walk per item."""
        return self.root / f"{item}{self.suffix}"


def artifact_folder(output_dir: Path) -> ItemFolder:
    """Where the items' xlsx artifacts live."""
    return ItemFolder(output_dir, ITEMS_DIR, ".xlsx")


def report_part_folder(output_dir: Path) -> ItemFolder:
    """Where the items' report parts live (their rows of the report's ``docs`` sheet)."""
    return ItemFolder(output_dir, REPORT_PARTS_DIR, PART_SUFFIX)


def artifact_path(output_dir: Path, item: str) -> Path:
    """Where the xlsx artifact of ``item`` lives."""
    return artifact_folder(output_dir).path(item)


def report_part_path(output_dir: Path, item: str) -> Path:
    """Where the report part of ``item`` lives."""
    return report_part_folder(output_dir).path(item)


def text_columns_header(count: int) -> list[str]:
    """``text``, ``text_2``, …: the headers of a text split over ``count`` cells."""
    return ["text"] + [f"text_{n}" for n in range(2, count + 1)]


def _file_version(status: os.stat_result) -> tuple[int, int, int, int]:
    """What tells two versions of a file apart: (device, inode, size, mtime in ns)."""
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


@dataclass(frozen=True)
class InputRead:
    """One read of an item's file: its text and bytes, and which version of the file they are."""

    path: Path
    text: str
    data: bytes
    version: tuple[int, int, int, int]  # ``_file_version`` of the file when it was opened
    read_at: str  # when the read ended, UTC

    def changed(self) -> bool:
        """True if the file at ``path`` is no longer the version that was opened (or is gone).

        Called at the end of processing, it catches a writer appending, rewriting or replacing
        the file at any time from the open on, during the read included.
        """
        try:
            return _file_version(os.stat(self.path)) != self.version
        except OSError:
            return True

    def change_warning(self, item: str) -> str:
        """The warning recorded for an item whose file ``changed()``."""
        return f"{item} changed while it was being read; the report holds the version read at {self.read_at}"


def read_input(input_dir: Path, item: str, encoding: str = "utf-8") -> InputRead:
    """Read and decode an item's file once, noting which version of it was read."""
    path = input_dir / item
    try:
        with path.open("rb") as handle:
            version = _file_version(os.fstat(handle.fileno()))
            data = handle.read()
    except FileNotFoundError:
        raise ItemError(item, "file vanished before it could be read") from None
    except PermissionError:
        raise ItemError(item, "permission denied") from None
    except OSError as exc:
        raise ItemError(item, f"cannot read: {exc.strerror or exc}") from None
    read_at = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    if b"\x00" in data:
        raise ItemError(item, "binary file (contains NUL bytes), not WikiExtractor text")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ItemError(
            item, f"not valid {encoding} at byte {exc.start}; pass the right --encoding"
        ) from None
    return InputRead(path, text, data, version, read_at)


def _made_from(sha256: str, parser: str, encoding: str) -> dict[str, str]:
    """What an artifact and a report part are made from: the meta keys that must match to reuse them."""
    return {"format": ARTIFACT_FORMAT, "sha256": sha256, "parser": parser, "encoding": encoding}


def _meta(item: str, made_from: dict[str, str], result: ItemResult) -> dict[str, str]:
    return {
        **made_from,
        "item": item,
        "documents": str(result.documents),
        "characters": str(result.characters),
        "text_columns": str(result.text_columns),
        "warnings": str(result.warnings),
    }


def read_meta(artifact: Path) -> dict[str, str]:
    """The ``meta`` sheet of an artifact as a dict (empty if the file is not ours)."""
    try:
        return {str(row[0]): str(row[1]) for row in read_sheet(artifact, "meta")}
    except Exception:  # a foreign or corrupt file is simply not current
        return {}


def _current_result(artifact: Path, item: str, made_from: dict[str, str]) -> ItemResult | None:
    """The recorded result if ``artifact`` is complete and was made from this exact input."""
    if not artifact.exists():
        return None
    meta = read_meta(artifact)
    if any(meta.get(key) != value for key, value in made_from.items()):
        return None
    return ItemResult(
        item=item,
        status=ItemStatus.SKIPPED,
        documents=int(meta["documents"]),
        characters=int(meta["characters"]),
        text_columns=int(meta["text_columns"]),
        warnings=int(meta["warnings"]),
    )


def _noncharacter_warnings(documents: list[Document]) -> list[str]:
    """Name documents holding U+FFFE/U+FFFF, which xlsx stores as escapes calamine cannot undo."""
    return [
        f"line {doc.line}: document id={doc.id} contains Unicode non-characters U+FFFE/U+FFFF; "
        "the xlsx holds them as _xFFFE_/_xFFFF_"
        for doc in documents
        if "\ufffe" in doc.text or "\uffff" in doc.text
    ]


def artifact_rows(item: str, documents: list[Document]) -> tuple[list[Row], int]:
    """The artifact's ``docs`` rows (line, id, url, title, text cells…) and the most text cells in one;
    ``ItemError`` for a document longer than one Excel row holds."""
    rows: list[Row] = []
    widest = 1
    for doc in documents:
        pieces = split_cell(doc.text)
        if len(pieces) > MAX_TEXT_CELLS:
            raise ItemError(
                item,
                f"document id={doc.id} (line {doc.line}) has {len(doc.text):,} characters, "
                f"more than one Excel row holds ({MAX_TEXT_CELLS:,} cells)",
            )
        widest = max(widest, len(pieces))
        rows.append([doc.line, doc.id, doc.url, doc.title, *pieces])
    return rows, widest


def _write_report_part(output_dir: Path, item: str, made_from: dict[str, str], rows: DocumentRows) -> None:
    """The item's report part: its artifact rows with the source item where the artifact has the
    line number (rendered with the artifact's, or on their own if the artifact is current)."""
    path = report_part_path(output_dir, item)
    write_part(path, item, made_from, rows.part(), rows.count, rows.columns)


def parse_item(
    input_dir: str,
    item: str,
    output_dir: str,
    parser: str = "exact",
    encoding: str = "utf-8",
) -> ItemOutput:
    """Read and parse ``input_dir/item`` once: write its xlsx artifact and its report part
    (atomically) unless they are already current, and return the item's result with its
    per-document stats.

    If the file changes while it is processed (a writer still appending), the artifact and the
    stats hold the version read and the artifact's warnings name the file and when it was read.
    """
    if storage.is_remote(output_dir):
        # A current remote artifact and report part are reused from the stage; new ones are uploaded.
        return storage.run_staged(
            output_dir,
            [artifact_key(item), report_part_key(item)],
            lambda stage: parse_item(input_dir, item, stage, parser, encoding),
        )
    output = Path(storage.local_path(output_dir))
    started = time.perf_counter()
    artifact = artifact_path(output, item)
    source = read_input(Path(input_dir), item, encoding)
    made_from = _made_from(hashlib.sha256(source.data).hexdigest(), parser, encoding)
    parsed = parse_text(source.text, parser)
    stats = document_stats(parsed.documents)
    current = _current_result(artifact, item, made_from)
    if current is not None and not source.changed():
        # The artifact was made from these very bytes by this parser: so are these rows.
        if not is_current(report_part_path(output, item), item, made_from):
            rows = artifact_rows(item, parsed.documents)[0]
            _write_report_part(output, item, made_from, DocumentRows(item, rows))
        return ItemOutput(current, stats)
    parsed.warnings.extend(_noncharacter_warnings(parsed.documents))
    rows, widest = artifact_rows(item, parsed.documents)
    # The input is done with (what follows writes what was read): the warning says if it is stale.
    if source.changed():
        parsed.warnings.append(source.change_warning(item))
    result = ItemResult(
        item=item,
        status=ItemStatus.DONE,
        documents=len(parsed.documents),
        characters=sum(len(doc.text) for doc in parsed.documents),
        text_columns=widest,
        warnings=len(parsed.warnings),
    )
    documents = DocumentRows(item, rows)
    meta = _meta(item, made_from, result)
    tables = [
        Table("docs", DOC_COLUMNS + text_columns_header(widest), len(rows), documents.take),
        Table("warnings", ["warning"], len(parsed.warnings), rendered([w] for w in parsed.warnings)),
        Table("meta", ["key", "value"], len(meta), rendered(meta.items())),
    ]
    # One deflating thread: the pool runs an item per core already.
    write_package(artifact, tables, threads=1)
    _write_report_part(output, item, made_from, documents)
    timed = replace(result, seconds=round(time.perf_counter() - started, 4))
    return ItemOutput(timed, stats)


def artifact_key(item: str) -> str:
    """The artifact's path relative to the output (``items/AA/wiki_00.xlsx``), same refusal."""
    return artifact_path(Path("/"), item).relative_to("/").as_posix()


def artifact_url(output_dir: str, item: str) -> str:
    """The artifact's URL under a remote ``output_dir``."""
    return storage.join(output_dir, artifact_key(item))


def artifact_keys(items: Sequence[ItemResult]) -> list[str]:
    """``artifact_key`` of each item that did not fail: what a step reading the artifacts needs."""
    return [artifact_key(result.item) for result in items if result.status is not ItemStatus.FAILED]


def report_part_key(item: str) -> str:
    """The report part's path relative to the output, same refusal."""
    return report_part_path(Path("/"), item).relative_to("/").as_posix()


def report_part_keys(items: Sequence[ItemResult]) -> list[str]:
    """``report_part_key`` of each item that did not fail: what the report step reads."""
    return [report_part_key(result.item) for result in items if result.status is not ItemStatus.FAILED]
