"""Artifacts at an fsspec URL: a real S3 API (moto's server) on loopback instead of a shared disk."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from poolflow.flows.wiki_report import wiki_report
from poolflow.tasks.parse import parse_exact
from poolflow.tasks.sample import write_sample_corpus
from poolflow.tasks.storage import run_staged
from poolflow.tasks.xlsx import join_cells, read_sheet

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_wiki_report_writes_items_and_report_to_s3_and_resumes_there(tmp_path: Path, s3_bucket: str) -> None:
    import s3fs

    corpus = tmp_path / "corpus"
    write_sample_corpus(corpus, files=3, docs_per_file=6)
    output = f"{s3_bucket}/nightly"

    state = wiki_report(str(corpus), output, processes=2, return_state=True)

    assert state.is_completed(), state.message
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    found = sorted(fs.find(output.removeprefix("s3://")))
    # The parse results a UI retry reuses live in the bucket too, one object per item.
    results = [key for key in found if key.startswith("poolflow-test/nightly/.poolflow/results/")]
    assert len(results) == 3
    keys = [key for key in found if key not in results]
    parts = [f"poolflow-test/nightly/.poolflow/report-parts/AA/wiki_0{n}.docs.part" for n in range(3)]
    assert keys == [
        *parts,
        "poolflow-test/nightly/items/AA/wiki_00.xlsx",
        "poolflow-test/nightly/items/AA/wiki_01.xlsx",
        "poolflow-test/nightly/items/AA/wiki_02.xlsx",
        "poolflow-test/nightly/report.xlsx",
    ]
    with tempfile.TemporaryDirectory() as local:
        report = Path(local) / "report.xlsx"
        fs.get_file(f"{output}/report.xlsx", str(report))
        rows = [(r[0], r[1], join_cells(r[4:])) for r in read_sheet(report, "docs")]
        expected = [
            (f"AA/{p.name}", d.id, d.text)
            for p in sorted((corpus / "AA").iterdir())
            for d in parse_exact(p.read_text(encoding="utf-8")).documents
        ]
        assert rows == expected

        fs.rm_file(parts[1])  # as in an output from before report parts: the skipped item rewrites it
        again = wiki_report(str(corpus), output, processes=2, return_state=True)
        assert again.is_completed()
        fs.invalidate_cache()
        assert fs.exists(parts[1])
        fs.get_file(f"{output}/report.xlsx", str(report))
        assert {row[1] for row in read_sheet(report, "summary")} == {"skipped"}
        assert [(r[0], r[1], join_cells(r[4:])) for r in read_sheet(report, "docs")] == expected


def test_unknown_url_protocol_is_a_parameter_error(tmp_path: Path) -> None:
    from poolflow.flows.parameters import ParameterError, check_directories

    with pytest.raises(ParameterError, match="cannot write to 'nosuch://x'"):
        check_directories(str(tmp_path), "nosuch://x")


def test_run_staged_uploads_what_the_step_wrote_and_not_what_it_only_read(s3_bucket: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem()
    output = f"{s3_bucket}/staged"
    fs.pipe({f"{output}/read.txt": b"remote v1", f"{output}/replaced.txt": b"old"})

    def step(stage: str) -> list[str]:
        root = Path(stage)
        staged = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        # Another writer updates read.txt meanwhile: the stage's copy, only read, must not overwrite it.
        fs.pipe(f"{output}/read.txt", b"remote v2")
        (root / "replaced.txt.tmp").write_bytes(b"new")
        os.replace(root / "replaced.txt.tmp", root / "replaced.txt")
        (root / "sub").mkdir()
        (root / "sub" / "created.txt").write_bytes(b"created")
        return staged

    staged = run_staged(output, ["read.txt", "replaced.txt", "absent.txt"], step)

    assert staged == ["read.txt", "replaced.txt"]
    fs.invalidate_cache()
    assert fs.cat(f"{output}/read.txt") == b"remote v2"
    assert fs.cat(f"{output}/replaced.txt") == b"new"
    assert fs.cat(f"{output}/sub/created.txt") == b"created"
    assert not fs.exists(f"{output}/absent.txt")


def test_run_staged_uploads_nothing_when_the_step_fails(s3_bucket: str) -> None:
    import s3fs

    output = f"{s3_bucket}/failed-step"

    def step(stage: str) -> None:
        (Path(stage) / "half.txt").write_bytes(b"half")
        raise RuntimeError("the step failed")

    with pytest.raises(RuntimeError, match="the step failed"):
        run_staged(output, [], step)
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    assert not fs.exists(f"{output}/half.txt")
