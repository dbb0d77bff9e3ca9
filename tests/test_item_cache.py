"""Per-item result records: the plain local folder is written directly, as Prefect reads them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prefect import task
from prefect.cache_policies import INPUTS
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore

from poolflow.runners.item_cache import ItemCache, plain_local_folder


@task(persist_result=True, cache_policy=INPUTS)
def square(x: int) -> int:
    return x * x


def local_cache(folder: Path) -> ItemCache:
    store = ResultStore(result_storage=LocalFileSystem(basepath=str(folder)))
    return ItemCache(square, INPUTS, store)


def test_a_record_written_directly_is_read_back_by_prefects_own_store(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    cache = local_cache(tmp_path / "link")
    assert cache.folder == real  # resolved once
    value = {"rows": [1, 2, 3], "text": "문서 \ufffe"}
    cache.write("abc123", value)

    prefect_store = ResultStore(result_storage=LocalFileSystem(basepath=str(tmp_path / "link")))
    assert prefect_store.exists("abc123")
    record = prefect_store.read("abc123")
    assert record.result == value
    # The same metadata as Prefect writes for this key (the resolved path is the storage key).
    expected = prefect_store.create_result_record(value, key="abc123").metadata
    assert record.metadata.storage_key == expected.storage_key == str(real / "abc123")
    assert record.metadata.serializer == expected.serializer
    assert cache.read("abc123") == (True, value)
    assert sorted(p.name for p in real.iterdir()) == ["abc123"]  # no temporary file left


def test_missing_and_unreadable_records_are_misses(tmp_path: Path) -> None:
    cache = local_cache(tmp_path)
    assert cache.read("absent") == (False, None)
    (tmp_path / "torn").write_bytes(b'{"metadata": {"storage_')
    assert cache.read("torn") == (False, None)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_records_get_the_mode_the_umask_gives(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        local_cache(tmp_path).write("k", 1)
    finally:
        os.umask(previous)
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o666 & ~umask


def test_keys_outside_the_folder_and_other_stores_go_through_prefect(tmp_path: Path) -> None:
    cache = local_cache(tmp_path / "results")
    with pytest.raises(ValueError, match="outside of the base path"):
        cache.write("../escaped", 1)
    assert not (tmp_path / "escaped").exists()

    with_metadata = ResultStore(
        result_storage=LocalFileSystem(basepath=str(tmp_path / "data")),
        metadata_storage=LocalFileSystem(basepath=str(tmp_path / "meta")),
    )
    assert plain_local_folder(with_metadata) is None
    fallback = ItemCache(square, INPUTS, with_metadata)
    fallback.write("k", 7)
    assert fallback.read("k") == (True, 7)
    assert (tmp_path / "meta" / "k").exists()  # written by Prefect, metadata apart


def test_the_test_runs_records_and_memo_stay_in_its_own_prefect_home() -> None:
    """Records persisted by tests go to the test run's Prefect home, which the run removes, never
    to the user's ``~/.prefect/storage`` (Prefect 3.7 keeps them there whatever the home), where
    the next run's tasks with the same inputs would find them."""
    from prefect.settings import get_current_settings

    home = Path(os.environ["PREFECT_HOME"])
    assert home != Path("~/.prefect").expanduser()
    settings = get_current_settings()
    for path in (settings.results.local_storage_path, settings.server.memo_store_path):
        assert Path(path).expanduser().is_relative_to(home), path
