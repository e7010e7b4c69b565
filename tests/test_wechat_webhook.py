"""The WeChat webhook over real HTTP on 127.0.0.1: signed (and encrypted) pushes posted to the
app `bot.server.build_app` builds, every message and event type, retries answered once, the
5-second budget ending in a customer-service call on the fake WeChat API, and hostile input
refused with a 4xx."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp.test_utils import TestServer
from defusedxml.ElementTree import fromstring
from fake_telegram_api import TOKEN as TELEGRAM_TOKEN
from fake_telegram_api import FakeTelegramAPI
from fake_wechat_api import APP_ID, SECRET, FakeWeChatAPI, Fault
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto

from bot.channels.wechat import NOT_UNDERSTOOD, NOT_UNDERSTOOD_OTHER, WEBHOOK_KEY, WeChatWebhook
from bot.channels.wechat_xml import TextOut, render, sign
from bot.config import Settings
from bot.content import Content
from bot.engine import Engine
from bot.replies import SUBSCRIBE
from bot.server import PathOnlyAccessLogger, build_app
from bot.storage import SqliteStorage

TOKEN = "infoguardtesttoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
OLD_AES_KEY = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
ACCOUNT = "gh_infoguard"
USER = "oUserOpenId0000000000000001"
SEND = "message/custom/send"
_msg_ids = iter(range(10**15, 10**16))


def text_xml(text: str, *, user: str = USER, msg_id: int | None = None) -> str:
    msg_id = msg_id if msg_id is not None else next(_msg_ids)
    return (
        f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{user}]]>"
        f"</FromUserName><CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]>"
        f"</MsgType><Content><![CDATA[{text}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )


def message_xml(kind: str, fields: str = "", *, user: str = USER) -> str:
    return (
        f"<xml><ToUserName>{ACCOUNT}</ToUserName><FromUserName>{user}</FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType>{kind}</MsgType>{fields}"
        f"<MsgId>{next(_msg_ids)}</MsgId></xml>"
    )


def event_xml(
    event: str,
    key: str | None = None,
    *,
    user: str = USER,
    extra: str = "",
    create_time: int | None = None,
) -> str:
    key_xml = f"<EventKey><![CDATA[{key}]]></EventKey>" if key is not None else ""
    return (
        f"<xml><ToUserName>{ACCOUNT}</ToUserName><FromUserName>{user}</FromUserName>"
        f"<CreateTime>{create_time or int(time.time())}</CreateTime><MsgType>event</MsgType>"
        f"<Event><![CDATA[{event}]]></Event>{key_xml}{extra}</xml>"
    )


def signed(
    timestamp: int | None = None, nonce: str = "n0nce", token: str = TOKEN
) -> dict[str, str]:
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    return {
        "signature": sign(token, stamp, nonce),
        "timestamp": stamp,
        "nonce": nonce,
        "openid": USER,
    }


def fields_of(xml: str) -> dict[str, Any]:
    root = fromstring(xml, forbid_dtd=True)
    out: dict[str, Any] = {c.tag: (c.text or "") for c in root}
    for item in root.iter("item"):
        out["article"] = {c.tag: (c.text or "") for c in item}
    return out


@dataclass
class Bot:
    """The app running on 127.0.0.1, a client for it, and the fake WeChat API behind it."""

    url: str
    http: aiohttp.ClientSession
    engine: Engine
    webhook: WeChatWebhook
    fake: FakeWeChatAPI
    crypto: WeChatCrypto | None

    async def post(
        self, body: str | bytes, query: dict[str, str] | None = None, **kw: Any
    ) -> tuple[int, str]:
        async with self.http.post(self.url, params=query or signed(), data=body, **kw) as resp:
            return resp.status, await resp.text()

    async def send(self, xml: str) -> str:
        """Post a genuine push (encrypted if the bot runs in safe mode); the plain reply."""
        if self.crypto is None:
            status, text = await self.post(xml)
            assert status == 200, text
            return text
        query, body = encrypted_push(self.crypto, xml)
        status, text = await self.post(body, query)
        assert status == 200, text
        return self.open_reply(text, self.crypto)

    @staticmethod
    def open_reply(text: str, crypto: WeChatCrypto) -> str:
        if text == "success":
            return text
        envelope = fields_of(text)
        return str(
            crypto.decrypt_message(
                text, envelope["MsgSignature"], envelope["TimeStamp"], envelope["Nonce"]
            )
        )

    async def reply(self, xml: str) -> dict[str, Any]:
        text = await self.send(xml)
        assert text != "success", "expected a passive reply"
        return fields_of(text)


def encrypted_push(
    crypto: WeChatCrypto, xml: str, *, plain_too: bool = False, nonce: str = "enc0nce"
) -> tuple[dict[str, str], str]:
    stamp = str(int(time.time()))
    sealed = fields_of(crypto.encrypt_message(xml, nonce, stamp))
    inner = (
        xml.removeprefix("<xml>").removesuffix("</xml>")
        if plain_too
        else (f"<ToUserName>{ACCOUNT}</ToUserName>")
    )
    body = f"<xml>{inner}<Encrypt><![CDATA[{sealed['Encrypt']}]]></Encrypt></xml>"
    query = {
        **signed(int(stamp), nonce),
        "encrypt_type": "aes",
        "msg_signature": sealed["MsgSignature"],
    }
    return query, body


class GatedStorage:
    """SqliteStorage whose `first_sighting` waits for `gate`: it holds an answer in flight
    while the test sends WeChat's retries."""

    def __init__(self, inner: SqliteStorage) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.sightings = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def first_sighting(self, key: str, **kw: Any) -> bool:
        self.sightings += 1
        await self.gate.wait()
        return await self.inner.first_sighting(key, **kw)


