"""Bounded fuzzing over real HTTP on 127.0.0.1: a few hundred broken WeChat safe-mode pushes
(mutated inner XML encrypted and signed correctly, bit-flipped or junk ciphertext re-signed,
garbled queries) and Telegram webhook bodies. Not one may get a 5xx or crash a handler,
and a genuine message is answered afterwards. benchmarks/fuzz_benchmark.py runs thousands
against `infoguard serve`."""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from fake_telegram_api import FakeTelegramAPI
from fake_wechat_api import APP_ID
from fuzz_inputs import TelegramFuzzer, WeChatFuzzer
from test_telegram import SECRET, api, engine, fail_on_handler_errors, make_settings
from test_wechat_webhook import ACCOUNT, AES_KEY, TOKEN, BotFactory, fields_of, start_bot

from bot.channels import telegram as tg
from bot.engine import Engine
from bot.server import build_app

__all__ = ["api", "engine", "start_bot"]  # fixtures, imported for use here
WECHAT_CASES = 400
TELEGRAM_CASES = 300
SEED = 20261202


def _crashes(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records of a request or an answer that failed inside our code or aiohttp."""
    return [
        r.getMessage().splitlines()[0]
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith(("aiohttp", "bot", "telegram"))
    ]


async def test_fuzzed_safe_mode_pushes_never_get_a_5xx(
    start_bot: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await start_bot(wechat_aes_key=AES_KEY, wechat_reply_budget=0.5)
    fuzz = WeChatFuzzer(SEED, TOKEN, AES_KEY, APP_ID, ACCOUNT)
    statuses: Counter[tuple[str, int]] = Counter()
    with caplog.at_level(logging.WARNING):
        for label, query, body in fuzz.cases(WECHAT_CASES):
            status, _ = await bot.post(body, query)
            statuses[label, status] += 1
            assert status < 500, (label, query, body)
        await bot.webhook.wait_idle()
    assert sum(statuses.values()) >= WECHAT_CASES * 0.95
    # The fuzz reached every layer: some pushes were refused, some were answered.
    assert any(s == 200 for _, s in statuses) and any(400 <= s < 500 for _, s in statuses)
    assert _crashes(caplog) == []
    query, body = fuzz.genuine("验证码能告诉别人吗", "oGenuineUser")
    status, text = await bot.post(body, query)
    assert status == 200
    assert bot.crypto is not None
    assert "验证码只给你自己用" in fields_of(bot.open_reply(text, bot.crypto))["Content"]


async def test_fuzzed_telegram_webhook_bodies_never_get_a_5xx(
    api: FakeTelegramAPI, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(api, telegram_mode="webhook", telegram_webhook_secret=SECRET)
    app = build_app(engine, settings)
    application = app[tg.APPLICATION_KEY]
    errors = fail_on_handler_errors(application)
    fuzz = TelegramFuzzer(SEED, SECRET, tg.SECRET_HEADER, chat_ids=(1001, 1002, 1003))
    statuses: Counter[tuple[str, int]] = Counter()
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url(tg.WEBHOOK_PATH))
    try:
        with caplog.at_level(logging.WARNING):
            async with aiohttp.ClientSession() as http:
                for label, headers, body in fuzz.cases(TELEGRAM_CASES):
                    async with http.post(url, data=body, headers=headers) as resp:
                        statuses[label, resp.status] += 1
                        assert resp.status < 500, (label, body[:300])
                await api.wait_until(lambda: application.update_queue.empty(), timeout=30)
                # Half a surrogate pair, as JSON can carry it: answered, not a crash.
                headers = {tg.SECRET_HEADER: SECRET, "Content-Type": "application/json"}
                stray = json.dumps(fuzz.genuine(4343, "验证码\ud800能告诉别人吗", 10**10 - 1))
                async with http.post(url, data=stray, headers=headers) as resp:
                    assert resp.status == 200
                await api.wait_sent(4343, 1, timeout=30)
                genuine: dict[str, Any] = fuzz.genuine(4242, "/help", 10**10)
                async with http.post(url, json=genuine, headers=headers) as resp:
                    assert resp.status == 200
                await api.wait_sent(4242, 1, timeout=30)
    finally:
        await server.close()
    assert api.sent(4242)[0]["text"].startswith(engine.content.entries["about"].answer.strip())
    assert any(s == 200 for _, s in statuses) and any(s == 400 for _, s in statuses)
    assert [type(e).__name__ for e in errors] == []
    assert _crashes(caplog) == []
