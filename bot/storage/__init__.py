"""What the bot remembers, behind the `Storage` protocol; one module per backend:
`sqlite` (the default), `postgres` (a server database) and `redis` (the hot, short-lived state
shared by several workers, in front of either).

Callers import from here (`from bot.storage import Storage, open_storage`), never from a
backend module, so that a backend can change without touching the engine, channels or push.
The server backends' libraries (asyncpg, redis) are imported only when they are configured.
"""

from __future__ import annotations

from pathlib import Path

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
    "open_durable",
    "open_rate_budget",
    "open_storage",
    "redact_url",
    "sqlite_path",
]

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
    try:
        from bot.storage.redis import RedisStorage
    except ImportError:
        await durable.close()
        raise ConfigError(f"Redis needs redis-py, {_EXTRA}") from None
    try:
        return await RedisStorage.open(durable, redis_url, prefix=redis_prefix)
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
