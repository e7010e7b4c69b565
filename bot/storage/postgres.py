"""`Storage` on a PostgreSQL server, for several workers on one or more machines
(INFOGUARD_DATABASE_URL=postgresql://user:password@host:5432/db).

The driver is asyncpg rather than psycopg 3: it is asyncio-native with its own connection pool
(psycopg needs the separate psycopg_pool package for that), speaks the binary protocol with
prepared statements cached per connection, which keeps the webhook's few small queries cheap,
and ships as a self-contained wheel, with no libpq to install beside it. One catch: behind
PgBouncer in transaction mode, its statement cache must be off (`statement_cache_size=0`
in the URL's query).

The schema is versioned (`POSTGRES_MIGRATIONS`, table `schema_version`); unlike a laptop's
SQLite file it is not migrated on open, because several workers start at once and an upgrade
should be a deliberate step: `infoguard db migrate` (serialised by an advisory lock).
Text columns that are paged through (channel, user id) use the "C" collation, so that their
order is byte order, as in SQLite, whatever the server's locale.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg

from bot.errors import ConfigError
from bot.storage.migrations import SCHEMA_VERSION_TABLE, Migration, check_sequence, latest
from bot.storage.protocol import SEEN_MESSAGE_TTL_SECONDS, SESSION_TTL_SECONDS, Subscriber
from bot.storage.urls import redact_url

POOL_SIZE = 10
"""Connections per worker: the webhook's queries are short, so a few serve many requests."""
_MIGRATION_LOCK = 0x1F0_6A4D
"""pg_advisory_xact_lock key that serialises `infoguard db migrate` runs."""

POSTGRES_MIGRATIONS = [
    Migration(
        1,
        "sessions, subscribers, seen message ids, cache",
        """
CREATE TABLE sessions (
    channel TEXT COLLATE "C" NOT NULL, user_id TEXT COLLATE "C" NOT NULL, state TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (channel, user_id));
CREATE INDEX sessions_expiry ON sessions (expires_at);
CREATE TABLE subscribers (
    channel TEXT COLLATE "C" NOT NULL, user_id TEXT COLLATE "C" NOT NULL,
    subscribed_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (channel, user_id));
CREATE TABLE seen_messages (key TEXT PRIMARY KEY, expires_at DOUBLE PRECISION NOT NULL);
CREATE INDEX seen_messages_expiry ON seen_messages (expires_at);
CREATE TABLE cache (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL);
CREATE INDEX cache_expiry ON cache (expires_at);
""",
    ),
    Migration(
        2,
        "push store: deliveries, rounds, schedule, lease",
        # The same tables and meaning as bot.ledger's in SQLite (see bot.push_store).
        """
CREATE TABLE push_deliveries (
    channel TEXT COLLATE "C" NOT NULL, user_id TEXT COLLATE "C" NOT NULL,
    case_id TEXT COLLATE "C" NOT NULL, status TEXT NOT NULL, batch_key TEXT NOT NULL,
    attempts INTEGER NOT NULL, detail TEXT NOT NULL DEFAULT '', round INTEGER,
    updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (channel, user_id, case_id));
CREATE INDEX push_deliveries_pending
    ON push_deliveries (channel, batch_key) WHERE status = 'pending';
CREATE INDEX push_deliveries_unreachable
    ON push_deliveries (channel) WHERE status = 'unreachable';
CREATE TABLE push_runs (round INTEGER PRIMARY KEY, started_at DOUBLE PRECISION NOT NULL);
CREATE TABLE push_run_channels (
    round INTEGER NOT NULL, channel TEXT NOT NULL, finished_at DOUBLE PRECISION,
    PRIMARY KEY (round, channel));
CREATE TABLE push_schedule (name TEXT PRIMARY KEY, started_at DOUBLE PRECISION NOT NULL);
CREATE TABLE push_lease (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL);
""",
    ),
    Migration(
        3,
        "db copy checkpoints",
        """
CREATE TABLE copy_progress (
    source TEXT NOT NULL, table_name TEXT NOT NULL, last_key TEXT NOT NULL,
    PRIMARY KEY (source, table_name));
""",
    ),
]
check_sequence(POSTGRES_MIGRATIONS)


async def connect_pool(url: str, *, max_size: int = POOL_SIZE) -> asyncpg.Pool:
    """A connection pool; ConfigError (password never shown) if the server cannot be used."""
    try:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=max_size, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise ConfigError(
            f"cannot connect to PostgreSQL at {redact_url(url)}: {type(exc).__name__}: {exc}"
        ) from None
    assert pool is not None
    return pool


async def schema_version(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", SCHEMA_VERSION_TABLE)
    if not exists:
        return 0
    value = await conn.fetchval(f"SELECT MAX(version) FROM {SCHEMA_VERSION_TABLE}")
    return int(value or 0)


async def migrate(pool: asyncpg.Pool) -> list[int]:
    """Apply the missing migrations, each in its own transaction; the versions applied. Safe to
    run from several processes at once: an advisory lock lets one migrate at a time."""
    applied: list[int] = []
    async with pool.acquire() as conn:
        for migration in POSTGRES_MIGRATIONS:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {SCHEMA_VERSION_TABLE} (version INTEGER "
                    "PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
                )
                if migration.version <= await schema_version(conn):
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    f"INSERT INTO {SCHEMA_VERSION_TABLE} VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    time.time(),
                )
                applied.append(migration.version)
    return applied