BotFactory = Callable[..., Awaitable[Bot]]


@pytest.fixture
async def start_bot(mini_content: Content, tmp_path: Path) -> AsyncIterator[BotFactory]:
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def start(*, gated: bool = False, **overrides: Any) -> Bot:
        fake = FakeWeChatAPI()
        await fake.start()
        settings = Settings(
            wechat_app_id=APP_ID,
            wechat_secret=SECRET,
            wechat_token=TOKEN,
            wechat_api_base=fake.base_url,
            public_url="https://bot.example",
            wechat_reply_budget=3.0,
            database=tmp_path / "unused.sqlite3",
        )
        settings = replace(settings, **overrides)
        storage = await SqliteStorage.open(tmp_path / f"wechat{len(cleanups)}.sqlite3")
        held = GatedStorage(storage) if gated else storage
        engine = Engine(mini_content, held, case_url=settings.case_url)  # type: ignore[arg-type]
        app = build_app(engine, settings)
        # The server's access log (no query string: WeChat puts the openid there).
        server = TestServer(app, host="127.0.0.1")
        await server.start_server(access_log_class=PathOnlyAccessLogger)
        http = aiohttp.ClientSession()
        crypto = (
            WeChatCrypto(TOKEN, settings.wechat_aes_key, APP_ID)
            if (settings.wechat_aes_key)
            else None
        )

        async def stop() -> None:
            await http.close()
            await server.close()
            await storage.close()
            await fake.close()

        cleanups.append(stop)
        return Bot(str(server.make_url("/wechat")), http, engine, app[WEBHOOK_KEY], fake, crypto)

    yield start
    for stop in reversed(cleanups):
        await stop()


# -- signature and URL verification -----------------------------------------------------------


def test_official_signature_vectors() -> None:
    assert sign("AAAAA", "1714036504", "1514711492") == "f464b24fc39322e44b38aa78f5edd27bd1441696"
    assert sign("AAAAA", "1714037059", "486452656") == "899cf89e464efb63f54ddac96b0a0a235f53aa78"


async def test_url_verification_echoes_only_when_signed(start_bot: BotFactory) -> None:
    bot = await start_bot()
    checks = [
        ({**signed(), "echostr": "4375120948345356249"}, 200, "4375120948345356249"),
        ({**signed(token="wrong"), "echostr": "1"}, 403, None),
        ({**signed(timestamp=int(time.time()) - 3600), "echostr": "1"}, 403, None),
        ({"echostr": "1"}, 400, None),
        (signed(), 400, None),
    ]
    for query, status, body in checks:
        async with bot.http.get(bot.url, params=query) as resp:
            assert resp.status == status
            if body is not None:
                assert await resp.text() == body


