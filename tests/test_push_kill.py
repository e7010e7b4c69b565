"""`infoguard push` killed with SIGKILL and run again, over real HTTP against the fake WeChat and
Telegram APIs, counted at the fakes: what each subscriber really received."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PUSH_BACKENDS, push_database_url
from push_world import PushWorld, summary_line, tally

from bot.config import Settings
from bot.push import push_order
from bot.runtime import load

CARDS = push_order(load(Settings()), Settings().case_url)
ORDER = [card.case_id for card in CARDS]
TITLES = {card.title: card.case_id for card in CARDS}
MASS = "message/mass/send"


@pytest.fixture
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[PushWorld]:
    """On SQLite, or (parametrized indirectly with "postgres") on a PostgreSQL schema."""
    backend = getattr(request, "param", "sqlite")
    async with push_database_url(backend, tmp_path) as url:
        built = PushWorld(
            tmp_path, telegram_rate=10.0, database_url="" if backend == "sqlite" else url
        )
        await built.start()
        yield built
        await built.stop()


def counted(line: str, name: str) -> int:
    """A count from a summary line such as "telegram: sent 3, ..., uncertain 1"."""
    for part in line.split(":", 1)[1].split(","):
        words = part.split()
        if words[:-1] and " ".join(words[:-1]) == name:
            return int(words[-1])
    return 0


async def test_killed_while_telegram_messages_wait_and_rerun_finishes_the_round(
    world: PushWorld,
) -> None:
    wechat = ["oW1", "oW2", "oW3", "oW4"]
    chats = [str(9000 + n) for n in range(20)]
    world.seed("wechat", wechat, {"oW1": ORDER[0], "oW2": ORDER[0]})
    world.seed("telegram", chats)

    async def kill_at_the_fifth(call: Any) -> None:
        if call.method == "sendMessage" and len(world.telegram.calls_to("sendMessage")) == 5:
            world.kill_now.set()
            await asyncio.sleep(0.5)  # answered (if ever) after the kill

    world.telegram.on_call = kill_at_the_fifth
    first = await world.push(kill=True)
    assert first.killed
    world.telegram.on_call = None
    again = await world.push()
    assert again.returncode == 0, again.stderr
    # WeChat had finished its part: the re-run finished the round, it did not open a new one.
    expected = {"oW1": ORDER[1], "oW2": ORDER[1], "oW3": ORDER[0], "oW4": ORDER[0]}
    wechat_tally = tally(world.wechat.received, expected, TITLES)
    assert (wechat_tally.reached, wechat_tally.other_case) == (4, 0)
    # Telegram: 15 messages were queued behind the 10/s limiter at the kill; only what was on
    # the wire may be uncertain, and at most the kill's one may be missing or doubled.
    received = {str(c): t for c, t in world.telegram.received.items()}
    telegram_tally = tally(received, dict.fromkeys(chats, ORDER[0]), TITLES)
    assert telegram_tally.missed + telegram_tally.twice <= 1
    assert telegram_tally.other_case == 0
    assert counted(summary_line(again.stdout, "telegram"), "uncertain") <= 2


@pytest.mark.parametrize("world", PUSH_BACKENDS, indirect=True)
async def test_killed_during_a_mass_send_resends_it_under_its_clientmsgid(
    world: PushWorld,
) -> None:
    users = ["oA", "oB", "oC"]
    world.seed("wechat", users)

    async def kill_during_the_send(call: Any) -> None:
        if call.path == MASS and not world.kill_now.is_set():
            world.kill_now.set()
            await asyncio.sleep(0.5)  # WeChat sends the batch; its answer never arrives

    world.wechat.on_call = kill_during_the_send
    assert (await world.push("--channel", "wechat", kill=True)).killed
    world.wechat.on_call = None
    again = await world.push("--channel", "wechat")
    assert again.returncode == 0, again.stderr
    assert "sent 3" in summary_line(again.stdout, "wechat")
    first, second = world.wechat.calls_to(MASS)
    assert first.body["clientmsgid"] == second.body["clientmsgid"]  # WeChat dropped the repeat
    assert {u: len(world.wechat.received[u]) for u in users} == dict.fromkeys(users, 1)
    assert world.wechat.calls_to("message/custom/send") == []
