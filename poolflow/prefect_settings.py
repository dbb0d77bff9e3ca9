"""The few Prefect settings the command needs before Prefect is imported, from Prefect's sources.

Whether the command starts its own API server, and on which database, must be known at once:
the server starts first and Prefect (seconds of imports) loads in this process meanwhile. So
these settings are read here from the sources Prefect reads, in Prefect's order, first wins:

1. the environment (``PREFECT_API_URL``, ...);
2. ``.env`` in the working directory (the same names);
3. ``prefect.toml`` in the working directory (``[api] url = ...``);
4. ``pyproject.toml``'s ``[tool.prefect]`` table (the same keys);
5. the active profile (``PREFECT_PROFILE`` or the file's ``active``) of ``profiles.toml``.

Prefect has the last word: once it is imported, ``differs_from_prefect`` compares this view
with ``prefect.settings.get_current_settings()``, and the command follows Prefect's where they
differ (``poolflow.local_api``). Values templated with ``$PREFECT_HOME`` and other settings
are not read here; Prefect reads them all itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poolflow.made_ahead import MadeAhead

if TYPE_CHECKING:
    from prefect.settings import Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Each setting: its environment names (the first wins, as in Prefect's alias choices) and its
# key path in prefect.toml and [tool.prefect].
_API_URL = (("PREFECT_API_URL",), ("api", "url"))
_API_KEY = (("PREFECT_API_KEY",), ("api", "key"))
_HOME = (("PREFECT_HOME",), ("home",))
_DATABASE_URL = (
    ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL"),
    ("server", "database", "connection_url"),
)
Setting = tuple[tuple[str, ...], tuple[str, ...]]


@dataclass(frozen=True)
class ApiSettings:
    """Where the command's flow runs go: a configured API, or a server on ``database``."""

    api_url: str | None
    api_key: str | None
    home: Path
    database_url: str | None  # None: Prefect's default, SQLite in ``home``

    @property
    def database_path(self) -> Path | None:
        """The SQLite file a local server uses; None for another database or one in memory."""
        url = self.database_url
        if url is None:
            return self.home / "prefect.db"
        if not url.startswith("sqlite") or ":memory:" in url or "///" not in url:
            return None
        return Path(url.split("///", 1)[1].split("?", 1)[0]).expanduser()


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def _read_dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    from dotenv import dotenv_values  # python-dotenv: what Prefect reads .env with

    return {key: value for key, value in dotenv_values(path).items() if value is not None}


def _dig(table: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(table, dict) or key not in table:
            return None
        table = table[key]
    return table


class _Sources:
    """Prefect's setting sources as they stand in a working directory and environment (by
    default this process's)."""

    def __init__(self, cwd: Path, environ: Mapping[str, str] | None = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self.dotenv = _read_dotenv(cwd / ".env")
        self.prefect_toml = _read_toml(cwd / "prefect.toml")
        self.pyproject = _dig(_read_toml(cwd / "pyproject.toml"), ("tool", "prefect")) or {}
        self.profile = self._active_profile()

    def get(self, setting: Setting) -> str | None:
        names, keys = setting
        for variables in (self.environ, self.dotenv):
            for name in names:
                if variables.get(name):
                    return variables[name]
        for table in (self.prefect_toml, self.pyproject):
            value = _dig(table, keys)
            if value not in (None, ""):
                return str(value)
        for name in names:
            if self.profile.get(name) not in (None, ""):
                return str(self.profile[name])
        return None

    def profiles_path(self) -> Path:
        """Where Prefect looks for profiles.toml (its ``_get_profiles_path``, in its order)."""
        explicit = (
            self.environ.get("PREFECT_PROFILES_PATH")
            or self.dotenv.get("PREFECT_PROFILES_PATH")
            or _dig(self.prefect_toml, ("profiles_path",))
            or _dig(self.pyproject, ("profiles_path",))
        )
        if explicit:
            return Path(str(explicit)).expanduser()
        home = self.environ.get("PREFECT_HOME") or "~/.prefect"
        return Path(home).expanduser() / "profiles.toml"

    def _active_profile(self) -> dict[str, Any]:
        profiles = _read_toml(self.profiles_path())
        active = self.environ.get("PREFECT_PROFILE") or profiles.get("active")
        table = _dig(profiles, ("profiles", str(active))) if active else None
        return table if isinstance(table, dict) else {}


def read_api_settings(cwd: Path | None = None) -> ApiSettings:
    """The API URL and key, the home and the database, as Prefect would resolve them here."""
    sources = _Sources(cwd or Path.cwd())
    return ApiSettings(
        api_url=sources.get(_API_URL),
        api_key=sources.get(_API_KEY),
        home=Path(sources.get(_HOME) or "~/.prefect").expanduser(),
        database_url=sources.get(_DATABASE_URL),
    )


def settings_files(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The files Prefect reads settings from here (some may not exist): a server started here
    reads the same ones."""
    cwd = cwd or Path.cwd()
    profiles = _Sources(cwd, environ).profiles_path()
    return (cwd / ".env", cwd / "prefect.toml", cwd / "pyproject.toml", profiles)


_read_ahead: MadeAhead[tuple[()], ApiSettings] = MadeAhead()


def prefects_own() -> ApiSettings:
    """The same settings from Prefect itself (imports Prefect): the last word.

    The API URL and key are those of this process's Prefect context (``temporary_settings``
    included): they are where this process's flows report. The home and the database are
    read afresh from Prefect's sources, as the API server, a child process with this
    environment and working directory, will read them. A command forked from the warm
    interpreter gets, the first time it asks, what the interpreter read: it takes only
    commands whose environment and settings files are the ones it read them from.
    """
    read = _read_ahead.take(())
    if read is not None:
        return read
    from prefect.settings import Settings, get_current_settings

    context = from_prefect(get_current_settings())
    return replace(from_prefect(Settings()), api_url=context.api_url, api_key=context.api_key)


def remember_prefects_own() -> None:
    """Read ``prefects_own`` now, for the next call (in the warm interpreter, before it forks
    copies, each of which then saves reading Prefect's sources again)."""
    _read_ahead.keep((), prefects_own())


def from_prefect(settings: Settings) -> ApiSettings:
    """The API URL and key, the home and the database of Prefect's ``settings``."""
    key = settings.api.key
    database = settings.server.database.connection_url
    return ApiSettings(
        api_url=settings.api.url or None,
        api_key=key.get_secret_value() if key is not None else None,
        home=Path(settings.home).expanduser(),
        database_url=database.get_secret_value() if database is not None else None,
    )


def differs_from_prefect(mine: ApiSettings, prefects: ApiSettings) -> bool:
    """Whether Prefect would send runs elsewhere or keep its database elsewhere than ``mine``."""
    return mine.api_url != prefects.api_url or mine.database_path != prefects.database_path