def _changed(status: str) -> int:
    """Rows changed, from a command status such as 'INSERT 0 1' or 'DELETE 3'."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresStorage:
    """`Storage` on PostgreSQL: `await PostgresStorage.open(url)` on a migrated database."""

    def __init__(self, pool: asyncpg.Pool, clock: Callable[[], float] = time.time) -> None:
        self.pool = pool
        self._clock = clock

    @classmethod
    async def open(
        cls, url: str, *, clock: Callable[[], float] = time.time, max_size: int = POOL_SIZE
    ) -> PostgresStorage:
        pool = await connect_pool(url, max_size=max_size)
        try:
            version = await schema_version(pool)
        except BaseException:
            await pool.close()
            raise
        expected = latest(POSTGRES_MIGRATIONS)
        if version != expected:
            await pool.close()
            if version < expected:
                raise ConfigError(
                    f"the database {redact_url(url)} is at schema version {version}, this "
                    f"infoguard needs {expected}: run `infoguard db migrate` first"
                )
            raise ConfigError(
                f"the database {redact_url(url)} is at schema version {version}, newer than "
                f"this infoguard knows ({expected}): upgrade infoguard"
            )
        return cls(pool, clock)

    async def close(self) -> None:
        await self.pool.close()

    async def get_session(self, channel: str, user_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            "SELECT state, expires_at FROM sessions WHERE channel = $1 AND user_id = $2",
            channel,
            user_id,
        )
        if row is None:
            return None
        if row["expires_at"] <= self._clock():
            await self.delete_session(channel, user_id)
            return None
        state: dict[str, Any] = json.loads(row["state"])
        return state

    async def put_session(
        self,
        channel: str,
        user_id: str,
        state: dict[str, Any],
        *,
        ttl: float = SESSION_TTL_SECONDS,
    ) -> None:
        await self.pool.execute(
            "INSERT INTO sessions VALUES ($1, $2, $3, $4) ON CONFLICT (channel, user_id) "
            "DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at",
            channel,
            user_id,
            json.dumps(state, ensure_ascii=False),
            self._clock() + ttl,
        )

    async def delete_session(self, channel: str, user_id: str) -> None:
        await self.pool.execute(
            "DELETE FROM sessions WHERE channel = $1 AND user_id = $2", channel, user_id
        )

    async def purge_expired(self) -> int:
        now = self._clock()
        removed = 0
        for table in ("sessions", "seen_messages", "cache"):
            status = await self.pool.execute(f"DELETE FROM {table} WHERE expires_at <= $1", now)
            removed += _changed(status)
        return removed

    async def subscribe(self, channel: str, user_id: str) -> bool:
        status = await self.pool.execute(
            "INSERT INTO subscribers VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            channel,
            user_id,
            self._clock(),
        )
        return _changed(status) == 1

    async def is_subscribed(self, channel: str, user_id: str) -> bool:
        found = await self.pool.fetchval(
            "SELECT 1 FROM subscribers WHERE channel = $1 AND user_id = $2", channel, user_id
        )
        return found is not None

    async def subscribers(
        self, channel: str | None = None, *, batch: int = 1000
    ) -> AsyncIterator[Subscriber]:
        # Keyset pagination, as in SQLite: constant memory, stable while rows come and go.
        last = ("", "")
        while True:
            if channel:
                rows = await self.pool.fetch(
                    "SELECT channel, user_id, subscribed_at FROM subscribers "
                    "WHERE channel = $3 AND (channel, user_id) > ($1, $2) "
                    "ORDER BY channel, user_id LIMIT $4",
                    *last,
                    channel,
                    batch,
                )
            else:
                rows = await self.pool.fetch(
                    "SELECT channel, user_id, subscribed_at FROM subscribers "
                    "WHERE (channel, user_id) > ($1, $2) ORDER BY channel, user_id LIMIT $3",
                    *last,
                    batch,
                )
            for row in rows:
                yield Subscriber(row[0], row[1], row[2])
            if len(rows) < batch:
                return
            last = (rows[-1][0], rows[-1][1])

    async def count_subscribers(self, channel: str | None = None) -> int:
        if channel:
            value = await self.pool.fetchval(
                "SELECT COUNT(*) FROM subscribers WHERE channel = $1", channel
            )
        else:
            value = await self.pool.fetchval("SELECT COUNT(*) FROM subscribers")
        return int(value)

    async def forget_user(self, channel: str, user_id: str) -> bool:
        # One transaction: the user's session, delivery records and subscription go together.
        async with self.pool.acquire() as conn, conn.transaction():
            for table in ("sessions", "push_deliveries"):
                await conn.execute(
                    f"DELETE FROM {table} WHERE channel = $1 AND user_id = $2", channel, user_id
                )
            status = await conn.execute(
                "DELETE FROM subscribers WHERE channel = $1 AND user_id = $2", channel, user_id
            )
        return _changed(status) == 1

    async def first_sighting(self, key: str, *, ttl: float = SEEN_MESSAGE_TTL_SECONDS) -> bool:
        now = self._clock()
        # New, or seen so long ago that it expired: either way one row changes, atomically.
        status = await self.pool.execute(
            "INSERT INTO seen_messages VALUES ($1, $2) ON CONFLICT (key) DO UPDATE "
            "SET expires_at = excluded.expires_at WHERE seen_messages.expires_at <= $3",
            key,
            now + ttl,
            now,
        )
        return _changed(status) == 1

    async def cache_get(self, key: str) -> str | None:
        value = await self.pool.fetchval(
            "SELECT value FROM cache WHERE key = $1 AND expires_at > $2", key, self._clock()
        )
        return None if value is None else str(value)

    async def cache_put(self, key: str, value: str, *, ttl: float) -> None:
        await self.pool.execute(
            "INSERT INTO cache VALUES ($1, $2, $3) ON CONFLICT (key) "
            "DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
            key,
            value,
            self._clock() + ttl,
        )
