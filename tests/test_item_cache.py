"""Per-item result records: written through the task's result store, in the worker that made
the result, and read back as Prefect reads a task run's record."""

from __future__ import annotations

import os
import pickle
from datetime import timedelta
from pathlib import Path

import pytest
from prefect import task
from prefect.cache_policies import INPUTS
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore

from poolflow.runners.item_cache import ItemCache


@task(persist_result=True, cache_policy=INPUTS)
def square(x: int) -> int:
    return x * x


def local_cache(folder: Path) -> ItemCache:
    store = ResultStore(result_storage=LocalFileSystem(basepath=str(folder)))
    return ItemCache(square, INPUTS, store)


def test_a_record_the_travelling_writer_wrote_is_read_back_by_prefects_own_store(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (tmp_path / "link").symlink_to(real)
    cache = local_cache(tmp_path / "link")
    writer = pickle.loads(pickle.dumps(cache.writer))  # as it reaches a worker
    assert writer.folder == real.resolve()  # resolved once, where the map runs
    value = {"rows": [1, 2, 3], "text": "문서 \ufffe"}
    writer.write("abc123", value)  # the folder is made on the first write
    assert writer.store.cache_result_in_memory is False and not writer.store.cache  # a worker keeps none

    prefect_store = ResultStore(result_storage=LocalFileSystem(basepath=str(tmp_path / "link")))
    record = prefect_store.read("abc123")
    assert record.result == value
    assert record.metadata.storage_key == str(real.resolve() / "abc123")  # as Prefect writes it
    assert cache.read("abc123") == (True, value)
    assert sorted(p.name for p in real.iterdir()) == ["abc123"]


def test_missing_unreadable_and_expired_records_are_misses(tmp_path: Path) -> None:
    cache = local_cache(tmp_path)
    assert cache.read("absent") == (False, None)
    (tmp_path / "torn").write_bytes(b'{"metadata": {"storage_')
    assert cache.read("torn") == (False, None)
    expired = ItemCache(square.with_options(cache_expiration=timedelta(seconds=-1)), INPUTS, cache.store)
    expired.writer.write("old", 1)
    assert cache.read("old") == (False, None)


def test_keys_outside_the_folder_and_other_stores_are_prefects_to_handle(tmp_path: Path) -> None:
    cache = local_cache(tmp_path / "results")
    with pytest.raises(ValueError, match="outside of the base path"):
        cache.writer.write("../escaped", 1)
    assert not (tmp_path / "escaped").exists()

    with_metadata = ResultStore(
        result_storage=LocalFileSystem(basepath=str(tmp_path / "data")),
        metadata_storage=LocalFileSystem(basepath=str(tmp_path / "meta")),
    )
    apart = ItemCache(square, INPUTS, with_metadata)
    assert apart.writer.folder is None
    apart.writer.write("k", 7)
    assert apart.read("k") == (True, 7)
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
