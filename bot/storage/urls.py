"""Database and Redis URLs: which backend a URL names, the SQLite path in it, and the URL as it
may be shown (without its password)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bot.errors import ConfigError

SQLITE_SCHEME = "sqlite://"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def backend_of(url: str) -> str:
    """'sqlite' or 'postgres'; ConfigError for anything else."""
    if url.startswith(SQLITE_SCHEME):
        return "sqlite"
    if url.startswith(POSTGRES_SCHEMES):
        return "postgres"
    raise ConfigError(
        f"INFOGUARD_DATABASE_URL must start with sqlite:/// or postgresql://, "
        f"got {redact_url(url)!r}"
    )


def sqlite_path(url: str) -> str | Path:
    """The file of `sqlite://` + a path: `sqlite:///var/lib/x.sqlite3` (absolute),
    `sqlite://x.sqlite3` (relative), `sqlite://~/x.sqlite3`; or ":memory:"."""
    rest = url[len(SQLITE_SCHEME) :]
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    if not rest:
        raise ConfigError("sqlite:// needs a file: sqlite:///path/to/infoguard.sqlite3")
    return Path(rest).expanduser()
