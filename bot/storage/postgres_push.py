"""The push store on PostgreSQL (`PostgresPushStore`, implementing `bot.push_store.PushStore`):
the delivery ledger, rounds, schedule and push lease in the tables of `bot.storage.postgres`'s
migrations, for several workers on one or more machines.

Each write call is one short transaction on the pool, and the pool lets several run at once,
so no group commit is needed: a batch's rows go in one statement (`unnest` of arrays), which
keeps a 10,000-recipient WeChat batch one round trip. Once the store has taken the lease, every
write transaction first extends it with an UPDATE that matches only its own owner: that row
lock is held until the commit, so a takeover waits for the write in progress and then sees the
lease extended, and a process whose lease was taken over writes nothing (`LeaseLost`).
Rounds are opened under an advisory lock, so two processes asking at once get the same round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg

from bot.push_store import Delivery, LeaseHolder, LeaseLost, PendingRow
from bot.storage.protocol import Storage

T = TypeVar("T")
LEASE_NAME = "push"
_ROUND_LOCK = 0x1F0_6A4E
"""pg_advisory_xact_lock key that serialises opening a round."""

_CLAIM = """
INSERT INTO push_deliveries
    (channel, user_id, case_id, status, batch_key, attempts, detail, round, updated_at)
SELECT $1, u.user_id, $2, 'pending', $3, 1, '', $4, $5
FROM unnest($6::text[]) AS u (user_id)
WHERE EXISTS (SELECT 1 FROM subscribers s WHERE s.channel = $1 AND s.user_id = u.user_id)
ON CONFLICT DO NOTHING
"""
_REKEY = """
UPDATE push_deliveries SET batch_key = $1, attempts = $2, updated_at = $3
WHERE channel = $4 AND case_id = $5 AND user_id = ANY($6::text[]) AND status = 'pending'
"""
_RELEASE = """
DELETE FROM push_deliveries
WHERE channel = $1 AND case_id = $2 AND batch_key = $3 AND status = 'pending'
    AND user_id = ANY($4::text[])
"""
_SETTLE = """
UPDATE push_deliveries AS d SET status = o.status, detail = o.detail, attempts = $4,
    updated_at = $5
FROM unnest($6::text[], $7::text[], $8::text[]) AS o (user_id, status, detail)
WHERE d.channel = $1 AND d.case_id = $2 AND d.batch_key = $3 AND d.user_id = o.user_id
    AND d.status = 'pending'