# -- messages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("safe_mode", [False, True], ids=["plain", "safe"])
async def test_text_is_answered_and_numbers_choose_buttons(
    start_bot: BotFactory, safe_mode: bool
) -> None:
    bot = await start_bot(wechat_aes_key=AES_KEY if safe_mode else "")
    reply = await bot.reply(text_xml("验证码能告诉别人吗"))
    assert reply["MsgType"] == "text"
    assert (reply["ToUserName"], reply["FromUserName"]) == (USER, ACCOUNT)
    assert "验证码只给你自己用" in reply["Content"]
    assert "1. 案例：验证码也是个人信息" in reply["Content"]

    # "1" opens the case: a news card to its page, its own options follow by customer service.
    card = await bot.reply(text_xml("1"))
    assert card["MsgType"] == "news" and card["ArticleCount"] == "1"
    assert card["article"]["Url"] == "https://bot.example/cases/mini_case"
    assert card["article"]["Title"] == "验证码也是个人信息"
    [follow_up] = await bot.fake.wait_for(SEND, 1)
    assert follow_up.body["touser"] == USER
    assert "1. 验证码不给任何人" in follow_up.body["text"]["content"]


async def test_compatible_mode_and_previous_aes_key(start_bot: BotFactory) -> None:
    bot = await start_bot(wechat_aes_key=AES_KEY, wechat_aes_key_previous=OLD_AES_KEY)
    assert bot.crypto is not None
    query, body = encrypted_push(bot.crypto, text_xml("验证码能告诉别人吗"), plain_too=True)
    status, text = await bot.post(body, query)
    assert status == 200
    assert "验证码只给你自己用" in fields_of(bot.open_reply(text, bot.crypto))["Content"]

    old = WeChatCrypto(TOKEN, OLD_AES_KEY, APP_ID)
    query, body = encrypted_push(old, text_xml("验证码能告诉别人吗"))
    status, text = await bot.post(body, query)
    assert status == 200
    assert "验证码只给你自己用" in fields_of(bot.open_reply(text, old))["Content"]


@pytest.mark.parametrize("event", ["subscribe", "subscribe_scan"])
async def test_follow_is_welcomed_with_an_offer_to_subscribe(
    start_bot: BotFactory, mini_content: Content, event: str
) -> None:
    bot = await start_bot()
    key = "qrscene_123" if event == "subscribe_scan" else None
    reply = await bot.reply(event_xml("subscribe", key))
    number = [b.payload for b in mini_content.menu].index(SUBSCRIBE) + 1
    assert mini_content.texts.welcome.splitlines()[0] in reply["Content"]
    assert f"回复“{number}”即可订阅" in reply["Content"]

    await bot.reply(text_xml(str(number)))
    assert await bot.engine.storage.is_subscribed("wechat", USER)


async def test_unfollow_deletes_the_users_data(start_bot: BotFactory) -> None:
    bot = await start_bot()
    await bot.reply(event_xml("CLICK", "#subscribe"))
    await bot.reply(text_xml("验证码能告诉别人吗"))  # leaves numbered options in the session
    storage = bot.engine.storage
    assert await storage.is_subscribed("wechat", USER)
    assert await storage.get_session("wechat", USER)

    assert await bot.send(event_xml("unsubscribe")) == "success"
    assert not await storage.is_subscribed("wechat", USER)
    assert await storage.get_session("wechat", USER) is None


async def test_menu_clicks_reach_their_intents(
    start_bot: BotFactory, mini_content: Content
) -> None:
    bot = await start_bot()
    cases = await bot.reply(event_xml("CLICK", "#cases:1"))
    assert mini_content.texts.cases_heading in cases["Content"]
    assert "1. 验证码也是个人信息" in cases["Content"]
    tips = await bot.reply(event_xml("CLICK", "#entry:protect_general", create_time=1))
    assert "快递单撕毁后再扔" in tips["Content"]
    other = await bot.reply(event_xml("CLICK", "not-a-payload", create_time=2))
    assert mini_content.texts.welcome.splitlines()[0] in other["Content"]


