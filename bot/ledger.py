"""The push store on SQLite (`SqlitePushStore`, implementing `bot.push_store.PushStore`): the
delivery ledger, rounds, schedule and push lease, in the `SqliteStorage` file.

Tables (created here on first use):

- `push_deliveries`, one row per (channel, user, case) ever attempted (see bot.push_store).
- `push_runs` and `push_run_channels`: a "next unseen case" push is one round over its
  channels, finished when every channel of it is.
- `push_schedule`: when the scheduled push last started, claimed atomically.
- `push_lease`: the one process allowed to push now, until `expires_at`.

Writes made while a push runs (claims, new keys, outcomes) go through a group commit: the writes
that concurrent workers queue meanwhile are applied in one short `BEGIN IMMEDIATE` transaction
(so another process waits on busy_timeout instead of failing with "database is locked"), one
commit per wave instead of two per message, and each worker waits until its own write is
committed. Once the store has taken the lease, each such transaction first renews it with an
UPDATE that matches only its own owner: a process whose lease was taken over writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiosqlite

from bot.push_store import (
    PENDING,
    SENT,
    Delivery,
    LeaseHolder,
    LeaseLost,
    PendingRow,
)
from bot.storage import SqliteStorage

__all__ = ["PENDING", "SENT", "SqlitePushStore"]
T = TypeVar("T")
LEASE_NAME = "push"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS push_deliveries (
    channel TEXT NOT NULL, user_id TEXT NOT NULL, case_id TEXT NOT NULL,
    status TEXT NOT NULL, batch_key TEXT NOT NULL, attempts INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT '', round INTEGER, updated_at REAL NOT NULL,
    PRIMARY KEY (channel, user_id, case_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS push_deliveries_pending
    ON push_deliveries (channel, batch_key) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS push_deliveries_unreachable
    ON push_deliveries (channel) WHERE status = 'unreachable';
CREATE TABLE IF NOT EXISTS push_runs (round INTEGER PRIMARY KEY, started_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS push_run_channels (
    round INTEGER NOT NULL, channel TEXT NOT NULL, finished_at REAL,
    PRIMARY KEY (round, channel));
CREATE TABLE IF NOT EXISTS push_schedule (name TEXT PRIMARY KEY, started_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS push_lease (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL);
"""

# A claim only takes users who are still subscribed and have no row for the case yet: an
# unsubscribe, or a concurrent push that got there first, wins.
_CLAIM = """
INSERT OR IGNORE INTO push_deliveries
    (channel, user_id, case_id, status, batch_key, attempts, detail, round, updated_at)
SELECT ?1, ?2, ?3, 'pending', ?4, 1, '', ?5, ?6
WHERE EXISTS (SELECT 1 FROM subscribers WHERE channel = ?1 AND user_id = ?2)
"""
_REKEY = """
UPDATE push_deliveries SET batch_key = ?, attempts = ?, updated_at = ?
WHERE channel = ? AND user_id = ? AND case_id = ? AND status = 'pending'
"""
_RELEASE = """
DELETE FROM push_deliveries
WHERE channel = ? AND user_id = ? AND case_id = ? AND batch_key = ? AND status = 'pending'
"""
_SETTLE = """
UPDATE push_deliveries SET status = ?, detail = ?, attempts = ?, updated_at = ?
WHERE channel = ? AND user_id = ? AND case_id = ? AND batch_key = ? AND status = 'pending'
"""
CHUNK_ROWS = 1000
"""A large write (a 10,000-openid WeChat batch) goes in chunks of this many rows ..."""
WAVE_ROWS = 2000
"""... and a wave takes at most about this many rows of large writes, after every small one
(a Telegram claim): a message claimed just before its HTTP call is not held up behind a big
batch, so little is claimed and unsent when a crash comes."""
SMALL_ROWS = 50

_FENCE = "UPDATE push_lease SET expires_at = MAX(expires_at, ?) WHERE name = ? AND owner = ?"


@dataclass(slots=True)
class _Write:
    sql: str
    rows: list[tuple[Any, ...]]
    future: asyncio.Future[list[str]]
    claim: tuple[str, str] | None = None
    """(channel, batch_key) when the caller needs to know which users it now owns."""
    users: list[str] = field(default_factory=list)