"""
_FENCE = (
    "UPDATE push_lease SET expires_at = GREATEST(expires_at, $1) WHERE name = $2 AND owner = $3"
)


def _changed(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class PostgresPushStore:
    """The push store on a PostgreSQL pool; `storage` (the same database, perhaps with Redis in
    front) answers for subscribers, so that forgetting a user also clears their session."""

    def __init__(
        self, pool: asyncpg.Pool, storage: Storage, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.pool = pool
        self.storage = storage
        self.clock = clock
        self._owner: str | None = None
        self._ttl = 0.0
        self._writes = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def now(self) -> float:
        return self.clock()

    # Subscribers.

    async def count_subscribers(self, channel: str) -> int:
        return await self.storage.count_subscribers(channel)

    async def subscriber_page(self, channel: str, after: str, limit: int) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT user_id FROM subscribers WHERE channel = $1 AND user_id > $2 "
            "ORDER BY user_id LIMIT $3",
            channel,
            after,
            limit,
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
        sql = (
            "SELECT user_id, case_id, status, round FROM push_deliveries "
            "WHERE channel = $1 AND user_id = ANY($2::text[])"
        )
        if case_id:
            rows = await self.pool.fetch(
                sql + " AND case_id = $3", channel, list(user_ids), case_id
            )
        else:
            rows = await self.pool.fetch(sql, channel, list(user_ids))
        for user_id, case, status, round_id in rows:
            found.setdefault(user_id, []).append(Delivery(case, status, round_id))
        return found

    async def status(self, channel: str, user_id: str, case_id: str) -> str | None:
        """One row's status (for tests and tools)."""
        value = await self.pool.fetchval(
            "SELECT status FROM push_deliveries "
            "WHERE channel = $1 AND user_id = $2 AND case_id = $3",
            channel,
            user_id,
            case_id,
        )
        return None if value is None else str(value)

    async def pending(self, channel: str) -> list[PendingRow]:
        rows = await self.pool.fetch(
            "SELECT case_id, user_id, batch_key, attempts, round, updated_at FROM push_deliveries "
            "WHERE channel = $1 AND status = 'pending' ORDER BY batch_key, user_id",
            channel,
        )
        return [PendingRow(*row) for row in rows]

    async def count_pending(self, channel: str) -> int:
        value = await self.pool.fetchval(
            "SELECT COUNT(*) FROM push_deliveries WHERE channel = $1 AND status = 'pending'",
            channel,
        )
        return int(value)

    async def unreachable_users(self, channel: str) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT user_id FROM push_deliveries WHERE channel = $1 AND status = 'unreachable'",
            channel,
        )
        return [str(row[0]) for row in rows]

    # Rounds.

    async def open_round(self, channels: Sequence[str]) -> int:
        async def run(conn: asyncpg.Connection) -> int:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _ROUND_LOCK)
            round_id = await conn.fetchval(
                "SELECT MAX(round) FROM push_run_channels WHERE finished_at IS NULL"
            )
            if round_id is None:
                round_id = await conn.fetchval(
                    "SELECT GREATEST(COALESCE((SELECT MAX(round) FROM push_runs), 0),"
                    " COALESCE((SELECT MAX(round) FROM push_deliveries), 0)) + 1"
                )
                await conn.execute("INSERT INTO push_runs VALUES ($1, $2)", round_id, self.clock())
            await conn.executemany(
                "INSERT INTO push_run_channels VALUES ($1, $2, NULL) ON CONFLICT DO NOTHING",
                [(round_id, channel) for channel in channels],
            )
            return int(round_id)

        return await self._transaction(run)

    async def current_round(self, channel: str) -> int | None:
        value = await self.pool.fetchval(
            "SELECT MAX(round) FROM push_run_channels WHERE channel = $1 AND finished_at IS NULL",
            channel,
        )
        return None if value is None else int(value)

    async def finish_round(self, channel: str, round_id: int) -> None:
        async def run(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE push_run_channels SET finished_at = $1 WHERE round = $2 AND channel = $3",
                self.clock(),
                round_id,
                channel,
            )

        await self._transaction(run)

    async def has_unfinished_round(self) -> bool:
        value = await self.pool.fetchval(
            "SELECT 1 FROM push_run_channels WHERE finished_at IS NULL LIMIT 1"
        )
        return value is not None

    # The schedule.

    async def claim_period(self, name: str, interval: float) -> bool:
        now = self.clock()
        status = await self.pool.execute(
            "INSERT INTO push_schedule VALUES ($1, $2) ON CONFLICT (name) DO UPDATE "
            "SET started_at = excluded.started_at WHERE push_schedule.started_at <= $3",
            name,
            now,
            now - interval,
        )
        return _changed(status) == 1

    async def next_due(self, name: str, interval: float) -> float:
        value = await self.pool.fetchval(
            "SELECT started_at FROM push_schedule WHERE name = $1", name
        )
        return float(value) + interval if value is not None else self.clock()

    # The push lease.

    async def take_lease(self, owner: str, ttl: float, *, replacing: str | None = None) -> bool:
        now = self.clock()
        status = await self.pool.execute(
            "INSERT INTO push_lease VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE "
            "SET owner = excluded.owner, expires_at = excluded.expires_at "
            "WHERE push_lease.expires_at <= $4 OR push_lease.owner = $2 "
            "OR push_lease.owner = $5",
            LEASE_NAME,
            owner,
            now + ttl,
            now,
            replacing or owner,
        )
        if _changed(status) == 1:
            self._owner, self._ttl = owner, ttl
            return True
        return False

    async def renew_lease(self, owner: str, ttl: float) -> bool:
        status = await self.pool.execute(
            "UPDATE push_lease SET expires_at = $1 WHERE name = $2 AND owner = $3",
            self.clock() + ttl,
            LEASE_NAME,
            owner,
        )
        return _changed(status) == 1

    async def release_lease(self, owner: str) -> None:
        await self.drain()
        self._owner = None
        await self.pool.execute(
            "DELETE FROM push_lease WHERE name = $1 AND owner = $2", LEASE_NAME, owner
        )

    async def lease_holder(self) -> LeaseHolder | None:
        row = await self.pool.fetchrow(
            "SELECT owner, expires_at FROM push_lease WHERE name = $1", LEASE_NAME
        )
        return LeaseHolder(str(row[0]), float(row[1])) if row else None

    # Writes during a push: one fenced transaction each.

    async def claim(
        self,
        channel: str,
        case_id: str,
        user_ids: Sequence[str],
        batch_key: str,
        round_id: int | None,
    ) -> list[str]:
        users = list(user_ids)

        async def run(conn: asyncpg.Connection) -> list[str]:
            status = await conn.execute(
                _CLAIM, channel, case_id, batch_key, round_id, self.clock(), users
            )
            if _changed(status) == len(users):
                return users
            # Some were taken already, or unsubscribed; a resumed batch owns its own rows.
            rows = await conn.fetch(
                "SELECT user_id FROM push_deliveries "
                "WHERE channel = $1 AND batch_key = $2 AND status = 'pending'",
                channel,
                batch_key,
            )
            return [str(row[0]) for row in rows]

        if not users:
            return []
        return await self._transaction(run)

    async def rekey(
        self, channel: str, case_id: str, user_ids: Sequence[str], batch_key: str, attempt: int
    ) -> None:
        if not user_ids:
            return

        async def run(conn: asyncpg.Connection) -> None:
            await conn.execute(
                _REKEY, batch_key, attempt, self.clock(), channel, case_id, list(user_ids)
            )

        await self._transaction(run)

    async def settle(
        self,
        channel: str,
        case_id: str,
        batch_key: str,
        outcomes: Sequence[tuple[str, str, str]],
        attempts: int,
    ) -> None:
        if not outcomes:
            return
        users, statuses, details = (list(column) for column in zip(*outcomes, strict=True))

        async def run(conn: asyncpg.Connection) -> None:
            await conn.execute(
                _SETTLE,
                channel,
                case_id,
                batch_key,
                attempts,
                self.clock(),
                users,
                statuses,
                details,
            )

        await self._transaction(run)

    async def release(
        self, channel: str, case_id: str, user_ids: Sequence[str], batch_key: str
    ) -> None:
        if not user_ids:
            return

        async def run(conn: asyncpg.Connection) -> None:
            await conn.execute(_RELEASE, channel, case_id, batch_key, list(user_ids))

        await self._transaction(run)

    async def drain(self) -> None:
        await self._idle.wait()

    async def _transaction(self, body: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        # A task of its own, shielded: a cancelled caller (Ctrl-C, another worker failed) does
        # not cut a write in half; it commits or rolls back, and drain() waits for it.
        write = asyncio.ensure_future(self._fenced(body))
        self._writes += 1
        self._idle.clear()
        write.add_done_callback(self._written)
        return await asyncio.shield(write)

    def _written(self, _: asyncio.Future[object]) -> None:
        self._writes -= 1
        if self._writes == 0:
            self._idle.set()

    async def _fenced(self, body: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async with self.pool.acquire() as conn, conn.transaction():
            if self._owner is not None:
                status = await conn.execute(
                    _FENCE, self.clock() + self._ttl, LEASE_NAME, self._owner
                )
                if _changed(status) != 1:
                    raise LeaseLost("another process took the push over")
            return await body(conn)
