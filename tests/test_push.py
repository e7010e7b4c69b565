"""The push engine and its ledger: exactly-once delivery per (case, channel, user) across re-runs
and crashes, retries, unreachable users, bounded concurrency, next-unseen-case rounds, and the
scheduled push. Senders are fakes that record what they really delivered."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from conftest import PUSH_BACKENDS, push_database, push_database_url

from bot.errors import InfoGuardError
from bot.models import CaseCard
from bot.push import PushEngine, PushOptions, PushReport
from bot.push_store import FAILED, SENT, UNCERTAIN
from bot.runtime import open_push_store
from bot.schedule import BUSY_RETRY_SECONDS, run_scheduled_push
from bot.sender import Claim, Result, Status
from bot.storage import Storage, open_storage

CHANNEL = "fake"
CARDS = [
    CaseCard("case_a", "案例甲", "摘要甲", "https://bot.example/cases/case_a"),
    CaseCard("case_b", "案例乙", "摘要乙", None),
    CaseCard("case_c", "案例丙", "摘要丙", None),
]
FAST = PushOptions(concurrency=4, backoff_base=0.001, backoff_max=0.01)


class Crash(BaseException):
    """Stands for the process dying in the middle of a send."""


class FakeSender:
    """Records each real delivery as (user, case); idempotent senders drop a repeated
    (batch key, user). `script` gives per-user outcomes to return before a plain SENT."""

    def __init__(
        self,
        *,
        max_batch: int = 1,
        idempotent: bool = True,
        latency: float = 0.0,
        script: dict[str, list[Result]] | None = None,
        crash_on_call: int | None = None,
        deliver_before_crash: bool = True,
    ) -> None:
        self.channel = CHANNEL
        self.min_batch = 1
        self.max_batch = max_batch
        self.idempotent = idempotent
        self.latency = latency
        self.script = script or {}
        self.crash_on_call = crash_on_call
        self.deliver_before_crash = deliver_before_crash
        self.delivered: list[tuple[str, str]] = []
        self.calls: list[tuple[str, tuple[str, ...], str]] = []
        self._keys: set[tuple[str, str]] = set()
        self.in_flight = 0
        self.max_in_flight = 0

    async def send(
        self, card: CaseCard, recipients: Sequence[str], *, batch_key: str, claim: Claim
    ) -> dict[str, Result]:
        recipients = await claim(recipients)
        self.calls.append((card.case_id, tuple(recipients), batch_key))
        number = len(self.calls)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.latency)
            results: dict[str, Result] = {}
            for user in recipients:
                planned = self.script.get(user)
                result = planned.pop(0) if planned else Result(Status.SENT)
                lost = self.crash_on_call == number and not self.deliver_before_crash
                if result.status is Status.SENT and not lost:
                    self._deliver(card, user, batch_key)
                results[user] = result
            if self.crash_on_call == number:
                raise Crash
            return results
        finally:
            self.in_flight -= 1

    def _deliver(self, card: CaseCard, user: str, batch_key: str) -> None:
        if self.idempotent and (batch_key, user) in self._keys:
            return
        self._keys.add((batch_key, user))
        self.delivered.append((user, card.case_id))


@pytest.fixture(params=PUSH_BACKENDS)
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    async with push_database(request.param, tmp_path) as storage:
        yield storage


async def subscribe(storage: Storage, count: int) -> list[str]:
    users = [f"u{n:03d}" for n in range(count)]
    for user in users:
        await storage.subscribe(CHANNEL, user)
    return users


async def push(
    storage: Storage,
    sender: FakeSender,
    *,
    case_id: str | None = None,
    options: PushOptions = FAST,
    new_round: bool = True,
    sleeps: list[float] | None = None,
) -> PushReport:
    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    store = await open_push_store(storage)
    engine = PushEngine(store, CARDS, options=options, sleep=sleep)
    return await engine.push([sender], case_id=case_id, new_round=new_round)


async def test_push_delivers_once_and_a_rerun_sends_nothing(storage: Storage) -> None:
    users = await subscribe(storage, 7)
    sender = FakeSender(max_batch=3)
    first = await push(storage, sender, case_id="case_b")
    assert sorted(sender.delivered) == [(u, "case_b") for u in users]
    # Batches go concurrently: their calls may come in any order.
    assert sorted(len(r) for _, r, _ in sender.calls) == [1, 3, 3]
    assert len({key for _, _, key in sender.calls}) == 3
    assert (first.totals.sent, first.totals.skipped, first.totals.total) == (7, 0, 7)
    again = await push(storage, sender, case_id="case_b")
    assert len(sender.delivered) == 7
    assert (again.totals.sent, again.totals.skipped) == (0, 7)
    assert await (await open_push_store(storage)).status(CHANNEL, users[0], "case_b") == SENT


async def test_unknown_case_is_refused(storage: Storage) -> None:
    with pytest.raises(InfoGuardError, match="no_such_case"):
        await push(storage, FakeSender(), case_id="no_such_case")


async def test_next_unseen_case_in_order_one_case_per_batch(storage: Storage) -> None:
    users = await subscribe(storage, 5)
    sender = FakeSender(max_batch=10)
    await push(storage, sender, case_id="case_a")  # everyone had case_a
    await storage.subscribe(CHANNEL, "newcomer")
    sender.delivered.clear()
    report = await push(storage, sender)
    assert dict(sender.delivered) == {**{u: "case_b" for u in users}, "newcomer": "case_a"}
    batches = {case: set(recipients) for case, recipients, _ in sender.calls[-2:]}
    assert batches == {"case_b": set(users), "case_a": {"newcomer"}}
    assert report.totals.sent == 6
    sender.delivered.clear()
    await push(storage, sender)  # the next round: one more case each
    assert dict(sender.delivered) == {**{u: "case_c" for u in users}, "newcomer": "case_b"}
    sender.delivered.clear()
    last = await push(storage, sender)
    assert dict(sender.delivered) == {"newcomer": "case_c"}
    assert last.totals.skipped == 5  # they have had every case


async def test_crash_mid_round_resumes_without_duplicates(storage: Storage) -> None:
    users = await subscribe(storage, 12)
    crashing = FakeSender(crash_on_call=5)
    with pytest.raises(Crash):
        await push(storage, crashing, options=PushOptions(concurrency=2))
    sender = FakeSender()
    sender._keys = crashing._keys  # the same platform: it remembers the batch keys it saw
    report = await push(storage, sender)  # re-running resumes the interrupted round
    delivered = crashing.delivered + sender.delivered
    assert Counter(delivered) == Counter({(u, "case_a"): 1 for u in users})
    assert report.totals.resumed >= 1
    assert report.totals.sent + report.totals.skipped == len(users)


async def test_crash_with_non_idempotent_sender_reports_uncertain(storage: Storage) -> None:
    users = await subscribe(storage, 10)
    crashing = FakeSender(idempotent=False, crash_on_call=4, deliver_before_crash=False)
    with pytest.raises(Crash):
        await push(storage, crashing, case_id="case_a", options=PushOptions(concurrency=3))
    sender = FakeSender(idempotent=False)
    report = await push(storage, sender, case_id="case_a")
    delivered = Counter(crashing.delivered + sender.delivered)
    assert max(delivered.values()) == 1  # nobody twice
    uncertain = report.totals.uncertain
    assert 1 <= uncertain <= 3  # at most the batches in flight
    assert len(delivered) + uncertain == len(users)
    statuses = [await (await open_push_store(storage)).status(CHANNEL, u, "case_a") for u in users]
    assert statuses.count(UNCERTAIN) == uncertain
    assert (await push(storage, sender, case_id="case_a")).totals.sent == 0


async def test_pending_batch_older_than_the_resend_window_is_not_resent(
    storage: Storage,
) -> None:
    users = await subscribe(storage, 3)
    ledger = await open_push_store(storage)
    ledger.clock = lambda: 1000.0
    await ledger.claim(CHANNEL, "case_a", users, "old-batch", None)
    sender = FakeSender()
    report = await push(storage, sender, options=PushOptions(resend_window=60.0))
    assert report.channels[CHANNEL].uncertain == 3
    assert sender.calls == []


async def test_unreachable_user_is_recorded_and_forgotten(storage: Storage) -> None:
    users = await subscribe(storage, 3)
    await storage.put_session(CHANNEL, users[1], {"options": ["#cases:1"]})
    sender = FakeSender(script={users[1]: [Result(Status.UNREACHABLE, detail="blocked")]})
    report = await push(storage, sender, case_id="case_a")
    assert report.totals.unreachable == 1
    assert report.totals.sent == 2
    assert not await storage.is_subscribed(CHANNEL, users[1])
    assert await storage.get_session(CHANNEL, users[1]) is None
    assert await (await open_push_store(storage)).status(CHANNEL, users[1], "case_a") is None
    assert (await push(storage, sender, case_id="case_a")).totals.total == 2


async def test_unreachable_left_by_a_crash_is_forgotten_next_time(storage: Storage) -> None:
    users = await subscribe(storage, 2)
    ledger = await open_push_store(storage)
    assert await ledger.claim(CHANNEL, "case_a", users[:1], "k1", None) == users[:1]
    await ledger.settle(CHANNEL, "case_a", "k1", [(users[0], "unreachable", "blocked")], 1)
    await push(storage, FakeSender(), case_id="case_b")
    assert not await storage.is_subscribed(CHANNEL, users[0])
    assert await storage.is_subscribed(CHANNEL, users[1])


async def test_retry_with_backoff_then_success(storage: Storage) -> None:
    users = await subscribe(storage, 3)
    flaky = users[0]
    busy = Result(Status.RETRY, retry_after=0.0005, detail="-1")
    sender = FakeSender(max_batch=3, script={flaky: [busy, busy]})
    sleeps: list[float] = []
    options = PushOptions(concurrency=1, backoff_base=0.25, backoff_max=0.4)
    report = await push(storage, sender, case_id="case_a", options=options, sleeps=sleeps)
    assert sorted(sender.delivered) == [(u, "case_a") for u in users]
    assert report.totals.sent == 3
    assert [s for s in sleeps if s >= 0.1] == [0.25, 0.4]  # exponential, capped
    first_key = sender.calls[0][2]
    # A subset goes out under a new key; the same recipients again under the same key.
    assert [(r, k) for _, r, k in sender.calls[1:]] == [
        ((flaky,), f"{first_key}.2"),
        ((flaky,), f"{first_key}.2"),
    ]


async def test_retry_after_is_honoured_beyond_the_backoff(storage: Storage) -> None:
    users = await subscribe(storage, 1)
    sender = FakeSender(script={users[0]: [Result(Status.RETRY, retry_after=30.0)]})
    sleeps: list[float] = []
    options = PushOptions(concurrency=1, backoff_base=1.0)
    await push(storage, sender, case_id="case_a", options=options, sleeps=sleeps)
    assert sleeps[0] == 30.0
    assert sender.calls[0][2] == sender.calls[1][2]  # the whole batch again: same key
    assert sender.delivered == [(users[0], "case_a")]


async def test_a_long_retry_after_defers_to_the_next_push(storage: Storage) -> None:
    users = await subscribe(storage, 3)
    quota = Result(Status.RETRY, retry_after=6 * 3600.0, detail="45009")
    sender = FakeSender(script={users[2]: [quota]})
    sleeps: list[float] = []
    report = await push(storage, sender, case_id="case_a", sleeps=sleeps)
    assert (report.totals.sent, report.totals.deferred) == (2, 1)
    assert sleeps == []  # neither this worker nor the others waited six hours
    assert await (await open_push_store(storage)).status(CHANNEL, users[2], "case_a") is None
    again = await push(storage, sender, case_id="case_a")
    assert (again.totals.sent, again.totals.skipped) == (1, 2)
    assert sorted(sender.delivered) == [(u, "case_a") for u in users]


async def test_a_configuration_error_stops_the_push_and_releases_the_batch(
    storage: Storage,
) -> None:
    users = await subscribe(storage, 4)

    class Misconfigured(FakeSender):
        async def send(
            self, card: CaseCard, recipients: Sequence[str], *, batch_key: str, claim: Claim
        ) -> dict[str, Result]:
            raise InfoGuardError("the token was rejected")

    with pytest.raises(InfoGuardError, match="token"):
        await push(storage, Misconfigured(idempotent=False), case_id="case_a")
    sender = FakeSender(idempotent=False)
    report = await push(storage, sender, case_id="case_a")
    assert (report.totals.sent, report.totals.uncertain) == (4, 0)
    assert sorted(sender.delivered) == [(u, "case_a") for u in users]


@pytest.mark.parametrize("idempotent", [False, True])
async def test_a_cancelled_push_releases_what_it_had_not_sent(
    storage: Storage, idempotent: bool
) -> None:
    users = await subscribe(storage, 1)
    sender = FakeSender(idempotent=idempotent, script={users[0]: [Result(Status.RETRY)]})
    backing_off = asyncio.Event()

    async def endless_backoff(seconds: float) -> None:
        backing_off.set()
        await asyncio.Event().wait()

    ledger = await open_push_store(storage)
    engine = PushEngine(ledger, CARDS, options=FAST, sleep=endless_backoff)
    task = asyncio.create_task(engine.push([sender], case_id="case_a"))
    await backing_off.wait()
    task.cancel()  # Ctrl-C while waiting to retry
    with pytest.raises(asyncio.CancelledError):
        await task
    report = await push(storage, sender, case_id="case_a")
    assert sender.delivered == [(users[0], "case_a")]
    assert (report.totals.sent, report.totals.uncertain) == (1, 0)
    # A non-idempotent RETRY means "not delivered": released, then sent afresh. An idempotent
    # sender's may hide a timeout: kept pending and re-sent under the same key.
    assert report.totals.resumed == (1 if idempotent else 0)
    assert len({key for _, _, key in sender.calls}) == (1 if idempotent else 2)


async def test_failed_and_exhausted_retries_are_recorded_not_resent(
    storage: Storage,
) -> None:
    users = await subscribe(storage, 3)
    script = {
        users[0]: [Result(Status.FAILED, detail="45002")],
        users[1]: [Result(Status.RETRY, detail="45011")] * 5,
    }
    sender = FakeSender(script=script)
    options = PushOptions(max_attempts=3, backoff_base=0.0)
    report = await push(storage, sender, case_id="case_a", options=options)
    assert (report.totals.sent, report.totals.failed) == (1, 2)
    ledger = await open_push_store(storage)
    assert await ledger.status(CHANNEL, users[0], "case_a") == FAILED
    assert await ledger.status(CHANNEL, users[1], "case_a") == FAILED
    assert sum(1 for _, r, _ in sender.calls if r == (users[1],)) == 3
    again = await push(storage, sender, case_id="case_a")
    assert (again.totals.sent, again.totals.skipped) == (0, 3)


async def test_sender_error_is_retried_when_idempotent(storage: Storage) -> None:
    users = await subscribe(storage, 2)

    class Broken(FakeSender):
        async def send(
            self, card: CaseCard, recipients: Sequence[str], *, batch_key: str, claim: Claim
        ) -> dict[str, Result]:
            if not self.calls:
                self.calls.append((card.case_id, tuple(recipients), batch_key))
                raise ConnectionError("reset")
            return await super().send(card, recipients, batch_key=batch_key, claim=claim)

    sender = Broken(max_batch=2)
    report = await push(storage, sender, case_id="case_a")
    assert report.totals.sent == 2
    assert sorted(sender.delivered) == [(u, "case_a") for u in users]


async def test_concurrency_is_bounded(storage: Storage) -> None:
    await subscribe(storage, 40)
    sender = FakeSender(latency=0.02)
    await push(storage, sender, case_id="case_a", options=PushOptions(concurrency=4))
    # Bounded, and concurrent (on a server database each claim is a round trip of its own,
    # so a loaded machine may not overlap all four every time).
    assert 1 < sender.max_in_flight <= 4
    assert len(sender.delivered) == 40


async def test_unsubscribe_deletes_ledger_rows(storage: Storage) -> None:
    assert await storage.forget_user(CHANNEL, "nobody") is False  # works before any push
    users = await subscribe(storage, 2)
    await push(storage, FakeSender(), case_id="case_a")
    ledger = await open_push_store(storage)
    assert await ledger.status(CHANNEL, users[0], "case_a") == SENT
    assert await storage.forget_user(CHANNEL, users[0]) is True
    assert await ledger.status(CHANNEL, users[0], "case_a") is None
    assert await ledger.status(CHANNEL, users[1], "case_a") == SENT


async def test_dry_run_counts_and_writes_nothing(storage: Storage) -> None:
    await subscribe(storage, 4)
    sender = FakeSender()
    ledger = await open_push_store(storage)
    engine = PushEngine(ledger, CARDS)
    report = await engine.push([sender], dry_run=True)
    assert (report.totals.sent, report.dry_run) == (4, True)
    assert sender.calls == []
    assert await ledger.current_round(CHANNEL) is None
    assert (await push(storage, sender)).totals.sent == 4


async def test_progress_reaches_the_total(storage: Storage) -> None:
    await subscribe(storage, 9)
    seen: list[tuple[int, int]] = []
    ledger = await open_push_store(storage)
    engine = PushEngine(
        ledger,
        CARDS,
        options=PushOptions(concurrency=2, page_size=4),
        on_progress=lambda r: seen.append((r.totals.done, r.totals.total)),
    )
    await engine.push([FakeSender(max_batch=2)], case_id="case_a")
    assert len(seen) > 3
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert seen[-1] == (9, 9)


async def test_scheduled_push_once_per_period_across_processes(storage: Storage) -> None:
    users = await subscribe(storage, 3)
    day = 86400.0
    now = [10_000.0]
    waits: list[float] = []

    async def run_scheduler(sender: FakeSender, *, until: float) -> None:
        async def sleep(seconds: float) -> None:  # a fake clock: sleeping moves it on
            waits.append(seconds)
            now[0] += seconds
            if now[0] >= until:
                raise asyncio.CancelledError

        with pytest.raises(asyncio.CancelledError):
            store = await open_push_store(storage, clock=lambda: now[0])
            await run_scheduled_push(store, CARDS, [sender], interval_days=1.0, sleep=sleep)

    first = FakeSender()
    await run_scheduler(first, until=now[0] + 1.5 * day)  # pushes at day 0 and day 1
    assert sorted(first.delivered) == sorted(
        [(u, "case_a") for u in users] + [(u, "case_b") for u in users]
    )
    assert 0 < max(waits) <= 3600.0  # wakes hourly to notice other processes
    other = FakeSender()  # another process, the same period: nothing to push
    await run_scheduler(other, until=now[0] + 0.4 * day)
    assert other.delivered == []
    await run_scheduler(other, until=now[0] + 0.2 * day)  # day 2 came: the next case
    assert sorted(other.delivered) == [(u, "case_c") for u in users]


@pytest.mark.parametrize("backend", PUSH_BACKENDS)
async def test_a_second_scheduler_waits_while_another_process_pushes(
    tmp_path: Path, backend: str
) -> None:
    async with push_database_url(backend, tmp_path) as database:
        mine, theirs = await open_storage(database), await open_storage(database)
        try:
            await subscribe(mine, 2)
            owner = await open_push_store(mine)
            assert await owner.take_lease("elsewhere:1/9/abcd", 600.0)  # a live process elsewhere
            waits: list[float] = []

            async def sleep(seconds: float) -> None:
                waits.append(seconds)
                raise asyncio.CancelledError

            sender = FakeSender()
            with pytest.raises(asyncio.CancelledError):
                await run_scheduled_push(
                    await open_push_store(theirs), CARDS, [sender], interval_days=1.0, sleep=sleep
                )
            assert sender.calls == [] and waits == [BUSY_RETRY_SECONDS]
            # It did not take the period either: the owner's push of it is not lost.
            assert await owner.claim_period("cases", 86400.0)
        finally:
            await mine.close()
            await theirs.close()
