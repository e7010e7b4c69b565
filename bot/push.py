"""The push engine: sends case cards to subscribers at most once per (case, channel, user), with
bounded concurrency and memory, across re-runs and crashes.

A push runs on each channel at once; on one channel it goes like this:

1. Users that an interrupted push recorded as unreachable are forgotten now.
2. Subscribers are streamed page by page, and the ledger says what each one needs: the given case,
   or (without one) the next case they have not had, oldest first (date, then id), one per round.
   Recipients are grouped into batches of at most `sender.max_batch`, one case per batch, and
   handed through a bounded queue to a fixed pool of `concurrency` workers.
3. A worker records its batch's recipients as pending under a fresh batch key and commits that
   BEFORE it calls the sender; then it records the outcomes. Transient errors (RETRY) are retried
   with exponential backoff for a bounded number of attempts, and a `retry_after` also holds the
   channel's other workers, since Telegram's flood limit is per bot; a `retry_after` longer than
   `max_retry_wait` (a quota that resets tomorrow) is not waited for: those users are released
   from the ledger and counted `deferred`, so the next push offers them the case again.
   Unreachable users are recorded, then forgotten (subscription and data deleted). Permanent
   failures are recorded. A sender that raises an `InfoGuardError` (e.g. a rejected token) stops
   the push; such an error must mean that nothing went out, so its batch is released unless an
   earlier attempt under the same key may have been delivered. A cancelled push (Ctrl-C)
   releases what it had claimed but not yet sent.
4. Batches still pending from an interrupted push (only what was in flight when it died) are
   resolved last:
   - an idempotent sender (WeChat mass send drops a repeated clientmsgid) gets them again under
     the same batch key, so whatever was delivered is not delivered twice;
   - with a non-idempotent sender (Telegram, one message per chat) nothing can prove whether an
     in-flight message went out. It is not re-sent, so nobody gets a duplicate, and it is
     recorded and reported as `uncertain`. That window is at most the messages in flight at the
     crash (`concurrency x max_batch`), since a batch turns pending just before it is sent.
   A batch pending for longer than `resend_window` is uncertain even for an idempotent sender:
   WeChat remembers a clientmsgid for 24 hours only.
5. The round of "next unseen case" pushes is marked finished.

Nothing here knows a platform: channels are reached through `bot.sender.Sender`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from bot.content import Content
from bot.errors import InfoGuardError
from bot.ledger import FAILED, PENDING, SENT, UNCERTAIN, UNREACHABLE, Delivery, Ledger
from bot.models import CaseCard
from bot.sender import Sender, Status
from bot.storage import SqliteStorage

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")


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
    page_size: int = 500
    """Subscribers read per ledger lookup."""


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
    """Told to retry much later (`max_retry_wait`): offered again by the next push."""
    resumed: int = 0
    """Of the counts above: recipients of batches resumed from an interrupted push."""
    in_flight: int = 0
    """Dry run only: recipients pending from an interrupted push (resolved by the next push)."""

    @property
    def done(self) -> int:
        outcomes = (self.sent, self.skipped, self.unreachable, self.failed, self.uncertain)
        return sum(outcomes) + self.deferred

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

    @property
    def totals(self) -> PushCounts:
        return sum(self.channels.values(), PushCounts())


ProgressCallback = Callable[[PushReport], None]


@dataclass(slots=True)
class _Batch:
    card: CaseCard
    users: list[str]
    key: str
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


class PushEngine:
    """Pushes `cards` (in push order) to the subscribers in `storage` through senders."""

    def __init__(
        self,
        storage: SqliteStorage,
        ledger: Ledger,
        cards: Sequence[CaseCard],
        *,
        options: PushOptions = PushOptions(),
        on_progress: ProgressCallback | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.storage = storage
        self.ledger = ledger
        self.order = list(cards)
        self.cards = {card.case_id: card for card in self.order}
        self.options = options
        self.on_progress = on_progress
        self.sleep = sleep

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
        finishes an interrupted round (and in-flight batches) without starting a new one.
        """
        if case_id is not None and case_id not in self.cards:
            raise InfoGuardError(f"no case with id {case_id!r}")
        report = PushReport({s.channel: PushCounts() for s in senders}, case_id, dry_run)

        def progress() -> None:
            if self.on_progress:
                self.on_progress(report)

        runs = [_ChannelPush(self, s, report.channels[s.channel], progress) for s in senders]
        await _run_all(run.run(case_id, dry_run=dry_run, new_round=new_round) for run in runs)
        progress()
        return report


