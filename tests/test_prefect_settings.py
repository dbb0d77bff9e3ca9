"""The command finds Prefect's API URL, API key, home and database in every source Prefect reads."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import prefect_free_env

from poolflow.prefect_settings import from_prefect, read_api_settings

POOLFLOW = str(Path(sys.executable).parent / "poolflow")

# Each setting: (environment name, prefect.toml / [tool.prefect] key path, value for tmp_path).
SETTINGS = {
    "api_url": ("PREFECT_API_URL", ("api", "url"), "http://127.0.0.1:9/api"),
    "api_key": ("PREFECT_API_KEY", ("api", "key"), "pnu_not_a_real_key"),
    "database_url": (
        "PREFECT_SERVER_DATABASE_CONNECTION_URL",
        ("server", "database", "connection_url"),
        "sqlite+aiosqlite:///{tmp}/elsewhere.db",
    ),
    "home": ("PREFECT_HOME", ("home",), "{tmp}/other-home"),
}
SOURCES = ["environment", "dotenv", "prefect_toml", "pyproject", "profile"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A user's project folder as the working directory, no Prefect setting in the environment
    but a private home. Tests set settings in ``os.environ`` directly; it is restored after."""
    saved = dict(os.environ)
    for name in [name for name in os.environ if name.startswith("PREFECT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    yield folder
    os.environ.clear()
    os.environ.update(saved)


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """This process's environment without any Prefect setting, with a private home."""
    return prefect_free_env(tmp_path / "home")


def _toml_table(keys: tuple[str, ...], value: str) -> str:
    """``value`` at ``keys`` as a TOML document."""
    *tables, last = keys
    header = f"[{'.'.join(tables)}]\n" if tables else ""
    return f'{header}{last} = "{value}"\n'


def configure(
    folder: Path, env: dict[str, str], source: str, name: str, keys: tuple[str, ...], value: str
) -> None:
    """Set one Prefect setting in ``source``, as a user following Prefect's docs would."""
    if source == "environment":
        env[name] = value
    elif source == "dotenv":
        (folder / ".env").write_text(f"{name}={value}\n")
    elif source == "prefect_toml":
        (folder / "prefect.toml").write_text(_toml_table(keys, value))
    elif source == "pyproject":
        (folder / "pyproject.toml").write_text(
            '[project]\nname = "mine"\n\n' + _toml_table(("tool", "prefect", *keys), value)
        )
    elif source == "profile":
        home = Path(env["PREFECT_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        (home / "profiles.toml").write_text(f'active = "mine"\n\n[profiles.mine]\n{name} = "{value}"\n')


def _both_views() -> tuple[dict[str, str | None], dict[str, str | None]]:
    """poolflow's reading and a fresh reading of Prefect's own settings, here and now."""
    from prefect.settings import Settings

    views = [read_api_settings(), from_prefect(Settings())]
    mine, prefects = (
        {"api_url": v.api_url, "api_key": v.api_key, "home": str(v.home), "database": str(v.database_path)}
        for v in views
    )
    return mine, prefects


def test_the_settings_are_read_without_importing_prefect(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from poolflow.prefect_settings import read_api_settings\n"
        "read_api_settings()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=_clean_env(tmp_path), capture_output=True, text=True
    )
    assert done.stdout.strip() == "[]", done.stderr


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_each_setting_is_read_from_each_source_as_prefect_reads_it(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, setting: str
) -> None:
    name, keys, template = SETTINGS[setting]
    if setting == "home" and source == "profile":
        pytest.skip("a profile is found through the home: it cannot move the home")
    value = template.format(tmp=tmp_path)
    if setting == "home":
        monkeypatch.delenv("PREFECT_HOME")  # the environment would win over the source under test
    configure(project, os.environ, source, name, keys, value)
    mine, prefects = _both_views()
    assert mine == prefects
    expected = {
        "api_url": ("api_url", value),
        "api_key": ("api_key", value),
        "database_url": ("database", f"{tmp_path}/elsewhere.db"),
        "home": ("home", f"{tmp_path}/other-home"),
    }[setting]
    assert mine[expected[0]] == expected[1]


@pytest.mark.parametrize(
    ("higher", "lower"),
    [
        ("environment", "dotenv"),
        ("dotenv", "prefect_toml"),
        ("prefect_toml", "pyproject"),
        ("pyproject", "profile"),
    ],
)
def test_a_source_prefect_ranks_higher_wins(project: Path, higher: str, lower: str) -> None:
    name, keys, _ = SETTINGS["api_url"]
    configure(project, os.environ, lower, name, keys, "http://127.0.0.1:8/lower")
    configure(project, os.environ, higher, name, keys, "http://127.0.0.1:9/higher")
    mine, prefects = _both_views()
    assert mine["api_url"] == prefects["api_url"] == "http://127.0.0.1:9/higher"


def _flow_runs(api_url: str) -> int:
    return int(httpx.post(f"{api_url}/flow_runs/count", json={}, timeout=30).json())


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES)
def test_a_run_lands_on_the_server_that_each_source_names(
    tmp_path: Path, prefect_server: str, source: str
) -> None:
    """A real ``prefect server start``, named in one source: the command's run is stored there,
    and the command starts no server (and creates no database) of its own."""
    folder = tmp_path / "project"
    folder.mkdir()
    env = _clean_env(tmp_path)
    name, keys, _ = SETTINGS["api_url"]
    configure(folder, env, source, name, keys, prefect_server)
    subprocess.run(
        [POOLFLOW, "sample", "corpus", "--files", "1", "--docs", "3"], cwd=folder, env=env, check=True
    )
    before = _flow_runs(prefect_server)
    done = subprocess.run(
        [POOLFLOW, "run", "corpus", "-o", "out", "--processes", "1"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert _flow_runs(prefect_server) == before + 1
    assert not (tmp_path / "home" / "prefect.db").exists()


@pytest.mark.slow
def test_the_command_s_own_server_keeps_its_database_where_prefect_toml_says(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    env = _clean_env(tmp_path)
    name, keys, template = SETTINGS["database_url"]
    configure(folder, env, "prefect_toml", name, keys, template.format(tmp=tmp_path))
    subprocess.run(
        [POOLFLOW, "sample", "corpus", "--files", "1", "--docs", "3"], cwd=folder, env=env, check=True
    )
    done = subprocess.run(
        [POOLFLOW, "run", "corpus", "-o", "out", "--processes", "1"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "elsewhere.db").stat().st_size > 0
    assert not (tmp_path / "home" / "prefect.db").exists()