async def test_voice_is_answered_from_its_recognition(start_bot: BotFactory) -> None:
    bot = await start_bot()
    heard = await bot.reply(
        message_xml(
            "voice",
            "<MediaId>m</MediaId><Format>amr</Format><Recognition>验证码能告诉别人吗</Recognition>",
        )
    )
    assert "验证码只给你自己用" in heard["Content"]
    unheard = await bot.reply(message_xml("voice", "<MediaId>m</MediaId><Format>amr</Format>"))
    assert unheard["Content"] == NOT_UNDERSTOOD["voice"]


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("image", "<PicUrl>http://x/p.jpg</PicUrl><MediaId>m</MediaId>"),
        (
            "location",
            "<Location_X>25.04</Location_X><Location_Y>102.7</Location_Y>"
            "<Scale>15</Scale><Label>昆明</Label>",
        ),
        ("link", "<Title>t</Title><Description>d</Description><Url>http://x</Url>"),
        ("video", "<MediaId>m</MediaId><ThumbMediaId>t</ThumbMediaId>"),
        ("shortvideo", "<MediaId>m</MediaId><ThumbMediaId>t</ThumbMediaId>"),
        ("hologram", ""),
    ],
)
async def test_other_messages_get_a_short_helpful_reply(
    start_bot: BotFactory, kind: str, fields: str
) -> None:
    bot = await start_bot()
    reply = await bot.reply(message_xml(kind, fields))
    assert reply["MsgType"] == "text"
    assert reply["Content"] == NOT_UNDERSTOOD.get(kind, NOT_UNDERSTOOD_OTHER)


@pytest.mark.parametrize(
    ("event", "key"),
    [
        ("VIEW", "https://bot.example/cases/"),
        ("LOCATION", None),
        ("TEMPLATESENDJOBFINISH", None),
        ("SOMETHING_NEW", None),
    ],
)
async def test_events_that_need_no_answer(
    start_bot: BotFactory, event: str, key: str | None
) -> None:
    bot = await start_bot()
    assert await bot.send(event_xml(event, key)) == "success"
    await bot.webhook.wait_idle()
    assert bot.fake.calls_to(SEND) == []


async def test_mass_send_job_finish_is_recorded(start_bot: BotFactory) -> None:
    bot = await start_bot()
    extra = (
        "<MsgID>1000</MsgID><Status><![CDATA[send success]]></Status><TotalCount>3"
        "</TotalCount><FilterCount>2</FilterCount><SentCount>2</SentCount>"
        "<ErrorCount>0</ErrorCount>"
    )
    assert await bot.send(event_xml("MASSSENDJOBFINISH", extra=extra)) == "success"
    record = json.loads(await bot.engine.storage.cache_get("wechat:mass_job:1000") or "{}")
    assert record == {
        "status": "send success",
        "total": "3",
        "filtered": "2",
        "sent": "2",
        "errors": "0",
    }


def test_reply_text_cannot_break_out_of_cdata() -> None:
    message = parse_message(text_xml("hi"))
    hostile = "a]]><MsgType>news</MsgType><x>b\x00"
    xml = render(TextOut(hostile), message, 1700000000)
    reply = fields_of(xml)
    assert reply["Content"] == hostile.replace("\x00", "")
    assert reply["MsgType"] == "text"


async def test_logs_hold_neither_the_text_nor_the_openid(
    start_bot: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await start_bot(wechat_reply_budget=0.0)
    with caplog.at_level(logging.DEBUG):
        await bot.send(text_xml("我的手机号13912345678验证码能告诉别人吗"))
        await bot.webhook.wait_idle()
        await bot.send(event_xml("unsubscribe"))
        await bot.webhook.wait_idle()
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("bot."))
    assert "wechat user u" in ours  # the unfollow is logged, under a hashed tag
    for secret in (USER, "13912345678", "验证码能告诉别人吗", bot.fake.token or "-", SECRET):
        assert secret not in ours


# -- retries and the time budget ------------------------------------------------------------


async def test_a_repeated_push_is_answered_once(start_bot: BotFactory) -> None:
    bot = await start_bot()
    push = text_xml("验证码能告诉别人吗")
    assert "验证码只给你自己用" in (await bot.reply(push))["Content"]
    assert await bot.send(push) == "success"
    click = event_xml("CLICK", "#cases:1")
    answers = await asyncio.gather(*(bot.send(click) for _ in range(3)))
    assert sum(a != "success" for a in answers) == 1


async def send_overlapping(bot: Bot, push: str, count: int = 3) -> list[str]:
    """Send a push and `count - 1` retries while its answer is held in flight, then let the
    answer go; the answers in order of sending."""
    storage = bot.engine.storage
    assert isinstance(storage, GatedStorage)
    sends = [asyncio.create_task(bot.send(push)) for _ in range(count)]
    async with asyncio.timeout(10):
        while bot.webhook.waiting() < count and not all(s.done() for s in sends):
            await asyncio.sleep(0.005)
    storage.gate.set()
    answers = await asyncio.gather(*sends)
    await bot.webhook.wait_idle()
    assert storage.sightings == 1  # the retries joined the answer in flight
    return answers


