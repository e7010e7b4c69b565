"""A fake Telegram Bot API on 127.0.0.1 for offline end-to-end tests of the Telegram channel.

It speaks the real wire format (PTB posts form data: strings raw, everything else as JSON
text), records every call with the time it arrived and what each chat received, queues updates
for long polling, and can answer a given chat with injected errors (403 Forbidden, 429 with
retry_after, 400) or late, or call a hook with each request before answering it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "123456789:TEST-token_for-the-fake-api"
BOT_USER = {
    "id": 123456789,
    "is_bot": True,
    "first_name": "InfoGuard",
    "username": "infoguard_test_bot",
    "can_join_groups": False,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}
_JSON_KEYS = {"chat_id", "user_id", "message_id", "offset", "limit", "timeout"}
LONG_POLL_CAP_SECONDS = 2.0


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float
    """time.monotonic() when the request arrived."""


def error(status: int, description: str, **parameters: Any) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return status, body


def forbidden() -> tuple[int, dict[str, Any]]:
    return error(403, "Forbidden: bot was blocked by the user")


def flood(retry_after: int) -> tuple[int, dict[str, Any]]:
    return error(429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after)


def bad_request(description: str = "Bad Request: chat not found") -> tuple[int, dict[str, Any]]:
    return error(400, description)


@dataclass
class FakeTelegramAPI:
    """`await api.start()`, point PTB at `api.base_url`, then push updates and read `calls`."""

    calls: list[Call] = field(default_factory=list)
    failures: dict[int, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    """Per chat id, errors to answer its next calls with (popped one per call)."""
    delays: dict[int, float] = field(default_factory=dict)
    """Per chat id, seconds to wait before answering (after recording the call)."""
    webhook: dict[str, Any] | None = None
    received: dict[int, list[str]] = field(default_factory=dict)
    """Per chat id, the text of every message delivered to it (sendMessage answered ok)."""
    on_call: Callable[[Call], Awaitable[None]] | None = None
    """Awaited with each call once it was carried out, before it is answered (e.g. to kill
    the client then: the message went out, the answer is lost)."""
    commands: list[dict[str, Any]] = field(default_factory=list)
    _updates: list[dict[str, Any]] = field(default_factory=list)
    _new_update: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    base_url: str = ""

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._dispatch)
        # Do not wait for an abandoned long poll at shutdown; no access log (URLs hold the token).
        self._runner = web.AppRunner(app, shutdown_timeout=0.05, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- what a user does -----------------------------------------------------------------

    def user_says(self, chat_id: int, text: str) -> dict[str, Any]:
        """Queue a private text message; a leading /command gets its bot_command entity."""
        message = self._user_message(chat_id, text)
        if text.startswith("/"):
            length = len(text.split()[0])
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
        return self.push_update({"message": message})

    def user_presses(self, chat_id: int, callback_data: str) -> dict[str, Any]:
        """Queue a press on an inline button whose callback_data is given."""
        query = {
            "id": f"cq{next(self._ids)}",
            "from": self._user(chat_id),
            "chat_instance": f"ci{chat_id}",
            "data": callback_data,
            "message": {
                "message_id": next(self._ids),
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"},
                "from": BOT_USER,
                "text": "…",
            },
        }
        return self.push_update({"callback_query": query})

    def user_blocks_bot(self, chat_id: int) -> dict[str, Any]:
        member = {"user": BOT_USER, "status": "member"}
        change = {
            "chat": {"id": chat_id, "type": "private"},
            "from": self._user(chat_id),
            "date": int(time.time()),
            "old_chat_member": member,
            "new_chat_member": {**member, "status": "kicked", "until_date": 0},
        }
        return self.push_update({"my_chat_member": change})

    def push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": next(self._ids), **update}
        self._updates.append(update)
        self._new_update.set()
        return update

    # --- what the tests read --------------------------------------------------------------

    def calls_to(self, method: str, chat_id: int | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.method == method and (chat_id is None or c.params.get("chat_id") == chat_id)
        ]

    def sent(self, chat_id: int) -> list[dict[str, Any]]:
        """The sendMessage parameters addressed to a chat, in order."""
        return [c.params for c in self.calls_to("sendMessage", chat_id)]

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                methods = [c.method for c in self.calls]
                raise AssertionError(f"condition not met; calls were {methods}")
            await asyncio.sleep(0.01)

    async def wait_sent(self, chat_id: int, count: int, timeout: float = 5.0) -> None:
        await self.wait_until(lambda: len(self.sent(chat_id)) >= count, timeout)

    # --- the API --------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.Response:
        params: dict[str, Any] = {}
        for key, value in (await request.post()).items():
            if isinstance(value, str) and (value[:1] in "[{" or key in _JSON_KEYS):
                try:
                    params[key] = json.loads(value)
                    continue
                except ValueError:
                    pass
            params[key] = value
        method = request.match_info["method"]
        if request.match_info["token"] != TOKEN:
            return web.json_response(error(401, "Unauthorized")[1], status=401)
        call = Call(method, params, time.monotonic())
        self.calls.append(call)
        answer = await self._carry_out(call, request)
        if self.on_call is not None:
            await self.on_call(call)
        return answer

    async def _carry_out(self, call: Call, request: web.Request) -> web.Response:
        params, method = call.params, call.method
        if params.get("chat_id") in self.delays:
            await asyncio.sleep(self.delays[params["chat_id"]])
        queued = self.failures.get(params.get("chat_id"))  # type: ignore[arg-type]
        if queued:
            status, body = queued.pop(0)
            return web.json_response(body, status=status)
        handler = getattr(self, "_m_" + method, None)
        if handler is None:  # PTB reports a 404 as InvalidToken
            return web.json_response(error(404, "Not Found")[1], status=404)
        return web.json_response({"ok": True, "result": await handler(params)})

    async def _m_getMe(self, p: dict[str, Any]) -> Any:
        return BOT_USER

    async def _m_setMyCommands(self, p: dict[str, Any]) -> Any:
        self.commands = p["commands"]
        return True

    async def _m_setWebhook(self, p: dict[str, Any]) -> Any:
        self.webhook = p
        return True

    async def _m_deleteWebhook(self, p: dict[str, Any]) -> Any:
        self.webhook = None
        return True

    async def _m_getWebhookInfo(self, p: dict[str, Any]) -> Any:
        url = (self.webhook or {}).get("url", "")
        return {"url": url, "has_custom_certificate": False, "pending_update_count": 0}

    async def _m_getUpdates(self, p: dict[str, Any]) -> Any:
        offset = int(p.get("offset") or 0)
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if not self._updates and float(p.get("timeout") or 0) > 0:
            self._new_update.clear()
            wait = min(float(p["timeout"]), LONG_POLL_CAP_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_update.wait(), wait)
        return self._updates[: int(p.get("limit") or 100)]

    async def _m_sendMessage(self, p: dict[str, Any]) -> Any:
        self.received.setdefault(int(p["chat_id"]), []).append(str(p["text"]))
        return self._bot_message(p["chat_id"], p["text"])

    async def _m_editMessageText(self, p: dict[str, Any]) -> Any:
        return {**self._bot_message(p["chat_id"], p["text"]), "message_id": p["message_id"]}

    async def _m_editMessageReplyMarkup(self, p: dict[str, Any]) -> Any:
        return {**self._bot_message(p["chat_id"], "…"), "message_id": p["message_id"]}

    async def _m_answerCallbackQuery(self, p: dict[str, Any]) -> Any:
        return True

    # --- helpers --------------------------------------------------------------------------

    @staticmethod
    def _user(chat_id: int) -> dict[str, Any]:
        return {"id": chat_id, "is_bot": False, "first_name": "测试", "language_code": "zh-hans"}

    def _user_message(self, chat_id: int, text: str) -> dict[str, Any]:
        return {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private", "first_name": "测试"},
            "from": self._user(chat_id),
            "text": text,
        }

    def _bot_message(self, chat_id: int, text: str) -> dict[str, Any]:
        return {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private"},
            "from": BOT_USER,
            "text": text,
        }


def buttons(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The inline buttons of a sendMessage call, row by row flattened."""
    markup = params.get("reply_markup") or {}
    return [b for row in markup.get("inline_keyboard", []) for b in row]
