"""The Telegram channel end to end: a real PTB Application against the fake Bot API on
127.0.0.1, by long polling and through our aiohttp webhook (bot.server.build_app)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from fake_telegram_api import TOKEN, FakeTelegramAPI, bad_request, buttons, forbidden
from telegram.ext import Application, ContextTypes

from bot.channels import telegram as tg
from bot.channels.telegram_api import CHANNEL, MAX_CALLBACK_BYTES, TOKEN_PREFIX, callback_data_for
from bot.commands import telegram as tg_command
from bot.config import Settings
from bot.content import Content, load_content
from bot.engine import Engine
from bot.errors import ConfigError
from bot.server import build_app
from bot.storage import SqliteStorage

os.environ.setdefault("PTB_TIMEDELTA", "true")
ROOT = Path(__file__).resolve().parent.parent
CHAT = 987654321
PUBLIC_URL = "https://bot.example.org"
SECRET = "s3cret-Token_for_tests"
LONG_ID = "what_to_do_when_a_stranger_posts_your_home_address_on_the_web"
ENTRIES = f"""
entries:
  - id: about
    title: 我能帮您做什么
    intent: help
    questions: [你能做什么, 帮助, 菜单]
    answer: 我可以回答个人信息保护的问题。
  - id: privacy
    title: 我们保存哪些数据
    questions: [隐私政策, 你们存了我哪些信息, 我发的消息会被记录吗]
    answer: 我们只保存您点过的选项，闲置30分钟后删除。
  - id: protect_general
    title: 日常防护
    questions: [平时怎么保护个人信息, 防止信息泄露有什么办法, 个人信息保护小窍门]
    answer: 快递单撕毁后再扔。
  - id: verification_code
    title: 验证码不给任何人
    questions: [别人问我要验证码能给吗, 客服让我报验证码, 验证码能告诉别人吗]
    keywords: [验证码]
    answer: 验证码只给你自己用，<任何人>问都不要给 & 不要转发。
    related: [{LONG_ID}]
    cases: [tg_case]
    report: fraud
  - id: {LONG_ID}
    title: 住址被挂到网上
    questions: [有人把我家地址发到网上, 住址被人肉了怎么办, 我的地址被公开了]
    answer: 截图保存证据，向平台投诉删除。
"""
CASE = """
id: tg_case
title: 营业员卖验证码
kind: 刑事
court: 某区人民法院
date: "2022-12-26"
summary: 营业员把客户的验证码发给别人注册账号，被判刑。
facts: 营业员把验证码发进群里。
outcome: 被告人被判刑。
legal_point: 验证码属于个人信息。
articles:
  - {law: 刑法, article: 第二百五十三条之一}
lesson: 验证码谁要都不给。
sources:
  - {name: 指导性案例, url: "https://www.court.gov.cn/"}