async def test_overlapping_retries_get_one_passive_answer(start_bot: BotFactory) -> None:
    bot = await start_bot(gated=True)
    answers = await send_overlapping(bot, text_xml("验证码能告诉别人吗"))
    assert sorted(a == "success" for a in answers) == [False, True, True]
    assert bot.fake.calls_to(SEND) == []


@pytest.mark.parametrize("safe_mode", [False, True], ids=["plain", "safe"])
async def test_out_of_budget_answer_goes_by_customer_service_once(
    start_bot: BotFactory, safe_mode: bool
) -> None:
    bot = await start_bot(
        gated=True, wechat_reply_budget=0.0, wechat_aes_key=AES_KEY if safe_mode else ""
    )
    push = text_xml("验证码能告诉别人吗")
    answers = await send_overlapping(bot, push)
    assert answers == ["success"] * 3
    [sent] = bot.fake.calls_to(SEND)
    assert sent.body["touser"] == USER and sent.body["msgtype"] == "text"
    assert "验证码只给你自己用" in sent.body["text"]["content"]
    assert bot.fake.token_fetches() == 1
    assert await bot.send(push) == "success"  # a late retry: already answered
    await bot.webhook.wait_idle()
    assert len(bot.fake.calls_to(SEND)) == 1


async def test_customer_service_refreshes_a_rejected_token_once(start_bot: BotFactory) -> None:
    bot = await start_bot(wechat_reply_budget=0.0)
    bot.fake.fail(SEND, Fault(errcode=40001))
    await bot.send(text_xml("验证码能告诉别人吗"))
    await bot.webhook.wait_idle()
    first, second = bot.fake.calls_to(SEND)
    assert first.token != second.token == bot.fake.token
    assert bot.fake.calls_to("stable_token")[-1].body["force_refresh"] is True
    assert bot.fake.token_fetches() == 2


@pytest.mark.parametrize("errcode", [45015, 45047, 43004])
async def test_customer_service_refusals_are_not_retried(
    start_bot: BotFactory, errcode: int, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await start_bot(wechat_reply_budget=0.0)
    bot.fake.fail_always(SEND, Fault(errcode=errcode))
    with caplog.at_level(logging.WARNING):
        assert await bot.send(text_xml("验证码能告诉别人吗")) == "success"
        await bot.webhook.wait_idle()
    assert len(bot.fake.calls_to(SEND)) == 1
    assert f"errcode:{errcode}" in caplog.text


# -- hostile and broken requests ---------------------------------------------------------------

BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;">'
    '<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;">]>'
    f"<xml><ToUserName>{ACCOUNT}</ToUserName><FromUserName>{USER}</FromUserName>"
    "<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&f;</Content><MsgId>1</MsgId></xml>"
)
XXE = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    f"<xml><ToUserName>{ACCOUNT}</ToUserName><FromUserName>{USER}</FromUserName>"
    "<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&x;</Content><MsgId>2</MsgId></xml>"
)


QUERIES: dict[str, Callable[[], dict[str, str]]] = {
    "signed": signed,
    "forged": lambda: signed(token="forged"),
    "unsigned": lambda: {"timestamp": str(int(time.time())), "nonce": "n"},
    "stale": lambda: signed(timestamp=int(time.time()) - 301),
    "bad-timestamp": lambda: {**signed(), "timestamp": "soon"},
}


