"""The delivery ledger: which case went to which user on which channel, kept durably so that a
push can be re-run, or resumed after a crash, without sending anyone a case twice.

It owns three tables in the `SqliteStorage` file (created here on first use):

- `push_deliveries`, one row per (channel, user, case) ever attempted. A row is `pending` from
  just before the sender is called until the outcome is recorded, then `sent`, `failed`,
  `uncertain` (the outcome of an interrupted send cannot be known) or `unreachable` (only until
  the user is forgotten, which deletes all their rows). `batch_key` is the key of the last send
  attempt: a resumed batch is re-sent under the same key.
- `push_rounds`: a "next unseen case" push is a round per channel; every subscriber receives at
  most one case per round, so resuming an interrupted round finishes it instead of starting over
  with the next case for those already served.
- `push_schedule`: when the scheduled push last started, claimed atomically so that several
  server processes start one push per period between them.

Writes made while a push runs (claims, new keys, outcomes) go through a group commit: the writes
that concurrent workers queue meanwhile are applied in one transaction, so the ledger costs one
commit per wave of batches instead of two per message, while each worker still waits until its
own write is committed before it goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.storage import SqliteStorage

PENDING = "pending"
SENT = "sent"
UNREACHABLE = "unreachable"
FAILED = "failed"
UNCERTAIN = "uncertain"

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
CREATE TABLE IF NOT EXISTS push_rounds (
    channel TEXT NOT NULL, round INTEGER NOT NULL, started_at REAL NOT NULL, finished_at REAL,
    PRIMARY KEY (channel, round));
CREATE TABLE IF NOT EXISTS push_schedule (name TEXT PRIMARY KEY, started_at REAL NOT NULL);
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
WHERE channel = ? AND user_id = ? AND case_id = ? AND batch_key = ?
"""


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the ledger holds about one case for one user."""

    case_id: str
    status: str
    round: int | None


@dataclass(frozen=True, slots=True)
class PendingRow:
    case_id: str
    user_id: str
    attempts: int
    round: int | None
    updated_at: float


@dataclass(slots=True)
class _Write:
    sql: str
    rows: list[tuple[Any, ...]]
    future: asyncio.Future[list[str]]
    claim: tuple[str, str] | None = None
    """(channel, batch_key) when the caller needs to know which users it now owns."""
    users: list[str] = field(default_factory=list)


class Ledger:
    """The ledger over an open `SqliteStorage`; get one with `await Ledger.open(storage)`."""

    def __init__(self, storage: SqliteStorage, *, clock: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.db = storage.db
        self.clock = clock
        self._queue: list[_Write] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, storage: SqliteStorage, *, clock: Callable[[], float] = time.time
    ) -> Ledger:
        await storage.db.executescript(_SCHEMA)
        return cls(storage, clock=clock)

    # Reading.

    async def history(
        self, channel: str, user_ids: Sequence[str], *, case_id: str | None = None
    ) -> dict[str, list[Delivery]]:
        """The rows of these users (for one case, or all cases), by user."""
        found: dict[str, list[Delivery]] = {}
        if not user_ids:
            return found
        marks = ",".join("?" * len(user_ids))
        sql = (
            "SELECT user_id, case_id, status, round FROM push_deliveries "
            f"WHERE channel = ? AND user_id IN ({marks})" + (" AND case_id = ?" if case_id else "")
        )
        params = (channel, *user_ids, case_id) if case_id else (channel, *user_ids)
        async with self.db.execute(sql, params) as cur:
            for user_id, case, status, round_id in await cur.fetchall():
                found.setdefault(user_id, []).append(Delivery(case, status, round_id))
        return found

    async def status(self, channel: str, user_id: str, case_id: str) -> str | None:
        async with self.db.execute(
            "SELECT status FROM push_deliveries WHERE channel = ? AND user_id = ? AND case_id = ?",
            (channel, user_id, case_id),
        ) as cur:
            row = await cur.fetchone()
        return str(row[0]) if row else None

    async def pending_keys(self, channel: str) -> list[str]:
        """Keys of batches left in flight; at most the in-flight batches of interrupted pushes."""
        async with self.db.execute(
            "SELECT DISTINCT batch_key FROM push_deliveries "
            "WHERE channel = ? AND status = 'pending' ORDER BY batch_key",
            (channel,),
        ) as cur:
            return [str(row[0]) for row in await cur.fetchall()]

    async def pending_batch(self, channel: str, batch_key: str) -> list[PendingRow]:
        async with self.db.execute(
            "SELECT case_id, user_id, attempts, round, updated_at FROM push_deliveries "
            "WHERE channel = ? AND batch_key = ? AND status = 'pending'",
            (channel, batch_key),
        ) as cur:
            return [PendingRow(*row) for row in await cur.fetchall()]

    async def count_pending(self, channel: str) -> int:
        async with self.db.execute(
            "SELECT COUNT(*) FROM push_deliveries WHERE channel = ? AND status = 'pending'",
            (channel,),
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def unreachable_users(self, channel: str) -> list[str]:
        """Users recorded unreachable but not yet forgotten (a crash came in between)."""
        async with self.db.execute(
            "SELECT user_id FROM push_deliveries WHERE channel = ? AND status = 'unreachable'",
            (channel,),
        ) as cur:
            return [str(row[0]) for row in await cur.fetchall()]

    # Rounds of "next unseen case" pushes.

    async def current_round(self, channel: str) -> int | None:
        """The unfinished round of this channel, if a push of it was interrupted."""
        async with self.db.execute(
            "SELECT MAX(round) FROM push_rounds WHERE channel = ? AND finished_at IS NULL",
            (channel,),
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row and row[0] is not None else None

    async def open_round(self, channel: str) -> int:
        """The unfinished round of this channel, or a new one; one statement, so two processes
        starting at once end up in the same round."""
        await self.db.execute(
            "INSERT INTO push_rounds (channel, round, started_at) "
            "SELECT ?1, (SELECT COALESCE(MAX(round), 0) + 1 FROM push_rounds WHERE channel = ?1),"
            " ?2 WHERE NOT EXISTS "
            "(SELECT 1 FROM push_rounds WHERE channel = ?1 AND finished_at IS NULL)",
            (channel, self.clock()),
        )
        round_id = await self.current_round(channel)
        assert round_id is not None
        return round_id

    async def finish_round(self, channel: str, round_id: int) -> None:
        await self.db.execute(
            "UPDATE push_rounds SET finished_at = ? WHERE channel = ? AND round = ?",
            (self.clock(), channel, round_id),
        )

    async def has_unfinished_round(self) -> bool:
        async with self.db.execute(
            "SELECT 1 FROM push_rounds WHERE finished_at IS NULL LIMIT 1"
        ) as cur:
            return await cur.fetchone() is not None

    # The schedule.

    async def claim_period(self, name: str, interval: float) -> bool:
        """Start a new period of the schedule `name` if the last one began `interval` seconds
        ago or more; True for the one caller that did."""
        now = self.clock()
        cur = await self.db.execute(
            "INSERT INTO push_schedule VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
            "SET started_at = excluded.started_at WHERE started_at <= ?",
            (name, now, now - interval),
        )
        return cur.rowcount == 1

    async def next_due(self, name: str, interval: float) -> float:
        async with self.db.execute(
            "SELECT started_at FROM push_schedule WHERE name = ?", (name,)
        ) as cur:
            row = await cur.fetchone()
        return float(row[0]) + interval if row else self.clock()

    # Writes during a push, group-committed.

    async def claim(
        self,
        channel: str,
        case_id: str,
        user_ids: Sequence[str],
        batch_key: str,
        round_id: int | None,
    ) -> list[str]:
        """Record these users as pending under `batch_key`; returns those now owned by this
        batch (still subscribed, and not already recorded for the case)."""
        now = self.clock()
        rows = [(channel, u, case_id, batch_key, round_id, now) for u in user_ids]
        return await self._submit(_CLAIM, rows, claim=(channel, batch_key), users=list(user_ids))

    async def rekey(
        self, channel: str, case_id: str, user_ids: Sequence[str], batch_key: str, attempt: int
    ) -> None:
        """Move pending users to a new send attempt under a new key, before it is sent."""
        now = self.clock()
        rows = [(batch_key, attempt, now, channel, u, case_id) for u in user_ids]
        await self._submit(_REKEY, rows)

    async def settle(
        self,
        channel: str,
        case_id: str,
        batch_key: str,
        outcomes: Sequence[tuple[str, str, str]],
        attempts: int,
    ) -> None:
        """Record outcomes as (user_id, status, detail) for users pending under `batch_key`."""
        now = self.clock()
        rows = [
            (status, detail, attempts, now, channel, user_id, case_id, batch_key)
            for user_id, status, detail in outcomes
        ]
        if rows:
            await self._submit(_SETTLE, rows)

    async def release(
        self, channel: str, case_id: str, user_ids: Sequence[str], batch_key: str
    ) -> None:
        """Drop pending users that were certainly not sent to, so a later push offers the case
        again (e.g. a quota that resets tomorrow)."""
        rows = [(channel, u, case_id, batch_key) for u in user_ids]
        if rows:
            await self._submit(_RELEASE, rows)

    async def drain(self) -> None:
        """Wait until every queued write is committed (or has failed), e.g. before the storage
        closes when a push is cancelled: the writer is a task of its own and outlives workers."""
        while self._flusher is not None and not self._flusher.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flusher)

    async def _submit(
        self,
        sql: str,
        rows: list[tuple[Any, ...]],
        *,
        claim: tuple[str, str] | None = None,
        users: list[str] | None = None,
    ) -> list[str]:
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Write(sql, rows, future, claim, users or []))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        # While one wave is being written, the next one queues up behind it.
        while self._queue:
            wave, self._queue = self._queue, []
            try:
                # One transaction a wave (the connection autocommits single statements).
                await self.db.execute("BEGIN")
                owned = await self._apply(wave)
                await self.db.commit()
            except BaseException as exc:
                await asyncio.shield(self.db.rollback())
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

    async def _apply(self, wave: list[_Write]) -> list[list[str]]:
        owned: list[list[str]] = [write.users for write in wave]
        start = 0
        while start < len(wave):
            # Consecutive writes of the same statement become one executemany.
            end = start
            while end < len(wave) and wave[end].sql == wave[start].sql:
                end += 1
            rows = [row for write in wave[start:end] for row in write.rows]
            async with self.db.executemany(wave[start].sql, rows) as cur:
                changed = cur.rowcount
            if wave[start].claim is not None and changed < len(rows):
                for index in range(start, end):
                    owned[index] = await self._owned(*wave[index].claim)  # type: ignore[misc]
            start = end
        return owned

    async def _owned(self, channel: str, batch_key: str) -> list[str]:
        return [row.user_id for row in await self.pending_batch(channel, batch_key)]
