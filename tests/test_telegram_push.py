"""The Telegram push Sender against the fake Bot API: the message, the error model (403, 429,
400, network) and the pacing (one message per second per chat, about 25 per second overall),
checked by the arrival times the fake server records."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from claims import Granted
from fake_telegram_api import TOKEN, FakeTelegramAPI, bad_request, buttons, flood, forbidden
from telegram import Bot
from telegram.error import TimedOut
from telegram.ext import ExtBot
from telegram.request import HTTPXRequest

from bot.channels.telegram import build_sender
from bot.channels.telegram_api import (
    CHANNEL,
    TelegramSender,
    Throttle,
    ThrottledRateLimiter,
    api_urls,
    make_bot,
)
from bot.config import Settings
from bot.models import CaseCard
from bot.sender import Result, Sender, Status

os.environ.setdefault("PTB_TIMEDELTA", "true")
CARD = CaseCard(
    "tg_case",
    "营业员卖验证码",
    "营业员把客户的验证码发给别人注册账号。",
    "https://bot.example.org/cases/tg_case",
)
# Arrival times are taken after the HTTP round trip; allow for scheduler jitter, never less.
SLACK = 0.1


@pytest.fixture
async def api() -> AsyncIterator[FakeTelegramAPI]:
    server = FakeTelegramAPI()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def sender(api: FakeTelegramAPI) -> AsyncIterator[TelegramSender]:
    settings = Settings(telegram_token=TOKEN, telegram_api_base=api.base_url)
    built = build_sender(settings)
    assert built is not None
    yield built
    await built.aclose()


async def send(sender: TelegramSender, chat_id: int, card: CaseCard = CARD) -> Result:
    key = f"{card.case_id}:{chat_id}"
    results = await sender.send(card, [str(chat_id)], batch_key=key, claim=Granted())
    return results[str(chat_id)]


def test_it_is_a_per_chat_sender_and_needs_a_token(sender: TelegramSender) -> None:
    protocol: Sender = sender  # checked by type checkers; Sender is not runtime_checkable
    assert (protocol.channel, protocol.max_batch, protocol.idempotent) == (CHANNEL, 1, False)
    assert build_sender(Settings()) is None


async def test_a_card_goes_out_with_its_page_read_here_and_unsubscribe(
    api: FakeTelegramAPI, sender: TelegramSender
) -> None:
    assert await send(sender, 501) == Result(Status.SENT)
    (message,) = api.sent(501)
    assert CARD.title in message["text"] and CARD.summary in message["text"]
    targets = [b.get("url") or b.get("callback_data") for b in buttons(message)]
    assert targets == [CARD.url, "#case:tg_case", "#unsubscribe"]


async def test_a_card_without_https_page_carries_its_link_in_the_text(
    api: FakeTelegramAPI, sender: TelegramSender
) -> None:
    local = CaseCard("tg_case", "标题", "摘要", "http://127.0.0.1:8080/cases/tg_case")
    await send(sender, 502, local)
    (message,) = api.sent(502)
    assert local.url is not None and local.url in message["text"]
    assert all("url" not in b for b in buttons(message))


async def test_errors_map_to_results_and_retry_after_is_honoured(
    api: FakeTelegramAPI, sender: TelegramSender
) -> None:
    api.failures = {602: [forbidden()], 603: [flood(1)], 604: [bad_request()]}
    results = await asyncio.gather(*(send(sender, chat) for chat in (601, 602, 603, 604)))
    assert results[:2] == [Result(Status.SENT), Result(Status.UNREACHABLE, detail="forbidden")]
    assert results[2] == Result(Status.RETRY, 1.0, "retry_after")
    assert results[3].status is Status.FAILED
    # The push engine may retry at once: the sender itself holds everything back until the
    # flood wait is over, for the throttled chat and (Telegram's limit being per bot) others.
    assert await send(sender, 603) == Result(Status.SENT)
    assert await send(sender, 605) == Result(Status.SENT)
    flooded, retried = (c.at for c in api.calls_to("sendMessage", 603))
    (other,) = (c.at for c in api.calls_to("sendMessage", 605))
    assert retried - flooded >= 1.0 - SLACK
    assert other - flooded >= 1.0 - SLACK


async def test_one_message_per_second_per_chat_without_holding_up_other_chats(
    api: FakeTelegramAPI, sender: TelegramSender
) -> None:
    same_chat = [send(sender, 701, CARD), send(sender, 701, CARD)]
    others = [send(sender, chat) for chat in range(702, 710)]
    results = await asyncio.gather(*same_chat, *others)
    assert all(r.status is Status.SENT for r in results)
    first, second = (c.at for c in api.calls_to("sendMessage", 701))
    assert second - first >= 1.0 - SLACK
    # The other chats went out in between, not after the second message to chat 701.
    assert all(c.at < second for chat in range(702, 710) for c in api.calls_to("sendMessage", chat))


async def test_about_25_messages_per_second_overall(
    api: FakeTelegramAPI, sender: TelegramSender
) -> None:
    await send(sender, 800)  # warm up: getMe and the connection
    results = await asyncio.gather(*(send(sender, chat) for chat in range(801, 831)))
    assert all(r.status is Status.SENT for r in results)
    times = sorted(
        c.at for c in api.calls if c.method == "sendMessage" and c.params["chat_id"] > 800
    )
    assert len(times) == 30
    # 30 messages at 25/s need at least 29 intervals of 40 ms.
    assert times[-1] - times[0] >= 29 / 25 - SLACK


async def test_unsent_is_retried_maybe_sent_is_raised_bad_ids_fail(api: FakeTelegramAPI) -> None:
    # Connection refused: nothing left, so a retry cannot duplicate anything.
    unreachable = Settings(telegram_token=TOKEN, telegram_api_base="http://127.0.0.1:9")
    sender = TelegramSender(make_bot(unreachable))
    result = await send(sender, 901)
    assert result == Result(Status.RETRY, detail="connecterror")
    results = await sender.send(CARD, ["not-a-chat"], batch_key="x", claim=Granted())
    assert results == {"not-a-chat": Result(Status.FAILED, detail="bad_chat_id")}
    await sender.aclose()
    # Telegram got the message but the answer timed out: it may be delivered. The sender
    # raises, so the push engine records the delivery as uncertain rather than resending.
    urls = api_urls(Settings(telegram_api_base=api.base_url))
    slow = TelegramSender(Bot(TOKEN, request=HTTPXRequest(read_timeout=0.2), **urls))
    api.delays[902] = 1.0
    with pytest.raises(TimedOut):
        await send(slow, 902)
    assert len(api.sent(902)) == 1
    await slow.aclose()


async def test_a_rejected_token_sends_nothing_and_says_so(
    api: FakeTelegramAPI, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = Settings(telegram_token="42:wrong", telegram_api_base=api.base_url)
    sender = TelegramSender(make_bot(wrong))
    assert await send(sender, 903) == Result(Status.RETRY, detail="invalid_token")
    assert "Telegram rejected TELEGRAM_TOKEN" in caplog.text
    assert api.calls == []
    await sender.aclose()


async def test_a_flood_wait_holds_every_send_of_the_bot_even_those_queued(
    api: FakeTelegramAPI,
) -> None:
    settings = Settings(telegram_token=TOKEN, telegram_api_base=api.base_url)
    throttle = Throttle(50.0)
    sender = TelegramSender(make_bot(settings), throttle=throttle)
    replies = ExtBot(TOKEN, rate_limiter=ThrottledRateLimiter(throttle), **api_urls(settings))
    await replies.initialize()
    await send(sender, 1000)  # warm up: getMe and the connection
    api.failures = {1001: [flood(1)]}
    # The throttled chat goes first; nine more pushes already hold their slots behind it.
    pushes = [send(sender, chat) for chat in range(1001, 1011)]
    results = await asyncio.gather(*pushes, replies.send_message(1020, "回复"))
    assert results[0] == Result(Status.RETRY, 1.0, "retry_after")
    (flooded,) = (c.at for c in api.calls_to("sendMessage", 1001))
    others = [c.at for c in api.calls_to("sendMessage") if c.params["chat_id"] > 1001]
    assert len(others) == 10
    # At most the one already on its way when the 429 came back; none other inside the wait.
    inside = [at for at in others if flooded < at < flooded + 1.0 - SLACK]
    assert len(inside) <= 1
    await sender.aclose()
    await replies.shutdown()


async def test_replies_keep_to_the_bot_s_pace_when_many_chats_write_at_once(
    api: FakeTelegramAPI,
) -> None:
    settings = Settings(telegram_token=TOKEN, telegram_api_base=api.base_url)
    throttle = Throttle(25.0)
    replies = ExtBot(TOKEN, rate_limiter=ThrottledRateLimiter(throttle), **api_urls(settings))
    await replies.initialize()
    await replies.send_message(1100, "热身")
    await asyncio.gather(*(replies.send_message(chat, "回复") for chat in range(1101, 1141)))
    times = sorted(c.at for c in api.calls_to("sendMessage") if c.params["chat_id"] > 1100)
    assert len(times) == 40
    assert times[-1] - times[0] >= 39 / 25 - SLACK  # 25 a second, not a burst
    assert max(sum(1 for t in times if start <= t < start + 1.0) for start in times) <= 30
    await replies.shutdown()
