"""The push engine with the real WeChat and Telegram senders, over real HTTP against the fake
APIs on 127.0.0.1, counted at the fakes: a lone WeChat recipient, quota refusals (45028,
45009), a 45065 the bot did not cause, and the push lease between two processes' worth of
engines on one database file."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PUSH_BACKENDS, push_database, push_database_url
from fake_telegram_api import TOKEN, FakeTelegramAPI
from fake_wechat_api import APP_ID, SECRET, FakeWeChatAPI

from bot.channels.telegram_api import TelegramSender, make_bot
from bot.channels.wechat import build_sender as build_wechat_sender
from bot.config import Settings
from bot.models import CaseCard
from bot.push import PushEngine, PushOptions, PushReport, lease_owner
from bot.push_store import PENDING, SENT, LeaseLost
from bot.runtime import open_push_store
from bot.storage import Storage, open_storage

CARDS = [
    CaseCard("case_a", "案例甲", "摘要甲", "https://bot.example/cases/case_a"),
    CaseCard("case_b", "案例乙", "摘要乙", None),
]
MASS = "message/mass/send"
SEND = "message/custom/send"
FAST = PushOptions(concurrency=4, backoff_base=0.001, backoff_max=0.01)


@pytest.fixture
async def wechat() -> AsyncIterator[FakeWeChatAPI]:
    server = FakeWeChatAPI()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegramAPI]:
    server = FakeTelegramAPI()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(params=PUSH_BACKENDS)
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    async with push_database(request.param, tmp_path) as opened:
        yield opened


async def push_wechat(
    storage: Storage, fake: FakeWeChatAPI, *, case_id: str | None = None
) -> PushReport:
    settings = Settings(wechat_app_id=APP_ID, wechat_secret=SECRET, wechat_api_base=fake.base_url)
    sender = build_wechat_sender(settings, storage)
    assert sender is not None
    store = await open_push_store(storage)
    return await PushEngine(store, CARDS, options=FAST).push([sender], case_id=case_id)


def cases(fake: FakeWeChatAPI, user: str) -> list[str]:
    return ["case_a" if "案例甲" in t else "case_b" for t in fake.received.get(user, [])]


async def test_a_lone_wechat_recipient_waits_for_a_partner_never_customer_service(
    storage: Storage, wechat: FakeWeChatAPI
) -> None:
    for user in ("oA", "oB", "oC"):
        await storage.subscribe("wechat", user)
    store = await open_push_store(storage)
    await store.claim("wechat", "case_a", ["oA"], "seed", None)  # oA had case_a
    await store.settle("wechat", "case_a", "seed", [("oA", SENT, "")], 1)
    first = await push_wechat(storage, wechat)
    counts = first.channels["wechat"]
    assert (counts.sent, counts.held) == (2, 1)
    assert cases(wechat, "oB") == cases(wechat, "oC") == ["case_a"]
    assert cases(wechat, "oA") == []  # alone on case_b: held, not sent another way
    assert wechat.calls_to(SEND) == []
    # A newcomer who also had case_a: the next push pairs them on case_b.
    await storage.subscribe("wechat", "oD")
    await store.claim("wechat", "case_a", ["oD"], "seed2", None)
    await store.settle("wechat", "case_a", "seed2", [("oD", SENT, "")], 1)
    second = await push_wechat(storage, wechat)
    assert second.channels["wechat"].held == 0
    assert cases(wechat, "oA") == cases(wechat, "oD") == ["case_b"]
    assert {"oA", "oD"} <= set(wechat.calls_to(MASS)[-1].body["touser"])
    assert wechat.calls_to(SEND) == []


async def test_a_case_s_last_batch_borrows_so_none_is_alone(
    storage: Storage, wechat: FakeWeChatAPI
) -> None:
    users = [f"o{n:02d}" for n in range(5)]
    for user in users:
        await storage.subscribe("wechat", user)
    settings = Settings(wechat_app_id=APP_ID, wechat_secret=SECRET, wechat_api_base=wechat.base_url)
    sender = build_wechat_sender(settings, storage)
    assert sender is not None
    sender.max_batch = 4  # 5 recipients: 3 + 2, not 4 + 1
    store = await open_push_store(storage)
    report = await PushEngine(store, CARDS, options=FAST).push([sender], case_id="case_a")
    assert report.totals.sent == 5
    assert sorted(len(c.body["touser"]) for c in wechat.calls_to(MASS)) == [2, 3]
    assert all(len(wechat.received[u]) == 1 for u in users)


@pytest.mark.parametrize("errcode", [45028, 45009])
async def test_no_mass_send_quota_defers_to_the_next_push(
    storage: Storage, wechat: FakeWeChatAPI, errcode: int
) -> None:
    for user in ("oA", "oB"):
        await storage.subscribe("wechat", user)
    if errcode == 45028:
        wechat.mass_quota = 0
    else:
        from fake_wechat_api import Fault

        wechat.fail(MASS, Fault(errcode=45009))
    first = await push_wechat(storage, wechat, case_id="case_a")
    assert (first.totals.sent, first.totals.deferred, first.totals.failed) == (0, 2, 0)
    assert wechat.received == {}
    wechat.mass_quota = None  # the quota came back (next month, or tomorrow)
    second = await push_wechat(storage, wechat, case_id="case_a")
    assert second.totals.sent == 2
    assert cases(wechat, "oA") == cases(wechat, "oB") == ["case_a"]


async def test_a_45065_the_bot_did_not_cause_is_not_counted_as_sent(
    storage: Storage, wechat: FakeWeChatAPI
) -> None:
    for user in ("oA", "oB"):
        await storage.subscribe("wechat", user)
    wechat.foreign_clientmsgids = 1  # the next new clientmsgid was used by someone else
    first = await push_wechat(storage, wechat, case_id="case_a")
    assert (first.totals.sent, first.totals.deferred) == (0, 2)
    assert wechat.received == {}
    second = await push_wechat(storage, wechat, case_id="case_a")
    assert second.totals.sent == 2
    assert cases(wechat, "oA") == ["case_a"]


# -- the push lease --------------------------------------------------------------------------


def telegram_sender(fake: FakeTelegramAPI) -> TelegramSender:
    settings = Settings(telegram_token=TOKEN, telegram_api_base=fake.base_url)
    return TelegramSender(make_bot(settings), messages_per_second=50.0)


@pytest.mark.parametrize("backend", PUSH_BACKENDS)
async def test_a_second_process_neither_pushes_nor_touches_the_owner_s_rows(
    tmp_path: Path, telegram: FakeTelegramAPI, backend: str
) -> None:
    async with push_database_url(backend, tmp_path) as database:
        mine, theirs = await open_storage(database), await open_storage(database)
        await second_process(mine, theirs, telegram)


async def second_process(mine: Storage, theirs: Storage, telegram: FakeTelegramAPI) -> None:
    try:
        chats = [str(500 + n) for n in range(6)]
        for chat in chats:
            await mine.subscribe("telegram", chat)
        owner_store = await open_push_store(mine)
        other_store = await open_push_store(theirs)
        in_flight, release = asyncio.Event(), asyncio.Event()

        async def hold_the_wire(call: Any) -> None:
            if call.method == "sendMessage":
                in_flight.set()
                await release.wait()

        telegram.on_call = hold_the_wire
        owner_sender, other_sender = telegram_sender(telegram), telegram_sender(telegram)
        owner = asyncio.create_task(
            PushEngine(owner_store, CARDS, options=FAST).push([owner_sender], case_id="case_a")
        )
        await in_flight.wait()
        await asyncio.sleep(0.2)
        pending = await other_store.pending("telegram")
        # The owner claimed only what is on the wire (4 workers), not the 6 chats.
        assert 1 <= len(pending) <= 4
        other = await PushEngine(other_store, CARDS, options=FAST).push(
            [other_sender], case_id="case_a"
        )
        assert other.busy is not None and other.totals.sent == 0
        assert set(pending) <= set(await other_store.pending("telegram"))  # untouched
        release.set()
        report = await owner
        assert report.totals.sent == 6 and report.busy is None
        assert {c: len(t) for c, t in telegram.received.items()} == {int(c): 1 for c in chats}
        await owner_sender.aclose()
        await other_sender.aclose()
    finally:
        await mine.close()
        await theirs.close()


def dead_owner() -> str:
    """The owner id a process of this machine had, that has exited since."""
    code = "from bot.push import lease_owner; print(lease_owner())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


async def test_the_lease_of_a_dead_owner_is_taken_over(storage: Storage) -> None:
    now = [1000.0]
    store = await open_push_store(storage, clock=lambda: now[0])
    assert await store.take_lease(dead_owner(), 60.0)
    # On this machine and gone: taken over at once, long before the lease expires.
    report = await PushEngine(store, CARDS, options=FAST).push([], case_id="case_a")
    assert report.busy is None
    # Another machine's process: its lease is respected until it expires.
    assert await store.take_lease("elsewhere:1/42/abcd", 60.0)
    assert (await PushEngine(store, CARDS).push([], case_id="case_a")).busy == "elsewhere:1/42/abcd"
    now[0] += 61.0
    assert (await PushEngine(store, CARDS).push([], case_id="case_a")).busy is None
    assert os.getpid() != 0


async def test_a_process_that_lost_the_lease_writes_nothing_more(storage: Storage) -> None:
    await storage.subscribe("telegram", "1")
    now = [1000.0]
    store = await open_push_store(storage, clock=lambda: now[0])
    me = lease_owner()
    assert await store.take_lease(me, 60.0)
    # It stalled past its lease and another process took over.
    now[0] += 61.0
    other = await open_push_store(storage, clock=lambda: now[0])
    assert await other.take_lease("elsewhere:1/7/ffff", 60.0)
    with pytest.raises(LeaseLost):
        await store.claim("telegram", "case_a", ["1"], "k", None)
    assert await store.status("telegram", "1", "case_a") is None
    assert PENDING == "pending"