class _ChannelPush:
    """One push on one channel."""

    def __init__(
        self, engine: PushEngine, sender: Sender, counts: PushCounts, progress: Callable[[], None]
    ) -> None:
        self.engine = engine
        self.sender = sender
        self.channel = sender.channel
        self.ledger = engine.ledger
        self.options = engine.options
        self.counts = counts
        self.progress = progress
        self.round_id: int | None = None
        self._held_until = 0.0

    async def run(self, case_id: str | None, *, dry_run: bool, new_round: bool) -> None:
        self.counts.total = await self.engine.storage.count_subscribers(self.channel)
        if dry_run:
            await self._plan(case_id)
            return
        for user_id in await self.ledger.unreachable_users(self.channel):
            await self.engine.storage.forget_user(self.channel, user_id)
        if case_id is None:
            self.round_id = (
                await self.ledger.open_round(self.channel)
                if new_round
                else await self.ledger.current_round(self.channel)
            )
        if case_id is not None or self.round_id is not None:
            await self._pool(self._planned(case_id))
        await self._pool(self._recovered())
        if self.round_id is not None:
            await self.ledger.finish_round(self.channel, self.round_id)

    async def _plan(self, case_id: str | None) -> None:
        if case_id is None:
            self.round_id = await self.ledger.current_round(self.channel)
        async for batch in self._planned(case_id):
            self.counts.sent += len(batch.users)
        self.counts.in_flight = await self.ledger.count_pending(self.channel)

    async def _planned(self, case_id: str | None) -> AsyncIterator[_Batch]:
        """Batches for the subscribers who need a case, streamed, one case per batch."""
        max_batch = max(1, self.sender.max_batch)
        buffers: dict[str, list[str]] = {}
        subscribers = self.engine.storage.subscribers(self.channel, batch=self.options.page_size)
        async for page in _chunks(subscribers, self.options.page_size):
            users = [s.user_id for s in page]
            history = await self.ledger.history(self.channel, users, case_id=case_id)
            for user_id in users:
                rows = history.get(user_id, [])
                if any(row.status == PENDING for row in rows):
                    continue  # in flight in an interrupted push: resolved at the end
                card = self._target(case_id, rows)
                if card is None:
                    self.counts.skipped += 1
                    continue
                buffer = buffers.setdefault(card.case_id, [])
                buffer.append(user_id)
                if len(buffer) >= max_batch:
                    yield _Batch(card, buffer, new_batch_key())
                    buffers[card.case_id] = []
            self.progress()
        for pending_case, buffer in buffers.items():
            if buffer:
                yield _Batch(self.engine.cards[pending_case], buffer, new_batch_key())

    def _target(self, case_id: str | None, rows: list[Delivery]) -> CaseCard | None:
        if case_id is not None:
            return None if rows else self.engine.cards[case_id]
        if self.round_id is not None and any(row.round == self.round_id for row in rows):
            return None
        had = {row.case_id for row in rows}
        return next((card for card in self.engine.order if card.case_id not in had), None)

    async def _recovered(self) -> AsyncIterator[_Batch]:
        """Batches an interrupted push left pending: re-sent, or recorded uncertain."""
        now = self.ledger.clock()
        for key in await self.ledger.pending_keys(self.channel):
            by_case: dict[str, list[str]] = {}
            attempts, oldest = 1, now
            for row in await self.ledger.pending_batch(self.channel, key):
                by_case.setdefault(row.case_id, []).append(row.user_id)
                attempts, oldest = max(attempts, row.attempts), min(oldest, row.updated_at)
            for case_id, users in by_case.items():
                card = self.engine.cards.get(case_id)
                fresh = now - oldest <= self.options.resend_window
                if card is not None and fresh and self.sender.idempotent:
                    self.counts.resumed += len(users)
                    yield _Batch(card, users, key, attempt=attempts, resumed=True)
                    continue
                reason = "interrupted" if card is not None else "case_removed"
                outcomes = [(user, UNCERTAIN, reason) for user in users]
                await self.ledger.settle(self.channel, case_id, key, outcomes, attempts)
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
        """Claim, send, record, and retry what is transient. When cancelled (Ctrl-C, or another
        worker failed), recipients certainly not sent to under their pending key are released,
        so that only the messages really in flight are left to the recovery."""
        case_id = batch.card.case_id
        key, attempt = batch.key, batch.attempt
        # What a cancellation may release: never a resumed batch (a send under its key may
        # have happened), nor an idempotent sender's RETRY (it may mean a timeout).
        unsent = [] if batch.resumed else batch.users
        try:
            users = batch.users
            if not batch.resumed:
                users = unsent = await self.ledger.claim(
                    self.channel, case_id, users, key, self.round_id
                )
                self.counts.skipped += len(batch.users) - len(users)
            while users:
                await self._wait_while_held()
                releasable, unsent = unsent, []
                try:
                    outcomes = await self._send(batch.card, users, key)
                except InfoGuardError:  # a setting is wrong; nothing of this call went out
                    await self.ledger.release(self.channel, case_id, releasable, key)
                    raise
                retry, retry_after = await self._record(case_id, key, attempt, outcomes)
                if not retry:
                    break
                unsent = [] if self.sender.idempotent else retry
                backoff = self.options.backoff_base * 2 ** (attempt - 1)
                await self.engine.sleep(max(min(backoff, self.options.backoff_max), retry_after))
                attempt += 1
                if len(retry) < len(users):
                    # A subset goes out as a new batch, under a new key recorded before it is sent.
                    key = f"{batch.key.split('.')[0]}.{attempt}"
                    await self.ledger.rekey(self.channel, case_id, retry, key, attempt)
                users = retry
        except asyncio.CancelledError:
            if unsent:
                await asyncio.shield(self.ledger.release(self.channel, case_id, unsent, key))
            raise
        self.progress()

    async def _record(
        self, case_id: str, key: str, attempt: int, outcomes: dict[str, tuple[str, str, float]]
    ) -> tuple[list[str], float]:
        """Record the final outcomes and defer long waits; returns the users to retry and the
        wait they asked for."""
        limit = self.options.max_retry_wait
        retrying = [u for u, (status, _, _) in outcomes.items() if status == Status.RETRY.value]
        later = [u for u in retrying if outcomes[u][2] > limit]
        retry = [u for u in retrying if outcomes[u][2] <= limit]
        final = [(u, s, d) for u, (s, d, _) in outcomes.items() if s != Status.RETRY.value]
        if retry and attempt >= self.options.max_attempts:
            final += [(u, FAILED, f"retries_exhausted:{outcomes[u][1]}"[:64]) for u in retry]
            retry = []
        await self.ledger.release(self.channel, case_id, later, key)
        self.counts.deferred += len(later)
        await self.ledger.settle(self.channel, case_id, key, final, attempt)
        await self._count(final)
        retry_after = max((outcomes[u][2] for u in retry), default=0.0)
        if retry_after > 0:
            self._held_until = max(self._held_until, time.monotonic() + retry_after)
        return retry, retry_after

    async def _send(
        self, card: CaseCard, users: list[str], key: str
    ) -> dict[str, tuple[str, str, float]]:
        """(status, detail, retry_after) per user; a raised error or a missing outcome is a retry
        for an idempotent sender and uncertain for another."""
        error = "no_result"
        try:
            results = await self.sender.send(card, users, batch_key=key)
        except InfoGuardError:
            raise
        except Exception as exc:
            error = type(exc).__name__
            _LOGGER.warning("push %s: sender raised %s on batch %s", self.channel, error, key)
            results = {}
        unknown = (Status.RETRY.value if self.sender.idempotent else UNCERTAIN, error, 0.0)
        outcomes: dict[str, tuple[str, str, float]] = {}
        for user in users:
            result = results.get(user)
            outcomes[user] = (
                unknown
                if result is None
                else (result.status.value, result.detail[:64], result.retry_after or 0.0)
            )
        return outcomes

    async def _count(self, final: list[tuple[str, str, str]]) -> None:
        for user_id, status, _ in final:
            self.counts.record(status)
            if status == UNREACHABLE:
                # Blocked, unfollowed or gone: they are unsubscribed and their data deleted.
                await self.engine.storage.forget_user(self.channel, user_id)

    async def _wait_while_held(self) -> None:
        wait = self._held_until - time.monotonic()
        if wait > 0:
            await self.engine.sleep(wait)


async def push_cases(
    storage: SqliteStorage,
    cards: Sequence[CaseCard],
    senders: Sequence[Sender],
    *,
    case_id: str | None = None,
    dry_run: bool = False,
    options: PushOptions = PushOptions(),
    on_progress: ProgressCallback | None = None,
) -> PushReport:
    """One push: `case_id` or each subscriber's next unseen case, on every sender's channel."""
    ledger = await Ledger.open(storage)
    engine = PushEngine(storage, ledger, cards, options=options, on_progress=on_progress)
    return await engine.push(senders, case_id=case_id, dry_run=dry_run)


async def _chunks(items: AsyncIterator[T], size: int) -> AsyncIterator[list[T]]:
    chunk: list[T] = []
    async for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


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
