"""Whether Prefect's SQLite database is already migrated and stocked for the installed Prefect.

Every start of Prefect's API server runs the database migrations (a no-op once done, still
alembic's work) and registers every installed block type. Both matter only when
the database is new or Prefect or one of its collections changed, so after a start that did
them, the command writes a stamp in ``PREFECT_HOME``: the database's alembic revision and
the installed Prefect distributions. The next start whose database still has that revision,
with the same distributions installed, skips both. Anything else (a stamp missing or
unreadable, another database, an upgrade, a database not SQLite) starts the full way.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
from pathlib import Path

STAMP_NAME = ".poolflow-api-database.json"
# What Prefect skips when the stamp says the database is current. The memo of block
# registrations goes too: Prefect checks it before asking whether to register at all, and
# that check imports every installed collection (prefect_dask, hence Dask) on every start.
SKIP_SETTINGS = {
    "PREFECT_API_DATABASE_MIGRATE_ON_START": "0",
    "PREFECT_API_BLOCKS_REGISTER_ON_START": "0",
    "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION": "0",
}


def alembic_revision(database: Path) -> str | None:
    """The database's migration revision, or None (no such file, not migrated, unreadable)."""
    if not database.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as db:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def prefect_distributions() -> list[str]:
    """The installed distributions of Prefect and its collections, as their metadata folders
    name them (``prefect-3.9.1.dist-info``): listing folders is fast, reading metadata is not."""
    folders = [Path(entry) for entry in sys.path if Path(entry).is_dir()]
    return sorted({found.name for folder in folders for found in folder.glob("prefect*-info")})


def _stamp(database: Path, revision: str) -> dict[str, object]:
    return {"database": str(database), "revision": revision, "distributions": prefect_distributions()}


def is_current(home: Path, database: Path) -> bool:
    """Whether the stamp in ``home`` matches ``database`` as it is now."""
    try:
        stamp = json.loads((home / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return False
    revision = alembic_revision(database)
    return revision is not None and stamp == _stamp(database, revision)


def write_stamp(home: Path, database: Path) -> None:
    """Record that ``database`` was just migrated and stocked by the installed Prefect."""
    revision = alembic_revision(database)
    if revision is None:
        return
    temp = home / f"{STAMP_NAME}.tmp"
    temp.write_text(json.dumps(_stamp(database, revision)))
    temp.replace(home / STAMP_NAME)
