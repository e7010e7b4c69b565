"""The WeChat Official Account channel: the webhook that WeChat pushes messages and events
to, the 5-second rule, retry deduplication, and the factory of the push sender.

A push is checked (signature, timestamp window, size, defused XML, decryption in safe mode)
before wechatpy parses it; anything wrong gets a 4xx at once. With an AES key set, a push
must be encrypted (safe mode, or compatible mode, whose encrypted copy is the one read). The
answer is computed in a task of its own under a time budget (WECHAT_REPLY_BUDGET, 4 s): if
it is ready in time it goes back as the passive reply; if not, WeChat gets `success` and the
answer follows as a customer-service message. WeChat repeats a push it got no answer to
within 5 s; every delivery of one push (same MsgId, or same sender + CreateTime + event for
events) joins the same in-flight answer, and storage's `first_sighting` drops repeats that
reach another worker or come later, so a push is answered once.

A passive reply is one message: texts are joined; a case with a page becomes a news card
and its numbered options follow as a customer-service text (the card matters most; if the
follow-up is refused, e.g. 45047, the user still has the card).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import traceback
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from wechatpy.crypto import WeChatCrypto
from wechatpy.messages import BaseMessage, UnknownMessage

from bot import replies as payloads
from bot.channels.wechat_api import WeChatAPI, WeChatAPIError
from bot.channels.wechat_api import build_sender as build_sender  # the push sender
from bot.channels.wechat_xml import (
    BadRequest,
    NewsOut,
    Outgoing,
    TextOut,
    check_signature,
    decrypt,
    dedupe_key,
    field_text,
    parse,
    parse_fields,
    plan,
    render,
    seal,
)
from bot.config import Settings
from bot.engine import Engine
from bot.errors import ConfigError
from bot.models import IncomingMessage, Reply
from bot.storage import Storage

_LOGGER = logging.getLogger(__name__)

CHANNEL = "wechat"
WEBHOOK_PATH = "/wechat"
MAX_BODY_BYTES = 64 * 1024
"""WeChat pushes are a few KB (safe mode about 3x); larger bodies get 413 unread."""
MAX_TEXT_CHARS = 2000
SHUTDOWN_GRACE_SECONDS = 10.0
FOLLOW_UP_DELAY_SECONDS = 0.3
"""After a passive reply, the rest of the answer waits this long, so it lands after it."""
MASS_JOB_TTL_SECONDS = 30 * 24 * 3600
SUCCESS = "success"
_AES_KEY = re.compile(r"[A-Za-z0-9]{43}")

SORRY = "抱歉，系统暂时有点忙，请稍后再试。遇到紧急情况，请直接拨打110。"
SUBSCRIBE_OFFER = "想定期收到“以案释法”典型案例吗？回复“{number}”即可订阅，随时回复“退订”取消。"
NOT_UNDERSTOOD = {
    "image": "我暂时看不懂图片。请用文字告诉我您遇到的情况，我来帮您想办法。\n"
    "提醒：身份证、银行卡的照片不要随便发给别人。",
    "voice": "我没听清这段语音。请打字告诉我您的问题，比如“验证码能告诉别人吗”。",
    "video": "我暂时看不了视频。请用文字告诉我您遇到的情况，我来帮您想办法。",
    "shortvideo": "我暂时看不了视频。请用文字告诉我您遇到的情况，我来帮您想办法。",
    "location": "我不需要您的位置，也不会保存它。请用文字告诉我您的问题；"
    "遇到紧急情况，请直接拨打110。",
    "link": "我不会打开发来的链接。陌生人发来的链接请不要点，更不要在里面填写个人信息。"
    "想知道怎么辨别，直接问我就行。",
}
NOT_UNDERSTOOD_OTHER = "这类消息我暂时处理不了。请用文字告诉我您的问题，或点击下方菜单。"


@dataclass(eq=False)
class _Handling:
    """One push being answered; every delivery of it (WeChat's retries) shares this."""

    answer: asyncio.Future[list[Outgoing] | None]
    waiters: int = 0
    """Requests now waiting for the answer; one of them delivers it passively."""
    delivered: bool = False


class WeChatWebhook:
    """The aiohttp handlers for GET (URL verification) and POST (pushes) on WEBHOOK_PATH."""

    def __init__(self, engine: Engine, settings: Settings, api: WeChatAPI | None) -> None:
        self.engine = engine
        self.storage = engine.storage
        self.token = settings.wechat_token
        self.cryptos = _cryptos(settings)
        self.api = api
        self.reply_budget = max(0.0, settings.wechat_reply_budget)
        self._inflight: dict[str, _Handling] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def verify(self, request: web.Request) -> web.Response:
        """WeChat's URL check: echo `echostr` if the signature is right."""
        try:
            check_signature(self.token, dict(request.query), time.time())
        except BadRequest as exc:
            return _refuse(exc)
        echostr = request.query.get("echostr")
        if echostr is None:
            return _refuse(BadRequest(400, "missing echostr"))
        return web.Response(text=echostr)

    async def receive(self, request: web.Request) -> web.Response:
        """One push: a 4xx if it is not a genuine one, else the reply or `success`."""
        deadline = asyncio.get_running_loop().time() + self.reply_budget
        query = dict(request.query)
        try:
            message, crypto = await self._read(request, query)
        except BadRequest as exc:
            return _refuse(exc)
        try:
            item = await self._answer(message, deadline)
            if item is None:
                return web.Response(text=SUCCESS)
            stamp = int(time.time())
            xml = render(item, message, stamp)
            if crypto is not None:
                xml = seal(crypto, xml, query["nonce"], stamp)
            return web.Response(text=xml, content_type="application/xml")
        except Exception as exc:
            # WeChat would show the user an error page and retry; `success` ends it quietly.
            _log_failure("wechat reply failed", exc)
            return web.Response(text=SUCCESS)

    async def _read(
        self, request: web.Request, query: dict[str, str]
    ) -> tuple[BaseMessage, WeChatCrypto | None]:
        now = time.time()
        check_signature(self.token, query, now)  # before a byte of the body is read
        body = await _read_body(request)
        fields = parse_fields(body)
        crypto = None
        if query.get("encrypt_type", "raw").lower() == "aes":
            if not self.cryptos:
                raise BadRequest(400, "encrypted push, but WECHAT_AES_KEY is not set")
            xml, crypto = decrypt(self.cryptos, self.token, query, fields, now)
            fields = parse_fields(xml.encode())
        elif self.cryptos:
            # With an AES key set the account is in safe (or compatible) mode, where WeChat
            # encrypts every push. A plain one is a downgrade: `signature` alone covers only
            # the query, so a captured query string would carry any forged body.
            raise BadRequest(403, "unencrypted push refused: WECHAT_AES_KEY is set")
        else:
            try:
                xml = body.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(400, "body is not UTF-8") from None
        return parse(xml, fields), crypto

    async def _answer(self, message: BaseMessage, deadline: float) -> Outgoing | None:
        """The passive reply to send now, or None for `success`; the rest of the answer (or
        all of it, if the budget ran out) goes as customer-service messages."""
        key = dedupe_key(message)
        handling = self._inflight.get(key)
        if handling is None:
            handling = _Handling(asyncio.get_running_loop().create_future())
            self._inflight[key] = handling
            self._spawn(self._work(key, handling, message))
        handling.waiters += 1
        try:
            remaining = max(0.0, deadline - asyncio.get_running_loop().time())
            await asyncio.wait_for(asyncio.shield(handling.answer), remaining)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            if handling.answer.done() and not handling.delivered:
                handling.delivered = True
                self._spawn(self._send(message.source, handling.answer.result() or []))
            raise
        finally:
            handling.waiters -= 1
        if not handling.answer.done() or handling.delivered:
            return None  # `_work` delivers it later, or another delivery already has
        handling.delivered = True
        items = handling.answer.result() or []
        if len(items) > 1:
            self._spawn(self._send(message.source, items[1:], delay=FOLLOW_UP_DELAY_SECONDS))
        return items[0] if items else None

    async def _work(self, key: str, handling: _Handling, message: BaseMessage) -> None:
        items: list[Outgoing] | None = None
        try:
            if await self.storage.first_sighting(key):
                items = await self._respond(message)
        except Exception as exc:
            _log_failure("wechat answer failed", exc)
            items = [TextOut(SORRY)]
        finally:
            self._inflight.pop(key, None)
            if not handling.answer.done():
                handling.answer.set_result(items)
        # Synchronously after set_result: a request still waiting will wake and deliver it;
        # if none is waiting, every request has answered `success` and this must send it.
        if items and handling.waiters == 0 and not handling.delivered:
            handling.delivered = True
            await self._send(message.source, items)

    async def _respond(self, message: BaseMessage) -> list[Outgoing]:
        openid = str(message.source)
        if message.type == "text":
            return await self._ask(openid, field_text(getattr(message, "content", "")))
        if message.type == "voice" and field_text(getattr(message, "recognition", "")):
            return await self._ask(openid, field_text(message.recognition))
        if message.type == "event":
            return await self._on_event(message, openid)
        if isinstance(message, UnknownMessage) and message._data.get("MsgType") == "event":
            return []  # an event type wechatpy does not know: nothing to say
        return [TextOut(NOT_UNDERSTOOD.get(message.type, NOT_UNDERSTOOD_OTHER))]

    async def _on_event(self, message: BaseMessage, openid: str) -> list[Outgoing]:
        event = str(getattr(message, "event", ""))
        if event in ("subscribe", "subscribe_scan", "scan"):
            return await self._welcome(openid)
        if event == "unsubscribe":
            # The platform's rule and ours: an unfollow deletes everything held about them.
            await self.storage.forget_user(CHANNEL, openid)
            _LOGGER.info("wechat user %s unfollowed: data deleted", user_tag(openid))
            return []
        if event == "click":
            key = field_text(getattr(message, "key", ""))
            return (
                await self._ask(openid, key) if key.startswith("#") else await self._welcome(openid)
            )
        if event == "masssendjobfinish":
            await self._record_mass_job(message)
        return []  # VIEW, LOCATION reports, template results: no reply expected

    async def _ask(self, openid: str, text: str) -> list[Outgoing]:
        replies = await self.engine.handle(IncomingMessage(CHANNEL, openid, text[:MAX_TEXT_CHARS]))
        return plan(replies)

    async def _welcome(self, openid: str) -> list[Outgoing]:
        """The greeting and menu, and an offer to subscribe to cases unless already done."""
        replies = await self.engine.welcome(IncomingMessage(CHANNEL, openid, ""))
        buttons = [b for r in replies for b in r.buttons]
        number = next(
            (i for i, b in enumerate(buttons, 1) if b.payload == payloads.SUBSCRIBE), None
        )
        if number and not await self.storage.is_subscribed(CHANNEL, openid):
            replies = [*replies, Reply(SUBSCRIBE_OFFER.format(number=number))]
        return plan(replies)

    async def _record_mass_job(self, message: BaseMessage) -> None:
        data = message._data
        record = {
            name: field_text(data.get(field))
            for name, field in (
                ("status", "Status"),
                ("total", "TotalCount"),
                ("filtered", "FilterCount"),
                ("sent", "SentCount"),
                ("errors", "ErrorCount"),
            )
        }
        msg_id = field_text(data.get("MsgID") or data.get("MsgId"))
        await self.storage.cache_put(
            f"wechat:mass_job:{msg_id}", json.dumps(record), ttl=MASS_JOB_TTL_SECONDS
        )
        _LOGGER.info("wechat mass send %s finished: %s", msg_id, record)

    async def _send(self, openid: str, items: list[Outgoing], *, delay: float = 0.0) -> None:
        """Customer-service messages, in order; the first refusal (e.g. 45015 outside the
        48 h window, 45047 over the quota) is logged and ends the sending."""
        await asyncio.sleep(delay)
        if self.api is None:
            _LOGGER.warning(
                "wechat answer to %s dropped: WECHAT_APP_ID/WECHAT_SECRET not set",
                user_tag(openid),
            )
            return
        for item in items:
            try:
                if isinstance(item, NewsOut):
                    await self.api.send_news(
                        openid, item.title, item.description, item.url, item.picture
                    )
                else:
                    await self.api.send_text(openid, item.text)
            except WeChatAPIError as exc:
                _LOGGER.warning("wechat message to %s not sent: %s", user_tag(openid), exc.kind)
                return

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log_failure("wechat background task failed", task.exception())

    def waiting(self) -> int:
        """How many requests are now waiting for an answer in progress (WeChat's retries
        of one push count separately)."""
        return sum(h.waiters for h in self._inflight.values())

    async def wait_idle(self) -> None:
        """Return once every answer in progress and every follow-up message is done."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self, app: web.Application | None = None) -> None:
        """Finish the answers in progress (up to a grace period), then close the API client."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=SHUTDOWN_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self.api is not None:
            await self.api.close()


WEBHOOK_KEY = web.AppKey("wechat_webhook", WeChatWebhook)


def add_wechat(app: web.Application, engine: Engine, settings: Settings) -> None:
    """Register the WeChat webhook on `app` when WeChat is configured (WECHAT_TOKEN set)."""
    if not settings.wechat_token:
        return
    webhook = WeChatWebhook(engine, settings, _api(settings, engine.storage))
    app[WEBHOOK_KEY] = webhook
    app.router.add_get(WEBHOOK_PATH, webhook.verify)
    app.router.add_post(WEBHOOK_PATH, webhook.receive)
    app.on_cleanup.append(webhook.close)


def status(settings: Settings) -> str:
    """One line for `infoguard serve`: whether the webhook is on, in which mode, and why not."""
    if not settings.wechat_token:
        return "WeChat off: WECHAT_TOKEN not set"
    mode = "safe mode" if settings.wechat_aes_key else "plaintext mode (no WECHAT_AES_KEY)"
    line = f"WeChat on: webhook at {WEBHOOK_PATH}, {mode}"
    if not (settings.wechat_app_id and settings.wechat_secret):
        line += "; no customer-service messages or pushes: WECHAT_APP_ID/WECHAT_SECRET not set"
    return line


def _api(settings: Settings, storage: Storage) -> WeChatAPI | None:
    if not (settings.wechat_app_id and settings.wechat_secret):
        return None
    return _new_api(settings, storage)


def _new_api(settings: Settings, storage: Storage) -> WeChatAPI:
    return WeChatAPI(
        settings.wechat_app_id, settings.wechat_secret, storage, base_url=settings.wechat_api_base
    )


def _cryptos(settings: Settings) -> list[WeChatCrypto]:
    """The safe-mode keys, current first; a malformed key stops the server at start."""
    keys = [k for k in (settings.wechat_aes_key, settings.wechat_aes_key_previous) if k]
    if keys and not settings.wechat_app_id:
        raise ConfigError("WECHAT_AES_KEY needs WECHAT_APP_ID (safe mode checks it)")
    for key in keys:
        if not _AES_KEY.fullmatch(key):
            raise ConfigError("WECHAT_AES_KEY must be the 43-letter EncodingAESKey")
    return [WeChatCrypto(settings.wechat_token, k, settings.wechat_app_id) for k in keys]


async def _read_body(request: web.Request) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed MAX_BODY_BYTES."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise BadRequest(413, "body too large")
    body = bytearray()
    while chunk := await request.content.read(MAX_BODY_BYTES + 1):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(413, "body too large")
    if not body:
        raise BadRequest(400, "empty body")
    return bytes(body)


def user_tag(openid: str) -> str:
    """An openid as it may appear in logs: a short hash, enough to correlate lines."""
    return "u" + hashlib.sha256(openid.encode()).hexdigest()[:10]


def _refuse(exc: BadRequest) -> web.Response:
    _LOGGER.info("wechat request refused: %d %s", exc.status, exc.reason)
    return web.Response(status=exc.status, text=exc.reason)


def _log_failure(what: str, exc: BaseException | None) -> None:
    # The exception's type and stack, never its message: it could quote what the user sent.
    stack = "".join(traceback.format_tb(exc.__traceback__)) if exc else ""
    _LOGGER.error("%s: %s\n%s", what, type(exc).__name__, stack)
