"""`Storage` in one embedded SQLite file (aiosqlite): the default, for a laptop or a small
office. Several processes on one machine may share the file (WAL mode, atomic upserts).

Nothing here stores message text: sessions hold only the choices a user made.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosqlite

from bot.storage.migrations import SCHEMA_VERSION_TABLE, Migration, check_sequence
from bot.storage.protocol import SEEN_MESSAGE_TTL_SECONDS, SESSION_TTL_SECONDS, Subscriber

SQLITE_MIGRATIONS = [
    Migration(
        1,
        "sessions, subscribers, seen message ids, cache",
        # IF NOT EXISTS: a file made before versioned schemas already has these tables.
        """
CREATE TABLE IF NOT EXISTS sessions (
    channel TEXT NOT NULL, user_id TEXT NOT NULL, state TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (channel, user_id));
CREATE TABLE IF NOT EXISTS subscribers (
    channel TEXT NOT NULL, user_id TEXT NOT NULL, subscribed_at REAL NOT NULL,
    PRIMARY KEY (channel, user_id));
CREATE TABLE IF NOT EXISTS seen_messages (key TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL);
""",
    ),
]
"""The push ledger's tables (bot.ledger) are still created by the ledger itself."""
check_sequence(SQLITE_MIGRATIONS)


def _create_private(path: Path) -> None:
    """The database file readable by its owner only (0600), created so before SQLite opens it;
    SQLite gives its -wal and -shm files the same permissions. A new folder is 0700."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except IsADirectoryError:
        return  # SQLite reports it
    if path.is_file() and path.stat().st_mode & 0o077 and path.stat().st_uid == os.getuid():
        path.chmod(0o600)


class SqliteStorage:
    """`Storage` in one SQLite file (or ":memory:"): `await SqliteStorage.open(path)`."""

    def __init__(self, db: aiosqlite.Connection, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock

    @classmethod
    async def open(
        cls, path: str | Path, *, clock: Callable[[], float] = time.time
    ) -> SqliteStorage:
        if str(path) != ":memory:":
            _create_private(Path(path))
        # Autocommit: each statement is its own transaction, so the webhook's hot path needs no
        # extra round trip to the database thread to commit. Multi-statement writes (the push
        # ledger's waves) open their own transaction with BEGIN.
        db = await aiosqlite.connect(str(path), isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA busy_timeout=5000")
        # Deleted rows (an unsubscribed openid) are overwritten, not left in free pages; not
        # every build turns this on by default.
        await db.execute("PRAGMA secure_delete=ON")
        storage = cls(db, clock)
        # A laptop's file is brought up to date on open: there is no one to run a migration.
        await storage.migrate()
        return storage

    async def schema_version(self) -> int:
        """The highest migration applied (0 for a new file)."""
        await self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA_VERSION_TABLE} "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        rows = await self.db.execute_fetchall(f"SELECT MAX(version) FROM {SCHEMA_VERSION_TABLE}")
        row = next(iter(rows), None)
        return int(row[0]) if row and row[0] is not None else 0

    async def migrate(self) -> list[int]:
        """Apply the migrations this file lacks, each in its own transaction; the versions
        applied. BEGIN IMMEDIATE takes the write lock first, so two processes opening a new
        file at once apply each migration once."""
        applied: list[int] = []
        for migration in SQLITE_MIGRATIONS:
            if migration.version <= await self.schema_version():
                continue
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                if migration.version > await self.schema_version():
                    for statement in _statements(migration.sql):
                        await self.db.execute(statement)
                    await self.db.execute(
                        f"INSERT INTO {SCHEMA_VERSION_TABLE} VALUES (?, ?, ?)",
                        (migration.version, migration.name, time.time()),
                    )
                    applied.append(migration.version)
                await self.db.commit()
            except BaseException:
                await self.db.rollback()
                raise
        return applied

    async def close(self) -> None:
        await self.db.close()

    async def get_session(self, channel: str, user_id: str) -> dict[str, Any] | None:
        # One round trip to the database thread per call: the webhook's hot path.
        rows = await self.db.execute_fetchall(
            "SELECT state, expires_at FROM sessions WHERE channel=? AND user_id=?",
            (channel, user_id),
        )
        row = next(iter(rows), None)
        if row is None:
            return None
        if row[1] <= self._clock():
            await self.delete_session(channel, user_id)
            return None
        state: dict[str, Any] = json.loads(row[0])
        return state

    async def put_session(
        self,
        channel: str,
        user_id: str,
        state: dict[str, Any],
        *,
        ttl: float = SESSION_TTL_SECONDS,
    ) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?)",
            (channel, user_id, json.dumps(state, ensure_ascii=False), self._clock() + ttl),
        )

    async def delete_session(self, channel: str, user_id: str) -> None:
        await self.db.execute(
            "DELETE FROM sessions WHERE channel=? AND user_id=?", (channel, user_id)
        )

    async def purge_expired(self) -> int:
        """Delete expired sessions, message ids and cache entries; returns how many rows went."""
        now = self._clock()
        removed = 0
        for table in ("sessions", "seen_messages", "cache"):
            cur = await self.db.execute(f"DELETE FROM {table} WHERE expires_at <= ?", (now,))
            removed += cur.rowcount
        return removed

    async def subscribe(self, channel: str, user_id: str) -> bool:
        cur = await self.db.execute(
            "INSERT OR IGNORE INTO subscribers VALUES (?, ?, ?)", (channel, user_id, self._clock())
        )
        return cur.rowcount == 1

    async def is_subscribed(self, channel: str, user_id: str) -> bool:
        rows = await self.db.execute_fetchall(
            "SELECT 1 FROM subscribers WHERE channel=? AND user_id=?", (channel, user_id)
        )
        return bool(list(rows))

    async def subscribers(
        self, channel: str | None = None, *, batch: int = 1000
    ) -> AsyncIterator[Subscriber]:
        # Keyset pagination: constant memory, and stable while rows are added or removed.
        last = ("", "")
        while True:
            sql = (
                "SELECT channel, user_id, subscribed_at FROM subscribers "
                "WHERE (channel, user_id) > (?, ?)"
                + (" AND channel = ?" if channel else "")
                + " ORDER BY channel, user_id LIMIT ?"
            )
            params: tuple[Any, ...] = (*last, channel, batch) if channel else (*last, batch)
            async with self.db.execute(sql, params) as cur:
                rows = list(await cur.fetchall())
            for row in rows:
                yield Subscriber(row[0], row[1], row[2])
            if len(rows) < batch:
                return
            last = (rows[-1][0], rows[-1][1])

    async def count_subscribers(self, channel: str | None = None) -> int:
        sql = "SELECT COUNT(*) FROM subscribers" + (" WHERE channel = ?" if channel else "")
        async with self.db.execute(sql, (channel,) if channel else ()) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def forget_user(self, channel: str, user_id: str) -> bool:
        # The subscription goes last: if anything fails before it, the user is still a
        # subscriber and unsubscribing again finishes the job.
        await self.db.execute(
            "DELETE FROM sessions WHERE channel=? AND user_id=?", (channel, user_id)
        )
        # The push ledger (bot.ledger, created on the first push) knows which cases they got.
        has_ledger = await self.db.execute_fetchall(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='push_deliveries'"
        )
        if list(has_ledger):
            await self.db.execute(
                "DELETE FROM push_deliveries WHERE channel=? AND user_id=?", (channel, user_id)
            )
        cur = await self.db.execute(
            "DELETE FROM subscribers WHERE channel=? AND user_id=?", (channel, user_id)
        )
        return cur.rowcount == 1

    async def first_sighting(self, key: str, *, ttl: float = SEEN_MESSAGE_TTL_SECONDS) -> bool:
        now = self._clock()
        # New, or seen so long ago that it expired: either way one row changes.
        cur = await self.db.execute(
            "INSERT INTO seen_messages VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
            "SET expires_at = excluded.expires_at WHERE seen_messages.expires_at <= ?",
            (key, now + ttl, now),
        )
        return cur.rowcount == 1

    async def cache_get(self, key: str) -> str | None:
        rows = await self.db.execute_fetchall(
            "SELECT value FROM cache WHERE key=? AND expires_at > ?", (key, self._clock())
        )
        row = next(iter(rows), None)
        return str(row[0]) if row else None

    async def cache_put(self, key: str, value: str, *, ttl: float) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO cache VALUES (?, ?, ?)", (key, value, self._clock() + ttl)
        )


def _statements(script: str) -> list[str]:
    # executescript would COMMIT first; the migration's statements must share its transaction.
    return [part.strip() for part in script.split(";") if part.strip()]
