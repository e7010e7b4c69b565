"""What the push engine needs from a database, as a protocol: `PushStore`.

The push engine (bot.push) and the scheduler (bot.schedule) reach persistence only through
this protocol; `bot.ledger.SqlitePushStore` implements it on the SQLite file, and a server
database (PostgreSQL) can implement it the same way. The signatures use plain values only.

A store holds, per channel:

- subscribers (read here, written by the conversation side);
- the delivery ledger: one row per (channel, user, case) ever attempted, `pending` from just
  before the sender's HTTP call until the outcome is recorded, then `sent`, `failed`,
  `uncertain` (an interrupted send whose outcome cannot be known) or `unreachable` (until the
  user is forgotten). `batch_key` is the key of the last send attempt;
- rounds: a "next unseen case" push is one round over its channels; every subscriber gets at
  most one case a round, and a re-run finishes an unfinished round instead of opening a new one;
- the schedule: when the scheduled push last started;
- the push lease: one owner at a time pushes. The lease expires unless renewed; a process that
  has lost it (another took it over after expiry) must not write any more: once a store has
  taken the lease, every ledger or round write it makes checks, atomically with the write,
  that it still holds it, and raises `LeaseLost` otherwise.

Writes may be batched ("group commit"), but each call returns only once its write is durable.

On a server database (e.g. PostgreSQL) the same contract maps onto plain SQL: a claim is
`INSERT ... SELECT ... WHERE EXISTS (subscriber) ON CONFLICT DO NOTHING RETURNING user_id`; the
fence is `UPDATE push_lease SET expires_at = ... WHERE name = 'push' AND owner = $1` as the
first statement of each write transaction (zero rows: roll back, raise LeaseLost);
`take_lease` is one `INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE expires_at <= now() OR
owner IN ($1, $2)`; `open_round` runs under the lease, so it needs no lock of its own. The
engine's tests (tests/test_push.py, tests/test_push_http.py) build `SqlitePushStore` where
they need a store; building another implementation there runs them against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.errors import InfoGuardError

PENDING = "pending"
SENT = "sent"
UNREACHABLE = "unreachable"
FAILED = "failed"
UNCERTAIN = "uncertain"


class LeaseLost(InfoGuardError):
    """Another process took the push lease over: this one must stop writing and sending."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the ledger holds about one case for one user."""

    case_id: str
    status: str
    round: int | None


@dataclass(frozen=True, slots=True)
class PendingRow:
    """A delivery left in flight (by this or an interrupted push)."""

    case_id: str
    user_id: str
    batch_key: str
    attempts: int
    round: int | None
    updated_at: float
    """When the row was claimed or re-keyed (store clock, seconds since the epoch)."""


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    owner: str
    expires_at: float


class PushStore(Protocol):
    """Persistence of the push. All methods are coroutines safe to call concurrently."""

    def now(self) -> float:
        """The store's clock, seconds since the epoch (tests give it a fake one)."""
        ...

    # Subscribers.

    async def count_subscribers(self, channel: str) -> int: ...

    async def subscriber_page(self, channel: str, after: str, limit: int) -> list[str]:
        """Up to `limit` user ids of the channel greater than `after`, in ascending order."""
        ...

    async def forget_user(self, channel: str, user_id: str) -> None:
        """Delete the subscription and everything held about the user, ledger rows included."""
        ...

    # The ledger: reading.

    async def history(
        self, channel: str, user_ids: Sequence[str], *, case_id: str | None = None
    ) -> dict[str, list[Delivery]]:
        """The rows of these users (for one case, or every case), by user."""
        ...

    async def pending(self, channel: str) -> list[PendingRow]:
        """Every pending row of the channel: at most what was in flight when pushes stopped."""
        ...

    async def unreachable_users(self, channel: str) -> list[str]:
        """Users recorded unreachable but not yet forgotten (a crash came in between)."""
        ...

    # The ledger: writing (only while holding the lease, if one was taken).

    async def claim(
        self,
        channel: str,
        case_id: str,
        user_ids: Sequence[str],
        batch_key: str,
        round_id: int | None,
    ) -> list[str]:
        """Record these users as pending under `batch_key`; returns those this batch now owns:
        still subscribed, and with no row for the case yet (an unsubscribe, or an earlier
        delivery, wins)."""
        ...

    async def rekey(
        self, channel: str, case_id: str, user_ids: Sequence[str], batch_key: str, attempt: int
    ) -> None:
        """Move pending users to a new send attempt under a new key, before it is sent."""
        ...

    async def settle(
        self,
        channel: str,
        case_id: str,
        batch_key: str,
        outcomes: Sequence[tuple[str, str, str]],
        attempts: int,
    ) -> None:
        """Record outcomes (user_id, status, detail) of users pending under `batch_key`."""
        ...

    async def release(
        self, channel: str, case_id: str, user_ids: Sequence[str], batch_key: str
    ) -> None:
        """Delete pending rows certainly not sent, so a later push offers the case again."""
        ...

    async def drain(self) -> None:
        """Wait until every write already asked for is durable (or has failed)."""
        ...

    # Rounds.

    async def open_round(self, channels: Sequence[str]) -> int:
        """The unfinished round (now also covering `channels`), or a new round over them;
        two processes asking at once get the same round."""
        ...

    async def current_round(self, channel: str) -> int | None:
        """The unfinished round covering this channel, if any."""
        ...

    async def finish_round(self, channel: str, round_id: int) -> None:
        """The channel is done with the round; the round is finished when all its are."""
        ...

    async def has_unfinished_round(self) -> bool: ...

    # The schedule.

    async def claim_period(self, name: str, interval: float) -> bool:
        """Start a new period of schedule `name` if the last began `interval` seconds ago or
        more; True for the one caller that did."""
        ...

    async def next_due(self, name: str, interval: float) -> float: ...

    # The push lease.

    async def take_lease(self, owner: str, ttl: float, *, replacing: str | None = None) -> bool:
        """Become the owner for `ttl` seconds if nobody holds the lease, it expired, or its
        holder is `replacing` (known dead). Atomic: of two callers at most one wins."""
        ...

    async def renew_lease(self, owner: str, ttl: float) -> bool:
        """Extend the lease; False if `owner` no longer holds it."""
        ...

    async def release_lease(self, owner: str) -> None:
        """Give the lease up (if still held by `owner`) and stop checking it on writes."""
        ...

    async def lease_holder(self) -> LeaseHolder | None: ...
