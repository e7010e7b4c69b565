"""Where the data lives: INFOGUARD_DATABASE_URL and the SQLite file, how URLs are read, and that
a URL's password never reaches a message."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from bot.config import Settings
from bot.errors import ConfigError
from bot.storage import backend_of, open_storage, redact_url, sqlite_path


def test_the_default_is_the_sqlite_file() -> None:
    settings = Settings.from_env({"INFOGUARD_DATABASE": "/var/lib/infoguard/x.sqlite3"})
    assert settings.storage_url() == "sqlite:///var/lib/infoguard/x.sqlite3"
    assert sqlite_path(settings.storage_url()) == Path("/var/lib/infoguard/x.sqlite3")


def test_the_url_wins_and_stays_secret() -> None:
    url = "postgresql://bot:s3cret@db.internal:5432/infoguard"
    settings = Settings.from_env({"INFOGUARD_DATABASE_URL": url, "INFOGUARD_REDIS_URL": "r"})
    assert settings.storage_url() == url
    assert backend_of(url) == "postgres"
    assert "s3cret" not in repr(settings)
    assert redact_url(url) == "postgresql://bot:***@db.internal:5432/infoguard"
    assert redact_url("redis://:pw@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact_url("postgresql://bot@db/infoguard") == "postgresql://bot@db/infoguard"


def test_sqlite_urls() -> None:
    assert sqlite_path("sqlite://relative.sqlite3") == Path("relative.sqlite3")
    assert sqlite_path("sqlite://~/x.sqlite3") == Path.home() / "x.sqlite3"
    assert sqlite_path("sqlite:///:memory:") == ":memory:"
    with pytest.raises(ConfigError, match="needs a file"):
        sqlite_path("sqlite://")


async def test_an_unknown_scheme_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="must start with sqlite:/// or postgresql://"):
        await open_storage("mysql://bot:pw@db/x")
    with pytest.raises(ConfigError) as refused:
        await open_storage("postgresql://bot:pw@127.0.0.1:1/nothing_listens_here")
    assert "cannot connect to PostgreSQL" in str(refused.value)
    assert "pw@" not in str(refused.value)


def test_database_option_overrides_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens there: had the URL been used, the command would fail.
    monkeypatch.setenv("INFOGUARD_DATABASE_URL", "postgresql://bot@127.0.0.1:1/x")
    own = tmp_path / "own.sqlite3"
    assert main(["--database", str(own), "db", "migrate"]) == 0
    assert f"sqlite://{own}: schema version 1" in capsys.readouterr().out
    assert own.is_file()
    assert main(["db", "migrate"]) == 1
    assert "cannot connect to PostgreSQL at postgresql://bot@127.0.0.1:1/x" in (
        capsys.readouterr().err
    )