@pytest.mark.parametrize(
    ("body", "query", "status"),
    [
        (text_xml("hi"), "forged", 403),
        (text_xml("hi"), "unsigned", 400),
        (text_xml("hi"), "stale", 403),
        (text_xml("hi"), "bad-timestamp", 400),
        ("<xml><MsgType>text</MsgType", "signed", 400),
        ('{"MsgType": "text"}', "signed", 400),
        (f"<root><MsgType>text</MsgType><FromUserName>{USER}</FromUserName></root>", "signed", 400),
        (f"<xml><FromUserName>{USER}</FromUserName><Content>x</Content></xml>", "signed", 400),
        (text_xml("hi").replace("<MsgType>", "<MsgType>text</MsgType><MsgType>"), "signed", 400),
        (text_xml("hi").replace("<MsgId>", "<MsgId>x"), "signed", 400),
        ("", "signed", 400),
        (XXE, "signed", 400),
        (BILLION_LAUGHS, "signed", 400),
        (text_xml("hi").encode().replace(b"hi", b"\xff\xfe"), "signed", 400),
        (text_xml("x" * 70_000), "signed", 413),
    ],
    ids=[
        "forged",
        "unsigned",
        "stale",
        "bad-timestamp",
        "malformed",
        "json",
        "wrong-root",
        "no-msgtype",
        "duplicate-field",
        "bad-msgid",
        "empty",
        "xxe",
        "billion-laughs",
        "not-utf8",
        "oversize",
    ],
)
async def test_hostile_plain_requests_are_refused(
    start_bot: BotFactory, body: str | bytes, query: str, status: int
) -> None:
    bot = await start_bot()
    assert (await bot.post(body, QUERIES[query]()))[0] == status
    assert "验证码只给你自己用" in (await bot.reply(text_xml("验证码能告诉别人吗")))["Content"]


async def test_oversize_stream_without_length_is_refused(start_bot: BotFactory) -> None:
    bot = await start_bot()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"<x>" + b"a" * 1000 + b"</x>"

    assert (await bot.post(chunks()))[0] == 413  # type: ignore[arg-type]


async def test_hostile_encrypted_requests_are_refused(start_bot: BotFactory) -> None:
    bot = await start_bot(wechat_aes_key=AES_KEY)
    assert bot.crypto is not None
    query, body = encrypted_push(bot.crypto, text_xml("验证码能告诉别人吗"))
    assert (await bot.post(body, {**query, "msg_signature": "0" * 40}))[0] == 403
    garbage = body.replace("<Encrypt><![CDATA[", "<Encrypt><![CDATA[AAAA")
    bad_query = {
        **query,
        "msg_signature": sign(
            TOKEN, query["timestamp"], query["nonce"], fields_of(garbage)["Encrypt"]
        ),
    }
    assert (await bot.post(garbage, bad_query))[0] == 400
    other_app = WeChatCrypto(TOKEN, AES_KEY, "wxsomeoneelse00")
    assert (await bot.post(*reversed(encrypted_push(other_app, text_xml("hi")))))[0] == 400
    assert (await bot.post(*reversed(encrypted_push(bot.crypto, BILLION_LAUGHS))))[0] == 400
    assert (await bot.post(BILLION_LAUGHS, query))[0] == 400
    assert "验证码只给你自己用" in (await bot.reply(text_xml("验证码能告诉别人吗")))["Content"]


async def test_safe_mode_refuses_an_unencrypted_push(start_bot: BotFactory) -> None:
    """A downgrade: a captured, validly signed query string with a plain body of one's own."""
    bot = await start_bot(wechat_aes_key=AES_KEY)
    await bot.send(event_xml("CLICK", "#subscribe"))
    storage = bot.engine.storage
    assert await storage.is_subscribed("wechat", USER)
    assert (await bot.post(event_xml("unsubscribe")))[0] == 403
    assert (await bot.post(text_xml("验证码能告诉别人吗")))[0] == 403
    assert (await bot.post(text_xml("hi"), {**signed(), "encrypt_type": "raw"}))[0] == 403
    await bot.webhook.wait_idle()
    assert await storage.is_subscribed("wechat", USER)
    assert bot.fake.calls_to(SEND) == []
    # The genuine, encrypted push still works, and so does compatible mode (both copies).
    assert "验证码只给你自己用" in (await bot.reply(text_xml("验证码能告诉别人吗")))["Content"]


async def test_encrypted_push_without_a_key_is_refused(start_bot: BotFactory) -> None:
    bot = await start_bot()
    query, body = encrypted_push(WeChatCrypto(TOKEN, AES_KEY, APP_ID), text_xml("hi"))
    assert (await bot.post(body, query))[0] == 400


# -- infoguard serve --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Served:
    """`infoguard serve` in a subprocess: its base URL and, once stopped, its stderr."""

    url: str
    proc: asyncio.subprocess.Process
    banner: list[str]
    stderr: str = ""


