"""The composition root of the core: loads content, opens storage, builds the engine."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import Settings
from bot.content import Content, load_content
from bot.errors import ConfigError
from bot.ledger import SqlitePushStore
from bot.push_store import PushStore
from bot.storage import (
    SqliteStorage,
    Storage,
    backend_of,
    durable_of,
    open_storage_at,
    postgres_push_store,
    sqlite_path,
    with_redis,
)

if TYPE_CHECKING:
    from bot.engine import Engine


def load(settings: Settings) -> Content:
    """The validated content the settings point at (raises ContentError)."""
    return load_content(settings.knowledge_dir, settings.cases_dir)


@asynccontextmanager
async def running_engine(
    settings: Settings, *, database: str | Path | None = None
) -> AsyncIterator[Engine]:
    """An engine on the configured content and storage (or on the SQLite file `database`,
    e.g. ":memory:"), closed on exit."""
    from bot.engine import Engine  # here: commands that do not converse skip the matcher

    content = load(settings)
    if database is not None:
        storage: Storage = await open_storage(database)
    else:
        storage = await open_configured_storage(settings)
    try:
        yield Engine(content, storage, case_url=settings.case_url, cache_dir=settings.cache_dir)
    finally:
        await storage.close()


async def open_configured_storage(settings: Settings) -> Storage:
    """The storage the settings name (INFOGUARD_DATABASE_URL, else the SQLite file), with
    Redis in front when INFOGUARD_REDIS_URL is set."""
    url = settings.storage_url()
    if backend_of(url) != "sqlite":
        return await open_storage_at(
            url, redis_url=settings.redis_url, redis_prefix=settings.redis_prefix
        )
    durable = await open_storage(sqlite_path(url))
    if not settings.redis_url:
        return durable
    return await with_redis(durable, settings.redis_url, prefix=settings.redis_prefix)


async def open_push_store(storage: Storage, *, clock: Callable[[], float] = time.time) -> PushStore:
    """The push store in the database behind `storage`: PostgreSQL's, or the SQLite file's."""
    store = postgres_push_store(storage, clock=clock)
    if store is not None:
        return store
    sqlite = durable_of(storage)
    assert isinstance(sqlite, SqliteStorage)
    return await SqlitePushStore.open(sqlite, clock=clock)


async def open_storage(path: str | Path) -> SqliteStorage:
    """The SQLite store at `path`; a path that cannot be opened (a folder, a read-only or
    virtual file system, a file that is not a database) is one ConfigError line, not a
    traceback."""
    try:
        _check_openable(path)
        return await SqliteStorage.open(path)
    except (OSError, sqlite3.Error) as exc:
        # aiosqlite stops its worker thread after a failed connect without waiting for it;
        # give it the moment it needs, or it reports a closed event loop at exit.
        await asyncio.sleep(0.05)
        reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        raise ConfigError(f"cannot open the database {path}: {reason}") from None


def _check_openable(path: str | Path) -> None:
    """Raise OSError or sqlite3.Error now, in this thread, for a path that is not a database
    file we can write: a folder, a parent we cannot create, a file of something else."""
    if str(path) == ":memory:":
        return
    file = Path(path)
    if file.is_dir():
        raise IsADirectoryError(21, "it is a folder, not a file")
    file.parent.mkdir(parents=True, exist_ok=True)
    if not file.exists():
        return  # created by SqliteStorage.open, with the mode storage gives it
    check = sqlite3.connect(f"{file.resolve().as_uri()}?mode=rw", uri=True)
    try:
        check.execute("PRAGMA schema_version")  # reads the header: "file is not a database"
    finally:
        check.close()
