"""The push engine: sends case cards to subscribers at most once per (case, channel, user), with
bounded concurrency and memory, across re-runs, crashes and several processes.

A push takes the push lease first (`PushStore.take_lease`): one process pushes at a time. The
lease expires unless renewed, which the engine does while it runs (and every ledger write
checks it), so a dead owner's lease is taken over after `lease_seconds`, at once when the owner
was a process on this machine that no longer exists. A process that finds the lease held
pushes nothing and reports who holds it; it never touches the owner's in-flight rows.

A "next unseen case" push is a round over its channels (`open_round`): a re-run while a round
is unfinished finishes it, on every channel, instead of starting a new one.

On each channel:

1. Users that an interrupted push recorded as unreachable are forgotten now.
2. Deliveries left pending by an interrupted push (only what was in flight when it died) are
   resolved first:
   - an idempotent sender (WeChat mass send drops a repeated clientmsgid) gets them again under
     the same batch key, so whatever was delivered is not delivered twice;
   - with a non-idempotent sender (Telegram, one message per chat) nothing can prove whether an
     in-flight message went out. It is not re-sent, so nobody gets a duplicate, and it is
     recorded and reported as `uncertain`.
   A batch pending for longer than `resend_window` is uncertain even for an idempotent sender:
   WeChat remembers a clientmsgid for 24 hours only.
3. Subscribers are streamed page by page, and the ledger says what each one needs: the given
   case, or (without one) the next case they have not had, oldest first (date, then id), one
   per round. Recipients are grouped into batches of `sender.min_batch` to `sender.max_batch`,
   one case per batch (the last batch of a case borrows from the one before, so no batch is
   smaller than the minimum when it can be avoided); a recipient alone on their case where
   the sender needs two is held for a later push, counted `held`. Batches go through a bounded
   queue to a fixed pool of `concurrency` workers.
4. A worker hands its batch to the sender with a `Claim`; the sender claims the recipients (they
   turn pending, committed) just before its HTTP call, after any rate-limit wait, so that a
   crash leaves uncertain at most the requests on the wire. Then the worker records the
   outcomes. Transient errors (RETRY) are retried with exponential backoff a bounded number of
   times, and a `retry_after` also holds the channel's other workers; a `retry_after` longer
   than `max_retry_wait` (a quota that resets tomorrow) is not waited for, and DEFERRED is not
   retried: those users are released from the ledger and counted `deferred`, so the next push
   offers them the case again. Unreachable users are recorded, then forgotten. Permanent
   failures are recorded. A sender that raises an `InfoGuardError` (e.g. a rejected token)
   stops the push; such an error must mean that nothing went out, so its claims are released
   unless an earlier attempt under the same key may have been delivered. A cancelled push
   (Ctrl-C) releases what it had claimed but certainly not sent.
5. The channel's part of the round is marked finished.

Nothing here knows a platform (channels are reached through `bot.sender.Sender`) or a database
(persistence is reached through `bot.push_store.PushStore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, fields
from typing import Any

from bot.content import Content
from bot.errors import InfoGuardError
from bot.models import CaseCard
from bot.push_store import (
    FAILED,
    PENDING,
    SENT,
    UNCERTAIN,
    UNREACHABLE,
    Delivery,
    LeaseLost,
    PushStore,
)
from bot.sender import Result, Sender, Status

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PushOptions:
    concurrency: int = 32
    """Batches in flight per channel (workers)."""
    max_attempts: int = 5
    """Send attempts per batch for transient errors, after which they are recorded failed."""
    backoff_base: float = 2.0
    backoff_max: float = 300.0
    max_retry_wait: float = 600.0
    """A longer `retry_after` defers the users to the next push instead of waiting."""
    resend_window: float = 20 * 3600.0
    """How old a pending batch an idempotent sender may still get again (WeChat: < 24 h)."""
    page_size: int = 2000
    """Subscribers read per ledger lookup."""
    lease_seconds: float = 40.0
    """The push lease lasts this long unless renewed (every third of it while pushing): with
    the 20 s a waiting worker takes to look again, a dead owner's push is taken over within a
    minute."""


@dataclass(slots=True)
class PushCounts:
    """Outcomes per subscriber on one channel (or summed over channels)."""

    total: int = 0
    """Subscribers when the push started."""
    sent: int = 0
    skipped: int = 0
    """Already had the case (or every case, or this round's case), or unsubscribed meanwhile."""
    unreachable: int = 0
    failed: int = 0
    uncertain: int = 0
    """In flight in an interrupted push and not provably delivered; not re-sent."""
    deferred: int = 0
    """Certainly not delivered now (a quota, `max_retry_wait`): offered again by the next push."""
    held: int = 0
    """Alone on their case where the channel cannot send to one alone (WeChat mass send needs
    two): not sent, offered again by the next push."""
    resumed: int = 0
    """Of the counts above: recipients of batches resumed from an interrupted push."""
    in_flight: int = 0
    """Dry run only: recipients pending from an interrupted push (resolved by the next push)."""

    @property
    def done(self) -> int:
        outcomes = (self.sent, self.skipped, self.unreachable, self.failed, self.uncertain)
        return sum(outcomes) + self.deferred + self.held

    def record(self, status: str, count: int = 1) -> None:
        name = {SENT: "sent", UNREACHABLE: "unreachable", FAILED: "failed"}.get(status, "uncertain")
        setattr(self, name, getattr(self, name) + count)

    def __add__(self, other: PushCounts) -> PushCounts:
        return PushCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@dataclass(slots=True)
class PushReport:
    channels: dict[str, PushCounts]
    case_id: str | None
    """The case pushed, or None for each subscriber's next unseen case."""
    dry_run: bool = False
    busy: str | None = None
    """Another process holds the push lease (its owner id): nothing was pushed."""

    @property
    def totals(self) -> PushCounts:
        return sum(self.channels.values(), PushCounts())


ProgressCallback = Callable[[PushReport], None]


@dataclass(slots=True)
class _Batch:
    card: CaseCard
    users: list[str]
    key: str
    round_id: int | None
    attempt: int = 1
    resumed: bool = False
    """Its rows are already pending in the ledger (left by an interrupted push)."""


def push_order(content: Content, case_url: Callable[[str], str | None]) -> list[CaseCard]:
    """The cases as cards in the order subscribers receive them: oldest date first, then id."""
    cases = sorted(content.cases.values(), key=lambda case: (case.date, case.id))
    return [CaseCard(c.id, c.title, c.summary.strip(), case_url(c.id)) for c in cases]


def new_batch_key() -> str:
    """Unique per batch; 34 ASCII characters, within WeChat's 64-byte clientmsgid."""
    return "ig" + uuid.uuid4().hex


def _machine() -> str:
    """This machine as lease owners name it: host name and pid namespace (two containers with
    one host name do not see each other's processes)."""
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = "-"
    return f"{socket.gethostname()}:{namespace}"


def lease_owner() -> str:
    """A unique owner id for this process: machine, pid, and a random part."""
    return f"{_machine()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str) -> bool:
    """True only when `owner` was a process on this machine that no longer exists."""
    machine, _, rest = owner.rpartition("/")[0].rpartition("/")
    if machine != _machine():
        return False
    try:
        os.kill(int(rest), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError):
        return False
    return False


class PushEngine:
    """Pushes `cards` (in push order) to the subscribers in `store` through senders."""

    def __init__(
        self,
        store: PushStore,
        cards: Sequence[CaseCard],
        *,
        options: PushOptions = PushOptions(),
        on_progress: ProgressCallback | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.order = list(cards)
        self.cards = {card.case_id: card for card in self.order}
        self.options = options
        self.on_progress = on_progress
        self.sleep = sleep
        self.owner = owner or lease_owner()
        self._leased = False

    async def push(
        self,
        senders: Sequence[Sender],
        *,
        case_id: str | None = None,
        dry_run: bool = False,
        new_round: bool = True,
    ) -> PushReport:
        """Push `case_id`, or each subscriber's next unseen case, on every sender's channel.

        `dry_run` counts who would receive what and writes nothing. `new_round=False` only
        finishes an interrupted round (and in-flight deliveries) without starting a new one.
        """
        if case_id is not None and case_id not in self.cards:
            raise InfoGuardError(f"no case with id {case_id!r}")
        report = PushReport({s.channel: PushCounts() for s in senders}, case_id, dry_run)

        def progress() -> None:
            if self.on_progress:
                self.on_progress(report)

        runs = [_ChannelPush(self, s, report.channels[s.channel], progress) for s in senders]
        if dry_run:
            await _run_all(run.plan(case_id) for run in runs)
            progress()
            return report
        async with self.lease() as holder:
            if holder is not None:
                report.busy = holder
                return report
            round_id = None
            if case_id is None and new_round:
                round_id = await self.store.open_round([s.channel for s in senders])
            await _run_all(run.run(case_id, round_id) for run in runs)
        progress()
        return report

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[str | None]:
        """Hold the push lease for the block, renewed meanwhile; yields None when this engine
        holds it, else the owner who does. Re-entrant within one engine."""
        if self._leased:
            yield None
            return
        ttl = self.options.lease_seconds
        taken = await self.store.take_lease(self.owner, ttl)
        if not taken:
            holder = await self.store.lease_holder()
            if holder is not None and owner_is_dead(holder.owner):
                _LOGGER.info("push lease: its owner died; taking it over")
                taken = await self.store.take_lease(self.owner, ttl, replacing=holder.owner)
        if not taken:
            holder = await self.store.lease_holder()
            yield holder.owner if holder else "another process"
            return
        self._leased = True
        renewer = asyncio.create_task(self._renew(ttl))
        try:
            yield None
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            self._leased = False
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.release_lease(self.owner))

    async def _renew(self, ttl: float) -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                if not await self.store.renew_lease(self.owner, ttl):
                    _LOGGER.error("push lease lost to another process; this push stops")
                    return
            except Exception as exc:  # the next write checks the lease anyway
                _LOGGER.warning("push lease renewal failed: %s", type(exc).__name__)


class _Claim:
    """The `bot.sender.Claim` of one send call of a batch."""

    def __init__(self, run: _ChannelPush, batch: _Batch, key: str, owned: set[str]) -> None:
        self.run = run
        self.case_id = batch.card.case_id
        self.round_id = batch.round_id
        self.key = key
        self.owned = owned
        """Users pending under `key` (shared across the batch's attempts)."""
        self.repeat = False
        self.called = False
        self.asked: set[str] = set()
        self.new: list[str] = []

    async def __call__(self, recipients: Sequence[str]) -> list[str]:
        self.called = True
        asked = list(dict.fromkeys(recipients))
        self.asked.update(asked)
        new = [u for u in asked if u not in self.owned]
        if new:
            store, channel = self.run.store, self.run.channel
            got = set(await store.claim(channel, self.case_id, new, self.key, self.round_id))
            fresh = [u for u in new if u in got]
            self.owned.update(fresh)
            self.new += fresh
        return [u for u in asked if u in self.owned]


_Outcome = tuple[str, str, float]
"""(status, detail, retry_after) of one recipient."""


class _ChannelPush:
    """One push on one channel."""

    def __init__(
        self, engine: PushEngine, sender: Sender, counts: PushCounts, progress: Callable[[], None]
    ) -> None:
        self.engine = engine
        self.store = engine.store
        self.sender = sender
        self.channel = sender.channel
        self.options = engine.options
        self.counts = counts
        self.progress = progress
        self.round_id: int | None = None
        self.min_batch = max(1, getattr(sender, "min_batch", 1))
        self.max_batch = max(self.min_batch, sender.max_batch)
        self._held_until = 0.0
        self._recovered_users: set[str] = set()
        """Resolved by the recovery already (at most what was in flight): not counted twice."""

    async def run(self, case_id: str | None, round_id: int | None) -> None:
        self.counts.total = await self.store.count_subscribers(self.channel)
        for user_id in await self.store.unreachable_users(self.channel):
            await self.store.forget_user(self.channel, user_id)
        await self._pool(self._recovered())
        if case_id is None:
            # The round this channel has not finished; None: done with it, or no round open.
            self.round_id = await self.store.current_round(self.channel)
            if self.round_id is None or (round_id is not None and self.round_id != round_id):
                if round_id is not None:
                    _LOGGER.warning(
                        "push %s: done with round %d already; the round goes on on other "
                        "channels (push them to finish it)",
                        self.channel,
                        round_id,
                    )
                return
        await self._pool(self._planned(case_id))
        if self.round_id is not None:
            await self.store.finish_round(self.channel, self.round_id)

    async def plan(self, case_id: str | None) -> None:
        """A dry run: count who would get what; write nothing."""
        self.counts.total = await self.store.count_subscribers(self.channel)
        if case_id is None:
            self.round_id = await self.store.current_round(self.channel)
        async for batch in self._planned(case_id):
            self.counts.sent += len(batch.users)
        self.counts.in_flight = len(await self.store.pending(self.channel))

    async def _planned(self, case_id: str | None) -> AsyncIterator[_Batch]:
        """Batches for the subscribers who need a case, streamed, one case per batch."""
        low, high = self.min_batch, self.max_batch
        # Keep `low` back each time a batch fills, so the last batch of a case is never short.
        fill = high + (low if low > 1 else 0)
        buffers: dict[str, list[str]] = {}
        after = ""
        while users := await self.store.subscriber_page(
            self.channel, after, self.options.page_size
        ):
            after = users[-1]
            history = await self.store.history(self.channel, users, case_id=case_id)
            for user_id in users:
                rows = history.get(user_id, [])
                if user_id in self._recovered_users:
                    continue
                if any(row.status == PENDING for row in rows):
                    continue  # in flight (resolved by the recovery of the next push)
                card = self._target(case_id, rows)
                if card is None:
                    self.counts.skipped += 1
                    continue
                buffer = buffers.setdefault(card.case_id, [])
                buffer.append(user_id)
                if len(buffer) >= fill:
                    yield self._batch(card, buffer[:high])
                    buffers[card.case_id] = buffer[high:]
            self.progress()
        for pending_case, buffer in buffers.items():
            card = self.engine.cards[pending_case]
            if len(buffer) > high:
                cut = max(low, min(high, len(buffer) - low))
                yield self._batch(card, buffer[:cut])
                buffer = buffer[cut:]
            if len(buffer) >= low:
                yield self._batch(card, buffer)
            elif buffer:
                self.counts.held += len(buffer)
                _LOGGER.info(
                    "push %s: %d recipient(s) alone on case %s held for a later push",
                    self.channel,
                    len(buffer),
                    pending_case,
                )
        self.progress()

    def _batch(self, card: CaseCard, users: list[str]) -> _Batch:
        return _Batch(card, users, new_batch_key(), self.round_id)

    def _target(self, case_id: str | None, rows: list[Delivery]) -> CaseCard | None:
        if case_id is not None:
            return None if rows else self.engine.cards[case_id]
        if self.round_id is not None and any(row.round == self.round_id for row in rows):
            return None
        had = {row.case_id for row in rows}
        return next((card for card in self.engine.order if card.case_id not in had), None)

    async def _recovered(self) -> AsyncIterator[_Batch]:
        """Batches an interrupted push left pending: re-sent, or recorded uncertain."""
        now = self.store.now()
        groups: dict[tuple[str, str], list[Any]] = {}
        for row in await self.store.pending(self.channel):
            groups.setdefault((row.batch_key, row.case_id), []).append(row)
        for (key, case_id), rows in groups.items():
            users = [row.user_id for row in rows]
            self._recovered_users.update(users)
            attempts = max(row.attempts for row in rows)
            oldest = min(row.updated_at for row in rows)
            card = self.engine.cards.get(case_id)
            fresh = now - oldest <= self.options.resend_window
            if (
                card is not None
                and fresh
                and self.sender.idempotent
                and len(users) >= self.min_batch
            ):
                self.counts.resumed += len(users)
                yield _Batch(card, users, key, rows[0].round, attempt=attempts, resumed=True)
                continue
            reason = "interrupted" if card is not None else "case_removed"
            outcomes = [(user, UNCERTAIN, reason) for user in users]
            await self.store.settle(self.channel, case_id, key, outcomes, attempts)
            self.counts.uncertain += len(users)
            _LOGGER.warning(
                "push %s: %d in-flight deliveries of batch %s left uncertain (%s)",
                self.channel,
                len(users),
                key,
                reason,
            )
            self.progress()

    async def _pool(self, batches: AsyncIterator[_Batch]) -> None:
        workers = max(1, self.options.concurrency)
        queue: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=workers)

        async def feed() -> None:
            async with aclosing(batches):
                async for batch in batches:
                    await queue.put(batch)
            for _ in range(workers):
                await queue.put(None)

        async def work() -> None:
            while (batch := await queue.get()) is not None:
                await self._deliver(batch)

        await _run_all([feed(), *(work() for _ in range(workers))])

    async def _deliver(self, batch: _Batch) -> None:
        """Send (the sender claims), record, and retry what is transient. When cancelled
        (Ctrl-C, or another worker failed), claimed recipients certainly not sent to are
        released, so that only the messages really in flight are left to the recovery."""
        case_id = batch.card.case_id
        key, attempt, users = batch.key, batch.attempt, batch.users
        owned: set[str] = set(batch.users) if batch.resumed else set()
        claim = _Claim(self, batch, key, owned)
        claim.repeat = batch.resumed
        waiting: list[str] = []  # owned, certainly not sent, waiting for their retry
        try:
            while users:
                await self._wait_while_held()
                outcomes = await self._send(batch.card, users, claim)
                retry, retry_after = await self._record(case_id, claim, attempt, outcomes)
                if not retry:
                    break
                attempt += 1
                if len(retry) < len(users):
                    # A subset goes out as a new batch, under a new key recorded before it is sent.
                    key = f"{batch.key.split('.')[0]}.{attempt}"
                    moved = [u for u in retry if u in owned]
                    await self.store.rekey(self.channel, case_id, moved, key, attempt)
                    owned = set(moved)
                repeat = key == claim.key  # the same key again: it may have gone out
                claim = _Claim(self, batch, key, owned)
                claim.repeat = repeat
                waiting = [] if self.sender.idempotent else [u for u in retry if u in owned]
                backoff = self.options.backoff_base * 2 ** (attempt - 2)
                await self.engine.sleep(max(min(backoff, self.options.backoff_max), retry_after))
                users = retry
        except asyncio.CancelledError:
            if waiting and not claim.called:
                await asyncio.shield(self.store.release(self.channel, case_id, waiting, key))
            raise
        self.progress()

    async def _send(self, card: CaseCard, users: list[str], claim: _Claim) -> dict[str, _Outcome]:
        """An outcome per user; a raised error or a missing outcome is a retry for an idempotent
        sender and uncertain for another (for claimed users: unclaimed ones were not sent)."""
        error = "no_result"
        try:
            results = await self.sender.send(card, users, batch_key=claim.key, claim=claim)
        except LeaseLost:
            raise
        except InfoGuardError:  # a setting is wrong; nothing of this call went out
            if not claim.repeat:
                await self.store.release(self.channel, card.case_id, claim.new, claim.key)
            raise
        except Exception as exc:
            error = type(exc).__name__
            _LOGGER.warning("push %s: sender raised %s on batch %s", self.channel, error, claim.key)
            results = {}
        unknown = Status.RETRY.value if self.sender.idempotent else UNCERTAIN
        outcomes: dict[str, _Outcome] = {}
        for user in users:
            result: Result | None = results.get(user)
            if user not in claim.owned:
                if user in claim.asked:
                    outcomes[user] = ("skip", "", 0.0)  # unsubscribed, or served meanwhile
                elif result is None:
                    outcomes[user] = (Status.RETRY.value, error, 0.0)  # never left
                else:
                    outcomes[user] = (result.status.value, result.detail[:64], 0.0)
            elif result is None:
                outcomes[user] = (unknown, error, 0.0)
            else:
                outcomes[user] = (
                    result.status.value,
                    result.detail[:64],
                    result.retry_after or 0.0,
                )
        return outcomes

    async def _record(
        self, case_id: str, claim: _Claim, attempt: int, outcomes: dict[str, _Outcome]
    ) -> tuple[list[str], float]:
        """Record the final outcomes and defer long waits; returns the users to retry and the
        wait they asked for."""
        limit = self.options.max_retry_wait
        key, owned = claim.key, claim.owned
        retry: list[str] = []
        later: list[str] = []
        final: list[tuple[str, str, str]] = []
        for user, (status, detail, wait) in outcomes.items():
            if status == "skip":
                self.counts.skipped += 1
            elif status == Status.DEFERRED.value or (status == Status.RETRY.value and wait > limit):
                later.append(user)
            elif status == Status.RETRY.value:
                retry.append(user)
            else:
                final.append((user, status, detail))
        if retry and attempt >= self.options.max_attempts:
            final += [(u, FAILED, f"retries_exhausted:{outcomes[u][1]}"[:64]) for u in retry]
            retry = []
        await self.store.release(self.channel, case_id, [u for u in later if u in owned], key)
        self.counts.deferred += len(later)
        unclaimed = [user for user, _, _ in final if user not in owned]
        if unclaimed:  # an outcome without a claim (e.g. a bad id): recorded all the same
            owned.update(await claim(unclaimed))
        final = [row for row in final if row[0] in owned]
        await self.store.settle(self.channel, case_id, key, final, attempt)
        await self._count(final)
        retry_after = max((outcomes[u][2] for u in retry), default=0.0)
        if retry_after > 0:
            self._held_until = max(self._held_until, time.monotonic() + retry_after)
        return retry, retry_after

    async def _count(self, final: list[tuple[str, str, str]]) -> None:
        for user_id, status, _ in final:
            self.counts.record(status)
            if status == UNREACHABLE:
                # Blocked, unfollowed or gone: they are unsubscribed and their data deleted.
                await self.store.forget_user(self.channel, user_id)

    async def _wait_while_held(self) -> None:
        wait = self._held_until - time.monotonic()
        if wait > 0:
            await self.engine.sleep(wait)


async def push_cases(
    store: PushStore,
    cards: Sequence[CaseCard],
    senders: Sequence[Sender],
    *,
    case_id: str | None = None,
    dry_run: bool = False,
    options: PushOptions = PushOptions(),
    on_progress: ProgressCallback | None = None,
) -> PushReport:
    """One push: `case_id` or each subscriber's next unseen case, on every sender's channel."""
    engine = PushEngine(store, cards, options=options, on_progress=on_progress)
    try:
        return await engine.push(senders, case_id=case_id, dry_run=dry_run)
    finally:
        await store.drain()


async def _run_all(coroutines: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run together; the first failure cancels the rest and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except BaseExceptionGroup as errors:
        for extra in errors.exceptions[1:]:
            _LOGGER.debug("push task also failed: %s", type(extra).__name__)
        raise errors.exceptions[0] from None