@contextlib.asynccontextmanager
async def serving(
    mini_dirs: tuple[Path, Path], tmp_path: Path, *args: str, **env: str
) -> AsyncIterator[Served]:
    """Run `infoguard [args] serve` until the block ends, then SIGTERM it; exit code 0."""
    port = free_port()
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("WECHAT_", "TELEGRAM_"))},
        "INFOGUARD_KNOWLEDGE_DIR": str(mini_dirs[0]),
        "INFOGUARD_CASES_DIR": str(mini_dirs[1]),
        "INFOGUARD_DATABASE": str(tmp_path / "serve.sqlite3"),
        "INFOGUARD_PORT": str(port),
        **env,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, "serve", env=environ, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    served = Served(f"http://127.0.0.1:{port}", proc, [])
    try:
        async with asyncio.timeout(30):
            while not served.banner or "serving on" not in served.banner[-1]:
                line = (await proc.stderr.readline()).decode()
                assert line, "serve ended early: " + "".join(served.banner)
                served.banner.append(line)
        yield served
    finally:
        proc.send_signal(signal.SIGTERM)
        # A graceful stop may take the aiohttp shutdown timeout plus the channel's grace (25 s)
        # on a loaded machine; beyond 60 s it is a hang.
        rest = await asyncio.wait_for(proc.stderr.read(), 60)
        served.stderr = "".join(served.banner) + rest.decode(errors="replace")
        assert await asyncio.wait_for(proc.wait(), 30) == 0, served.stderr


async def test_serve_answers_and_stops_gracefully(
    mini_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    async with (
        serving(mini_dirs, tmp_path, WECHAT_TOKEN=TOKEN) as served,
        aiohttp.ClientSession() as http,
    ):
        url = f"{served.url}/wechat"
        async with http.get(url, params={**signed(), "echostr": "e42"}) as resp:
            assert await resp.text() == "e42"
        async with http.post(url, params=signed(), data=text_xml("验证码能告诉别人吗")) as resp:
            assert "验证码只给你自己用" in fields_of(await resp.text())["Content"]


async def test_access_log_lines_cannot_be_forged(
    mini_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    fake_line = "2026-01-01 00:00:00,000 INFO aiohttp.access: GET /admin 200"
    forged = "/cases/x%0a" + fake_line.replace(" ", "%20") + "%0d%00%1b[2J%E2%80%A8"
    async with (
        serving(mini_dirs, tmp_path, "--debug") as served,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(yarl.URL(served.url + forged, encoded=True)) as resp:
            assert resp.status == 404
        async with http.get(served.url + "/cases/") as resp:
            assert resp.status == 200
    access = [line for line in served.stderr.splitlines() if "aiohttp.access" in line]
    assert len(access) == 2, served.stderr
    assert not any(line.startswith(fake_line) for line in served.stderr.splitlines())
    assert not any(c in served.stderr for c in "\x00\x1b\r\u2028")
    assert "/cases/x\\n2026-01-01" in access[0] and "\\x00\\x1b" in access[0]


async def test_serve_says_which_channels_are_off_and_why(
    mini_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    async with (
        serving(mini_dirs, tmp_path) as served,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(served.url + "/", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "cases/"
        async with http.get(served.url + "/") as resp:
            assert resp.status == 200 and resp.url.path == "/cases/"
            assert "验证码也是个人信息" in await resp.text()
    banner = "".join(served.banner)
    assert "infoguard: WeChat off: WECHAT_TOKEN not set" in banner
    assert "infoguard: Telegram off: TELEGRAM_TOKEN not set" in banner
    assert "infoguard: scheduled push off: no channel to push on" in banner


async def test_serve_says_which_channels_are_on_and_how(
    mini_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    telegram = FakeTelegramAPI()
    await telegram.start()
    try:
        env = {
            "WECHAT_TOKEN": TOKEN,
            "WECHAT_APP_ID": APP_ID,
            "WECHAT_AES_KEY": AES_KEY,
            "TELEGRAM_TOKEN": TELEGRAM_TOKEN,
            "TELEGRAM_API_BASE": telegram.base_url,
            "INFOGUARD_PUSH_INTERVAL_DAYS": "0",
        }
        async with serving(mini_dirs, tmp_path, **env) as served:
            banner = "".join(served.banner)
    finally:
        await telegram.stop()
    assert "infoguard: WeChat on: webhook at /wechat, safe mode; no customer-service" in banner
    assert "WECHAT_APP_ID/WECHAT_SECRET not set" in banner
    assert "infoguard: Telegram on: long polling" in banner
    assert "infoguard: scheduled push off: INFOGUARD_PUSH_INTERVAL_DAYS is 0" in banner
