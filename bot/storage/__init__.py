"""What the bot remembers, behind the `Storage` protocol; one module per backend:
`sqlite` (the default), `postgres` (a server database) and `redis` (the hot, short-lived state
shared by several workers, in front of either).

Callers import from here (`from bot.storage import Storage, open_storage`), never from a
backend module, so that a backend can change without touching the engine, channels or push.
The server backends' libraries (asyncpg, redis) are imported only when they are configured.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import ConfigError
from bot.storage.protocol import (
    SEEN_MESSAGE_TTL_SECONDS,
    SESSION_TTL_SECONDS,
    RateBudget,
    Storage,
    Subscriber,
)
from bot.storage.rate import LocalRateBudget
from bot.storage.sqlite import SqliteStorage
from bot.storage.urls import backend_of, redact_url, sqlite_path

__all__ = [
    "SEEN_MESSAGE_TTL_SECONDS",
    "SESSION_TTL_SECONDS",
    "LocalRateBudget",
    "RateBudget",
    "SqliteStorage",
    "Storage",
    "Subscriber",
    "backend_of",
    "copy_to_postgres",
    "durable_of",
    "migrate_database",
    "open_durable",
    "open_rate_budget",
    "open_storage",
    "open_storage_at",
    "postgres_push_store",
    "redact_url",
    "shared_rate_budget",
    "sqlite_path",
    "with_redis",
]

if TYPE_CHECKING:
    from bot.push_store import PushStore
    from bot.storage.copy import TableCopy

_EXTRA = "the server extra: pip install 'infoguard[server]'"


async def open_durable(url: str) -> Storage:
    """The database a URL names: `sqlite:///file` (created and migrated on open) or
    `postgresql://…` (must be migrated: `infoguard db migrate`)."""
    if backend_of(url) == "sqlite":
        return await SqliteStorage.open(sqlite_path(url))
    try:
        from bot.storage.postgres import PostgresStorage
    except ImportError:
        raise ConfigError(f"PostgreSQL needs asyncpg, {_EXTRA}") from None
    return await PostgresStorage.open(url)


async def open_storage(
    url: str | Path, *, redis_url: str = "", redis_prefix: str = "infoguard:"
) -> Storage:
    """The storage the settings describe: the database, with Redis in front when configured.
    A plain path means that SQLite file."""
    url = url if isinstance(url, str) else f"sqlite://{url}"
    durable = await open_durable(url)
    if not redis_url:
        return durable
    return await with_redis(durable, redis_url, prefix=redis_prefix)


open_storage_at = open_storage
"""`open_storage` under a name that does not clash with `bot.runtime.open_storage`."""


async def with_redis(durable: Storage, redis_url: str, *, prefix: str) -> Storage:
    """`durable` with Redis in front for the hot state (closed with it, or now on failure)."""
    try:
        from bot.storage.redis import RedisStorage
    except ImportError:
        await durable.close()
        raise ConfigError(f"Redis needs redis-py, {_EXTRA}") from None
    try:
        return await RedisStorage.open(durable, redis_url, prefix=prefix)
    except BaseException:
        await durable.close()
        raise


async def open_rate_budget(
    name: str, rate: float, *, redis_url: str = "", redis_prefix: str = "infoguard:"
) -> RateBudget:
    """A send-rate budget: shared by every worker through Redis when configured, else this
    process's own."""
    if not redis_url:
        return LocalRateBudget(rate)
    from bot.storage.redis import RedisRateBudget, connect

    return RedisRateBudget(await connect(redis_url), f"{redis_prefix}rate:{name}", rate)


async def migrate_database(url: str) -> tuple[list[int], int]:
    """Bring the database a URL names up to this version's schema: (versions applied now,
    version it is at)."""
    if backend_of(url) == "sqlite":
        storage = await SqliteStorage.open(sqlite_path(url))  # migrates on open
        try:
            return [], await storage.schema_version()
        finally:
            await storage.close()
    try:
        from bot.storage.postgres import connect_pool, migrate, schema_version
    except ImportError:
        raise ConfigError(f"PostgreSQL needs asyncpg, {_EXTRA}") from None
    pool = await connect_pool(url, max_size=1)
    try:
        applied = await migrate(pool)
        return applied, await schema_version(pool)
    finally:
        await pool.close()


async def copy_to_postgres(
    sqlite_file: Path,
    postgres_url: str,
    *,
    restart: bool = False,
    on_batch: Callable[[TableCopy], None] | None = None,
) -> list[TableCopy]:
    """`bot.storage.copy.copy_sqlite_to_postgres`, behind the door."""
    if backend_of(postgres_url) != "postgres":
        raise ConfigError("db copy goes to PostgreSQL: set INFOGUARD_DATABASE_URL=postgresql://…")
    try:
        from bot.storage.copy import copy_sqlite_to_postgres
    except ImportError:
        raise ConfigError(f"PostgreSQL needs asyncpg, {_EXTRA}") from None
    return await copy_sqlite_to_postgres(
        sqlite_file, postgres_url, restart=restart, on_batch=on_batch
    )


def durable_of(storage: Storage) -> Storage:
    """The database behind a storage (itself, or what Redis stands in front of)."""
    return getattr(storage, "durable", storage)


def postgres_push_store(
    storage: Storage, *, clock: Callable[[], float] | None = None
) -> PushStore | None:
    """The push store on the PostgreSQL database behind `storage`, or None when that is not
    PostgreSQL (the SQLite push store is `bot.ledger.SqlitePushStore`)."""
    durable = durable_of(storage)
    if isinstance(durable, SqliteStorage):
        return None
    from bot.storage.postgres import PostgresStorage
    from bot.storage.postgres_push import PostgresPushStore

    if not isinstance(durable, PostgresStorage):
        return None
    return PostgresPushStore(durable.pool, storage, clock=clock or time.time)


def shared_rate_budget(name: str, rate: float, redis_url: str, redis_prefix: str) -> RateBudget:
    """A send-rate budget on Redis shared by every process that uses `name` (no connection is
    made until the first `acquire`, in the running event loop)."""
    import redis.asyncio as aioredis

    from bot.storage.redis import RedisRateBudget

    return RedisRateBudget(aioredis.Redis.from_url(redis_url), f"{redis_prefix}rate:{name}", rate)