class SqlitePushStore:
    """The push store over an open `SqliteStorage`: `await SqlitePushStore.open(storage)`."""

    def __init__(self, storage: SqliteStorage, *, clock: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.db = storage.db
        self.clock = clock
        self._queue: list[_Write] = []
        self._flusher: asyncio.Task[None] | None = None
        self._owner: str | None = None
        self._ttl = 0.0
        self._writing = asyncio.Lock()
        """One write transaction at a time on the connection (waves, rounds)."""

    @classmethod
    async def open(
        cls, storage: SqliteStorage, *, clock: Callable[[], float] = time.time
    ) -> SqlitePushStore:
        await storage.db.executescript(_SCHEMA)
        return cls(storage, clock=clock)

    def now(self) -> float:
        return self.clock()

    # Subscribers.

    async def count_subscribers(self, channel: str) -> int:
        return await self.storage.count_subscribers(channel)

    async def subscriber_page(self, channel: str, after: str, limit: int) -> list[str]:
        rows = await self.db.execute_fetchall(
            "SELECT user_id FROM subscribers WHERE channel = ? AND user_id > ? "
            "ORDER BY user_id LIMIT ?",
            (channel, after, limit),
        )
        return [str(row[0]) for row in rows]

    async def forget_user(self, channel: str, user_id: str) -> None:
        await self.storage.forget_user(channel, user_id)

    # The ledger: reading.

    async def history(
        self, channel: str, user_ids: Sequence[str], *, case_id: str | None = None
    ) -> dict[str, list[Delivery]]:
        found: dict[str, list[Delivery]] = {}
        if not user_ids:
            return found
        marks = ",".join("?" * len(user_ids))
        sql = (
            "SELECT user_id, case_id, status, round FROM push_deliveries "
            f"WHERE channel = ? AND user_id IN ({marks})" + (" AND case_id = ?" if case_id else "")
        )
        params = (channel, *user_ids, case_id) if case_id else (channel, *user_ids)
        for user_id, case, status, round_id in await self.db.execute_fetchall(sql, params):
            found.setdefault(user_id, []).append(Delivery(case, status, round_id))
        return found

    async def status(self, channel: str, user_id: str, case_id: str) -> str | None:
        """One row's status (for tests and tools)."""
        rows = await self.db.execute_fetchall(
            "SELECT status FROM push_deliveries WHERE channel = ? AND user_id = ? AND case_id = ?",
            (channel, user_id, case_id),
        )
        row = next(iter(rows), None)
        return str(row[0]) if row else None

    async def pending(self, channel: str) -> list[PendingRow]:
        rows = await self.db.execute_fetchall(
            "SELECT case_id, user_id, batch_key, attempts, round, updated_at FROM push_deliveries "
            "WHERE channel = ? AND status = 'pending' ORDER BY batch_key, user_id",
            (channel,),
        )
        return [PendingRow(*row) for row in rows]

    async def count_pending(self, channel: str) -> int:
        rows = await self.db.execute_fetchall(
            "SELECT COUNT(*) FROM push_deliveries WHERE channel = ? AND status = 'pending'",
            (channel,),
        )
        return int(next(iter(rows))[0])

    async def unreachable_users(self, channel: str) -> list[str]:
        rows = await self.db.execute_fetchall(
            "SELECT user_id FROM push_deliveries WHERE channel = ? AND status = 'unreachable'",
            (channel,),
        )
        return [str(row[0]) for row in rows]

    # Rounds.

    async def open_round(self, channels: Sequence[str]) -> int:
        async def run(db: aiosqlite.Connection) -> int:
            rows = await db.execute_fetchall(
                "SELECT MAX(round) FROM push_run_channels WHERE finished_at IS NULL"
            )
            round_id = next(iter(rows))[0]
            if round_id is None:
                # Above every round a ledger row names, including rounds of older versions.
                rows = await db.execute_fetchall(
                    "SELECT MAX(COALESCE((SELECT MAX(round) FROM push_runs), 0),"
                    " COALESCE((SELECT MAX(round) FROM push_deliveries), 0)) + 1"
                )
                round_id = int(next(iter(rows))[0])
                await db.execute("INSERT INTO push_runs VALUES (?, ?)", (round_id, self.clock()))
            await db.executemany(
                "INSERT OR IGNORE INTO push_run_channels VALUES (?, ?, NULL)",
                [(round_id, channel) for channel in channels],
            )
            return int(round_id)

        return await self._transaction(run)

    async def current_round(self, channel: str) -> int | None:
        rows = await self.db.execute_fetchall(
            "SELECT MAX(round) FROM push_run_channels WHERE channel = ? AND finished_at IS NULL",
            (channel,),
        )
        value = next(iter(rows))[0]
        return None if value is None else int(value)

    async def finish_round(self, channel: str, round_id: int) -> None:
        async def run(db: aiosqlite.Connection) -> None:
            await db.execute(
                "UPDATE push_run_channels SET finished_at = ? WHERE round = ? AND channel = ?",
                (self.clock(), round_id, channel),
            )

        await self._transaction(run)

    async def has_unfinished_round(self) -> bool:
        rows = await self.db.execute_fetchall(
            "SELECT 1 FROM push_run_channels WHERE finished_at IS NULL LIMIT 1"
        )
        return bool(list(rows))

    # The schedule.

    async def claim_period(self, name: str, interval: float) -> bool:
        now = self.clock()
        cur = await self.db.execute(
            "INSERT INTO push_schedule VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
            "SET started_at = excluded.started_at WHERE started_at <= ?",
            (name, now, now - interval),
        )
        return cur.rowcount == 1

    async def next_due(self, name: str, interval: float) -> float:
        rows = await self.db.execute_fetchall(
            "SELECT started_at FROM push_schedule WHERE name = ?", (name,)
        )
        row = next(iter(rows), None)
        return float(row[0]) + interval if row else self.clock()

    # The push lease.

    async def take_lease(self, owner: str, ttl: float, *, replacing: str | None = None) -> bool:
        now = self.clock()
        cur = await self.db.execute(
            "INSERT INTO push_lease VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
            "SET owner = excluded.owner, expires_at = excluded.expires_at "
            "WHERE expires_at <= ? OR owner = ? OR owner = ?",
            (LEASE_NAME, owner, now + ttl, now, owner, replacing or owner),
        )
        if cur.rowcount == 1:
            self._owner, self._ttl = owner, ttl
            return True
        return False

    async def renew_lease(self, owner: str, ttl: float) -> bool:
        cur = await self.db.execute(
            "UPDATE push_lease SET expires_at = ? WHERE name = ? AND owner = ?",
            (self.clock() + ttl, LEASE_NAME, owner),
        )
        return cur.rowcount == 1

    async def release_lease(self, owner: str) -> None:
        await self.drain()
        self._owner = None
        await self.db.execute(
            "DELETE FROM push_lease WHERE name = ? AND owner = ?", (LEASE_NAME, owner)
        )

    async def lease_holder(self) -> LeaseHolder | None:
        rows = await self.db.execute_fetchall(
            "SELECT owner, expires_at FROM push_lease WHERE name = ?", (LEASE_NAME,)
        )
        row = next(iter(rows), None)
        return LeaseHolder(str(row[0]), float(row[1])) if row else None

    # Writes during a push, group-committed.

    async def claim(
        self,
        channel: str,
        case_id: str,
        user_ids: Sequence[str],
        batch_key: str,
        round_id: int | None,
    ) -> list[str]:
        now = self.clock()
        users = list(user_ids)
        owned: set[str] = set()
        futures = [
            self._enqueue(
                _CLAIM,
                [(channel, u, case_id, batch_key, round_id, now) for u in chunk],
                claim=(channel, batch_key),
                users=chunk,
            )
            for chunk in _chunks(users)
        ]
        for found in await asyncio.gather(*futures):
            owned.update(found)
        return [u for u in users if u in owned]

    async def rekey(
        self, channel: str, case_id: str, user_ids: Sequence[str], batch_key: str, attempt: int
    ) -> None:
        now = self.clock()
        rows = [(batch_key, attempt, now, channel, u, case_id) for u in user_ids]
        if rows:
            await self._submit(_REKEY, rows)

    async def settle(
        self,
        channel: str,
        case_id: str,
        batch_key: str,
        outcomes: Sequence[tuple[str, str, str]],
        attempts: int,
    ) -> None:
        now = self.clock()
        rows = [
            (status, detail, attempts, now, channel, user_id, case_id, batch_key)
            for user_id, status, detail in outcomes
        ]
        # Queued now, before any await: written even if the caller is cancelled meanwhile.
        await asyncio.gather(*(self._enqueue(_SETTLE, chunk) for chunk in _chunks(rows)))

    async def release(
        self, channel: str, case_id: str, user_ids: Sequence[str], batch_key: str
    ) -> None:
        rows = [(channel, u, case_id, batch_key) for u in user_ids]
        if rows:
            await self._submit(_RELEASE, rows)

    async def drain(self) -> None:
        # The writer is a task of its own and outlives workers (e.g. a cancelled push).
        while self._flusher is not None and not self._flusher.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flusher)

    async def _submit(self, sql: str, rows: list[tuple[Any, ...]]) -> list[str]:
        return await self._enqueue(sql, rows)

    def _enqueue(
        self,
        sql: str,
        rows: list[tuple[Any, ...]],
        *,
        claim: tuple[str, str] | None = None,
        users: list[str] | None = None,
    ) -> asyncio.Future[list[str]]:
        """Queue a write (applied even if its caller stops waiting); its future resolves once
        it is committed."""
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Write(sql, rows, future, claim, users or []))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return future

    async def _transaction(self, body: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """One short write transaction, fenced by the lease when one was taken. IMMEDIATE takes
        the write lock at BEGIN, so a busy database is waited for (busy_timeout) rather than
        failing half-way with "database is locked"."""
        async with self._writing:
            return await self._fenced(body)

    async def _fenced(self, body: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            if self._owner is not None:
                fence = (self.clock() + self._ttl, LEASE_NAME, self._owner)
                async with self.db.execute(_FENCE, fence) as cur:
                    if cur.rowcount != 1:
                        raise LeaseLost("another process took the push over")
            result = await body(self.db)
            await self.db.commit()
        except BaseException:
            await asyncio.shield(self.db.rollback())
            raise
        return result

    async def _flush(self) -> None:
        # While one wave is being written, the next one queues up behind it.
        while self._queue:
            wave = self._next_wave()
            try:
                owned = await self._transaction(lambda db, wave=wave: self._apply(db, wave))  # type: ignore[misc]
            except BaseException as exc:
                # Cancelled (the loop is shutting down): nothing queued will be written.
                failed = wave if isinstance(exc, Exception) else [*wave, *self._queue]
                for write in failed:
                    if write.future.done():
                        continue
                    if isinstance(exc, Exception):
                        write.future.set_exception(exc)
                    else:
                        write.future.cancel()
                if not isinstance(exc, Exception):
                    self._queue = []
                    raise
                continue
            for write, users in zip(wave, owned, strict=True):
                if not write.future.done():
                    write.future.set_result(users)

    def _next_wave(self) -> list[_Write]:
        """Every small write queued, and large ones up to WAVE_ROWS (at least one). Callers
        await a write before making one that depends on it, so the order may change."""
        wave = [write for write in self._queue if len(write.rows) <= SMALL_ROWS]
        rest: list[_Write] = []
        budget = WAVE_ROWS
        for write in self._queue:
            if len(write.rows) <= SMALL_ROWS:
                continue
            if budget > 0:
                wave.append(write)
                budget -= len(write.rows)
            else:
                rest.append(write)
        self._queue = rest
        return wave

    async def _apply(self, db: aiosqlite.Connection, wave: list[_Write]) -> list[list[str]]:
        owned: list[list[str]] = [write.users for write in wave]
        start = 0
        while start < len(wave):
            # Consecutive writes of the same statement become one executemany.
            end = start
            while end < len(wave) and wave[end].sql == wave[start].sql:
                end += 1
            rows = [row for write in wave[start:end] for row in write.rows]
            async with db.executemany(wave[start].sql, rows) as cur:
                changed = cur.rowcount
            if wave[start].claim is not None and changed < len(rows):
                for index in range(start, end):
                    channel, key = wave[index].claim  # type: ignore[misc]
                    found = await db.execute_fetchall(
                        "SELECT user_id FROM push_deliveries "
                        "WHERE channel = ? AND batch_key = ? AND status = 'pending'",
                        (channel, key),
                    )
                    owned[index] = [str(row[0]) for row in found]
            start = end
        return owned


def _chunks(rows: list[T]) -> list[list[T]]:
    return [rows[start : start + CHUNK_ROWS] for start in range(0, len(rows), CHUNK_ROWS)]
