"""``poolflow.tasks.atomic.AtomicTarget``: whole files or none, with the mode a new file gets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from poolflow.tasks.atomic import AtomicTarget, OutputError


def test_a_new_folder_is_created_and_only_the_target_remains(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "report.xlsx"
    with AtomicTarget(target) as temp:
        assert temp.parent == target.parent and temp.name.startswith(".report.xlsx.")
        temp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.xlsx"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_the_file_gets_the_mode_the_umask_gives(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        with AtomicTarget(tmp_path / "out.bin") as temp:
            temp.write_bytes(b"x")
    finally:
        os.umask(previous)
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError), AtomicTarget(target) as temp:
        temp.write_bytes(b"half")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_taken_temp_name_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = iter(["same", "same", "other"])
    monkeypatch.setattr("poolflow.tasks.atomic.secrets.token_hex", lambda size: next(names))
    first, second = AtomicTarget(tmp_path / "f"), AtomicTarget(tmp_path / "f")
    assert (first.temp.name, second.temp.name) == (".f.same.tmp", ".f.other.tmp")
    first.discard()
    second.discard()
    assert list(tmp_path.iterdir()) == []


def test_open_writes_the_temp_file_through_the_descriptor_that_created_it(tmp_path: Path) -> None:
    target_path = tmp_path / "part.bin"
    target = AtomicTarget(target_path)
    created = target.temp.stat()
    with target, target.open() as file:
        assert os.fstat(file.fileno()).st_ino == created.st_ino
        file.write(b"whole")
        with pytest.raises(ValueError, match="already opened"):
            target.open()
    assert target_path.read_bytes() == b"whole"
    assert target_path.stat().st_ino == created.st_ino
    assert [p.name for p in tmp_path.iterdir()] == ["part.bin"]


def test_open_does_not_reopen_the_temp_file_by_its_name(tmp_path: Path) -> None:
    # Reopening by name (``"wb"``) truncates the file, which ext4 answers with a flush on close.
    target = AtomicTarget(tmp_path / "part.bin")
    os.unlink(target.temp)  # only the descriptor still reaches the file
    with target.open() as file:
        file.write(b"x")
        assert os.fstat(file.fileno()).st_nlink == 0
    target.discard()
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_through_open_leaves_no_temp_file(tmp_path: Path) -> None:
    target = AtomicTarget(tmp_path / "part.bin")
    with pytest.raises(RuntimeError), target, target.open() as file:
        file.write(b"half")
        raise RuntimeError("writer died")
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_folder_is_an_output_error_naming_the_target(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OutputError, match=r"cannot write .*file/x\.bin"):
        AtomicTarget(tmp_path / "file" / "x.bin")