tags: [验证码]
"""


# --- fixtures -----------------------------------------------------------------------------


def write_content(root: Path, *, report_flow: bool = False) -> Content:
    """A tiny content folder of our own, with the real bot wording and lexicon, and (if asked)
    the real report flow, its links to entries we do not have removed."""
    knowledge, cases = root / "knowledge", root / "cases"
    knowledge.mkdir()
    cases.mkdir()
    for name in ("_bot.yaml", "_lexicon.yaml"):
        shutil.copy(ROOT / "knowledge" / name, knowledge / name)
    (knowledge / "tg.yaml").write_text(ENTRIES, encoding="utf-8")
    (cases / "tg_case.yaml").write_text(CASE, encoding="utf-8")
    if report_flow:
        flow = yaml.safe_load((ROOT / "knowledge" / "_report.yaml").read_text(encoding="utf-8"))
        for scenario in flow.get("scenarios", []):
            scenario["related"] = []
        (knowledge / "_report.yaml").write_text(yaml.safe_dump(flow, allow_unicode=True))
    return load_content(knowledge, cases)


def make_settings(api: FakeTelegramAPI, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "telegram_token": TOKEN,
        "telegram_api_base": api.base_url,
        "public_url": PUBLIC_URL,
        "telegram_mode": "polling",
    }
    return Settings(**{**values, **changes})


@pytest.fixture
async def api() -> AsyncIterator[FakeTelegramAPI]:
    server = FakeTelegramAPI()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def engine(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    # Indirect parametrisation with True adds the report flow.
    content = write_content(tmp_path, report_flow=getattr(request, "param", False))
    storage = await SqliteStorage.open(tmp_path / "telegram.sqlite3")
    yield Engine(content, storage, case_url=Settings(public_url=PUBLIC_URL).case_url)
    await storage.close()


def fail_on_handler_errors(application: Application[Any, Any, Any, Any, Any, Any]) -> list[object]:
    """PTB swallows handler exceptions; collect them so the test can fail on any."""
    errors: list[object] = []

    async def collect(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        errors.append(context.error)

    application.add_error_handler(collect)
    return errors


@pytest.fixture
async def polling(api: FakeTelegramAPI, engine: Engine) -> AsyncIterator[FakeTelegramAPI]:
    """The bot answering by long polling; the test talks to it through `api`."""
    settings = make_settings(api)
    application = tg.build_application(engine, settings, polling=True)
    errors = fail_on_handler_errors(application)
    async with tg.running(application, settings):
        yield api
    assert errors == []


async def press(api: FakeTelegramAPI, data: str) -> list[dict[str, Any]]:
    """Press a button; return the messages it produced once the query is answered."""
    before = len(api.sent(CHAT))
    answered = len(api.calls_to("answerCallbackQuery"))
    api.user_presses(CHAT, data)
    await api.wait_until(lambda: len(api.calls_to("answerCallbackQuery")) > answered)
    await api.wait_sent(CHAT, before + 1)
    return api.sent(CHAT)[before:]


async def say(api: FakeTelegramAPI, text: str, replies: int = 1) -> list[dict[str, Any]]:
    before = len(api.sent(CHAT))
    api.user_says(CHAT, text)
    await api.wait_sent(CHAT, before + replies)
    return api.sent(CHAT)[before:]


# --- transcripts by long polling ----------------------------------------------------------


async def test_start_welcomes_with_the_menu_as_inline_buttons(
    polling: FakeTelegramAPI, engine: Engine
) -> None:
    (welcome,) = await say(polling, "/start")
    assert welcome["text"].strip() == engine.content.texts.welcome.strip()
    assert [b["callback_data"] for b in buttons(welcome)] == [
        b.payload for b in engine.content.menu
    ]
    assert [b["text"] for b in buttons(welcome)] == [b.label for b in engine.content.menu]
    assert {c["command"] for c in polling.commands} == set(tg.COMMANDS)
    assert polling.calls[0].method == "getMe"


async def test_help_and_privacy_commands_answer_their_entries(
    polling: FakeTelegramAPI, engine: Engine
) -> None:
    (help_reply,) = await say(polling, "/help")
    assert help_reply["text"].startswith(engine.content.entries["about"].answer.strip())
    (privacy,) = await say(polling, "/privacy")
    assert privacy["text"].startswith(engine.content.entries["privacy"].answer.strip())


async def test_free_text_question_is_answered_as_plain_text_with_buttons(
    polling: FakeTelegramAPI,
) -> None:
    (answer,) = await say(polling, "验证码能告诉别人吗")
    assert answer["text"].startswith("验证码只给你自己用，<任何人>问都不要给 & 不要转发。")
    assert "parse_mode" not in answer
    data = [b["callback_data"] for b in buttons(answer)]
    assert "#report:fraud" in data and "#case:tg_case" in data
    assert all(len(d.encode()) <= MAX_CALLBACK_BYTES for d in data)


async def test_case_button_opens_the_case_with_a_link_to_its_page(
    polling: FakeTelegramAPI,
) -> None:
    await say(polling, "验证码能告诉别人吗")
    (case,) = await press(polling, "#case:tg_case")
    assert "营业员卖验证码" in case["text"]
    links = [b["url"] for b in buttons(case) if "url" in b]
    assert links == [f"{PUBLIC_URL}/cases/tg_case"]
    assert polling.calls_to("answerCallbackQuery")[-1].params["callback_query_id"].startswith("cq")


async def test_a_payload_too_long_for_telegram_travels_as_a_token(
    polling: FakeTelegramAPI, engine: Engine
) -> None:
    (answer,) = await say(polling, "验证码能告诉别人吗")
    long_payload = "#entry:" + LONG_ID
    assert len(long_payload.encode()) > MAX_CALLBACK_BYTES
    (token,) = [b["callback_data"] for b in buttons(answer) if b["text"] == "住址被挂到网上"]
    assert token.startswith(TOKEN_PREFIX) and len(token.encode()) <= MAX_CALLBACK_BYTES
    (reply,) = await press(polling, token)
    assert reply["text"].startswith(engine.content.entries[LONG_ID].answer)


async def test_an_unknown_token_is_answered_as_expired_without_a_message(
    polling: FakeTelegramAPI,
) -> None:
    polling.user_presses(CHAT, TOKEN_PREFIX + "no-such-token")
    await polling.wait_until(lambda: bool(polling.calls_to("answerCallbackQuery")))
    assert polling.calls_to("answerCallbackQuery")[0].params["text"] == tg.BUTTON_EXPIRED
    await say(polling, "/help")  # processed after the press: the press sent nothing
    assert len(polling.sent(CHAT)) == 1


@pytest.mark.parametrize("engine", [True], indirect=True, ids=["with_report_flow"])
async def test_report_guidance_runs_through_button_presses(
    polling: FakeTelegramAPI, engine: Engine
) -> None:
    (welcome,) = await say(polling, "/start")
    report = next(b["callback_data"] for b in buttons(welcome) if b["callback_data"] == "#report")
    first = await press(polling, report)
    choices = [b["callback_data"] for m in first for b in buttons(m) if "callback_data" in b]
    assert choices, "the report guidance should offer buttons"
    second = await press(polling, choices[0])
    assert second and all(m["text"] for m in second)
    session = await engine.storage.get_session(CHANNEL, str(CHAT))
    assert session is not None  # the flow's state lives in our storage, not in PTB


async def test_subscribe_then_unsubscribe_changes_storage(
    polling: FakeTelegramAPI, engine: Engine
) -> None:
    storage = engine.storage
    (subscribed,) = await say(polling, "/subscribe")
    assert subscribed["text"].strip() == engine.content.texts.subscribed.strip()
    assert await storage.is_subscribed(CHANNEL, str(CHAT))
    assert [b["callback_data"] for b in buttons(subscribed)] == ["#unsubscribe"]
    (unsubscribed,) = await say(polling, "/unsubscribe")
    assert unsubscribed["text"].strip() == engine.content.texts.unsubscribed.strip()
    assert not await storage.is_subscribed(CHANNEL, str(CHAT))
    assert await storage.get_session(CHANNEL, str(CHAT)) is None


async def test_deep_link_start_subscribes(polling: FakeTelegramAPI, engine: Engine) -> None:
    await say(polling, "/start subscribe")
    assert await engine.storage.is_subscribed(CHANNEL, str(CHAT))


async def test_blocking_the_bot_forgets_the_user(polling: FakeTelegramAPI, engine: Engine) -> None:
    await say(polling, "/subscribe")
    polling.user_blocks_bot(CHAT)
    for _ in range(200):
        if not await engine.storage.is_subscribed(CHANNEL, str(CHAT)):
            break
        await asyncio.sleep(0.01)
    assert not await engine.storage.is_subscribed(CHANNEL, str(CHAT))


async def test_a_reply_refused_with_403_forgets_the_user(
    polling: FakeTelegramAPI, engine: Engine
) -> None:
    await say(polling, "/subscribe")
    await say(polling, "验证码能告诉别人吗")  # leaves numbered options in the session
    storage = engine.storage
    assert await storage.get_session(CHANNEL, str(CHAT)) is not None
    polling.failures[CHAT] = [forbidden()]
    before = len(polling.sent(CHAT))
    polling.user_says(CHAT, "/help")
    await polling.wait_until(lambda: len(polling.sent(CHAT)) > before)
    for _ in range(200):
        if not await storage.is_subscribed(CHANNEL, str(CHAT)):
            break
        await asyncio.sleep(0.01)
    assert not await storage.is_subscribed(CHANNEL, str(CHAT))
    assert await storage.get_session(CHANNEL, str(CHAT)) is None
    # The fixture's check that no handler raised covers the rest: the 403 was handled.


async def test_nothing_personal_reaches_the_logs(
    polling: FakeTelegramAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    replies = await say(polling, "我手机号13812345678，验证码能告诉别人吗", replies=2)
    assert "⚠️" in replies[-1]["text"]  # the engine's warning about personal data
    # aiosqlite's own DEBUG lines (SQL parameters) belong to the storage layer, not this channel.
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("aiosqlite"))
    assert "telegram" in logged  # the channel's and PTB's records were captured
    for secret in ("13812345678", str(CHAT), TOKEN, "验证码能告诉别人吗"):
        assert secret not in logged


async def test_a_failing_handler_is_reported_and_logged_without_details(
    api: FakeTelegramAPI, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(api)
    application = tg.build_application(engine, settings, polling=True)
    errors = fail_on_handler_errors(application)
    api.failures[CHAT] = [bad_request()]
    async with tg.running(application, settings):
        api.user_says(CHAT, "/help")
        await api.wait_until(lambda: bool(errors))
    assert [type(e).__name__ for e in errors] == ["BadRequest"]
    logged = [r.getMessage() for r in caplog.records if r.name == "bot.channels.telegram"]
    assert any(m.startswith("telegram update failed: BadRequest") for m in logged)
    assert not any(str(CHAT) in m or "chat not found" in m.lower() for m in logged)


# --- webhook inside bot.server.build_app ----------------------------------------------------


async def test_webhook_requires_the_secret_header(api: FakeTelegramAPI, engine: Engine) -> None:
    settings = make_settings(api, telegram_mode="webhook", telegram_webhook_secret=SECRET)
    app = build_app(engine, settings)
    errors = fail_on_handler_errors(app[tg.APPLICATION_KEY])
    update = {
        "update_id": 1,
        "message": api.user_says(CHAT, "/start")["message"],  # reused as a webhook body
    }
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert api.webhook is not None
        assert api.webhook["url"] == f"{PUBLIC_URL}{tg.WEBHOOK_PATH}"
        assert api.webhook["secret_token"] == SECRET
        missing = await client.post(tg.WEBHOOK_PATH, json=update)
        wrong = await client.post(
            tg.WEBHOOK_PATH, json=update, headers={tg.SECRET_HEADER: SECRET + "x"}
        )
        assert (missing.status, wrong.status) == (403, 403)
        garbled = await client.post(
            tg.WEBHOOK_PATH, data=b"{not json", headers={tg.SECRET_HEADER: SECRET}
        )
        assert garbled.status == 400
        assert api.sent(CHAT) == []
        good = await client.post(tg.WEBHOOK_PATH, json=update, headers={tg.SECRET_HEADER: SECRET})
        assert good.status == 200
        await api.wait_sent(CHAT, 1)
    assert api.sent(CHAT)[0]["text"].strip() == engine.content.texts.welcome.strip()
    assert not api.calls_to("getUpdates")  # webhook mode never polls
    assert errors == []


async def test_add_telegram_checks_its_settings(api: FakeTelegramAPI, engine: Engine) -> None:
    assert tg.APPLICATION_KEY not in build_app(engine, Settings())  # no token: no Telegram
    for bad in (
        {"telegram_mode": "carrier-pigeon"},
        {"telegram_mode": "webhook"},  # no secret
        {"telegram_mode": "webhook", "telegram_webhook_secret": "has spaces"},
        {"telegram_mode": "webhook", "telegram_webhook_secret": SECRET, "public_url": ""},
    ):
        with pytest.raises(ConfigError):
            build_app(engine, make_settings(api, **bad))


# --- pieces -------------------------------------------------------------------------------


def test_callback_data_is_the_payload_or_a_stable_short_token() -> None:
    assert callback_data_for("#cases:2") == "#cases:2"
    long_payload = "#entry:" + LONG_ID
    token = callback_data_for(long_payload)
    assert token == callback_data_for(long_payload)
    assert token.startswith(TOKEN_PREFIX) and len(token) <= MAX_CALLBACK_BYTES
    assert callback_data_for("#x:" + "案" * 21) != "#x:" + "案" * 21  # 66 bytes in UTF-8


def test_long_texts_are_split_under_the_limit() -> None:
    text = "\n".join("第" + str(n) + "段" + "字" * 100 for n in range(100))
    chunks = tg.split_text(text)
    assert len(chunks) > 1 and all(len(c) <= tg.MAX_TEXT_CHARS for c in chunks)
    assert "".join(chunks).replace("\n", "") == text.replace("\n", "")


async def test_info_command_reports_the_bot_and_webhook(
    api: FakeTelegramAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.webhook = {"url": f"{PUBLIC_URL}/telegram"}
    info = argparse.Namespace()
    await asyncio.to_thread(tg_command._info, info, make_settings(api))
    out = capsys.readouterr().out
    assert "@infoguard_test_bot" in out and f"{PUBLIC_URL}/telegram" in out
    with pytest.raises(ConfigError):
        tg_command._info(info, Settings())  # no token
    wrong = make_settings(api, telegram_token="42:wrong")
    with pytest.raises(ConfigError, match="rejected"):
        await asyncio.to_thread(tg_command._info, info, wrong)
