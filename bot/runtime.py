"""The composition root of the core: loads content, opens storage, builds the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bot.config import Settings
from bot.content import Content, load_content
from bot.engine import Engine
from bot.errors import ConfigError
from bot.storage import SqliteStorage, Storage, backend_of, open_storage, sqlite_path


def load(settings: Settings) -> Content:
    """The validated content the settings point at (raises ContentError)."""
    return load_content(settings.knowledge_dir, settings.cases_dir)


async def open_configured_storage(settings: Settings) -> Storage:
    """The storage the settings name: the database, with Redis in front when configured."""
    return await open_storage(
        settings.storage_url(), redis_url=settings.redis_url, redis_prefix=settings.redis_prefix
    )


def push_runs_here(settings: Settings) -> bool:
    """Whether the push ledger can live in the configured database (SQLite, for now)."""
    return backend_of(settings.storage_url()) == "sqlite"


async def open_push_storage(settings: Settings) -> SqliteStorage:
    """The SQLite storage the push ledger lives in."""
    if not push_runs_here(settings):
        raise ConfigError(
            "pushing needs the push ledger in SQLite for now: unset INFOGUARD_DATABASE_URL or "
            "point it at a sqlite:/// file to push"
        )
    return await SqliteStorage.open(sqlite_path(settings.storage_url()))


@asynccontextmanager
async def running_engine(
    settings: Settings, *, database: str | Path | None = None
) -> AsyncIterator[Engine]:
    """An engine on the configured content and storage (or on the SQLite file `database`,
    e.g. ":memory:"), closed on exit."""
    content = load(settings)
    if database is not None:
        storage = await open_storage(f"sqlite://{database}")
    else:
        storage = await open_configured_storage(settings)
    try:
        yield Engine(content, storage, case_url=settings.case_url, cache_dir=settings.cache_dir)
    finally:
        await storage.close()
