"""A fake WeChat Official Account API on 127.0.0.1 for tests and the push benchmark:
stable_token and token, customer service send, mass send by openid list (2-10,000 openids; a
clientmsgid seen before is refused with 45065 and the first msg_id, and nothing is sent), menu
creation, each checked the way WeChat checks it, with faults to inject (an errcode, an HTTP
status, a delay), once or on every call, a mass-send quota (45028 when used up), mass sends
made slow and taken one at a time (`mass_send_seconds`), a hook
called with each request after it was carried out and before it is answered, and what each
follower received."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

APP_ID = "wxfaketestappid0"
SECRET = "fake-app-secret"
TOKEN_PATHS = ("stable_token", "token")


@dataclass(frozen=True)
class Call:
    path: str
    """Under /cgi-bin/, e.g. "message/custom/send"."""
    token: str | None
    body: dict[str, Any]


@dataclass(frozen=True)
class Fault:
    """What the next call to a path meets instead of (or before) the normal answer."""

    errcode: int | None = None
    status: int = 200
    delay: float = 0.0
    late: float = 0.0
    """Seconds to wait after the call was carried out, before answering (a lost answer)."""


@dataclass
class FakeWeChatAPI:
    calls: list[Call] = field(default_factory=list)
    token: str | None = None
    """The one access token WeChat now accepts."""
    tokens_issued: int = 0
    clientmsgids: dict[str, int] = field(default_factory=dict)
    received: dict[str, list[str]] = field(default_factory=dict)
    """Per openid, the text of every message WeChat delivered to it (mass or customer service)."""
    mass_quota: int | None = None
    foreign_clientmsgids: int = 0
    """The next this many new clientmsgids are answered 45065, as if another sender had used
    them (nothing is delivered)."""
    """Mass sends still accepted before 45028 (no quota left); None: unlimited."""
    mass_send_seconds: float = 0.0
    """Each mass send waits its turn, one at a time, then this long before it is carried out
    (a slow WeChat, so that a push can be killed in the middle); 0, the default: at once, all
    together. A call whose client hangs up meanwhile is cancelled by the server, so it is not
    carried out."""
    on_call: Callable[[Call], Awaitable[None]] | None = None
    """Awaited with each call once it was carried out, before it is answered (e.g. to kill
    the client then: the message went out, the answer is lost)."""
    _once: dict[str, deque[Fault]] = field(default_factory=lambda: defaultdict(deque))
    _always: dict[str, Fault] = field(default_factory=dict)
    _server: TestServer | None = None
    _mass_turn: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("")).rstrip("/")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/cgi-bin/{path:.+}", self._handle)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        return self.base_url

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()

    def fail(self, path: str, *faults: Fault) -> None:
        """The next calls to `path` meet these faults, one each, in order."""
        self._once[path].extend(faults)

    def fail_always(self, path: str, fault: Fault | None) -> None:
        if fault is None:
            self._always.pop(path, None)
        else:
            self._always[path] = fault

    def calls_to(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == path]

    def token_fetches(self) -> int:
        return sum(len(self.calls_to(p)) for p in TOKEN_PATHS)

    async def wait_for(self, path: str, count: int, *, timeout: float = 10.0) -> list[Call]:
        """The calls to `path` once there are at least `count` (fails the test on timeout)."""
        async with asyncio.timeout(timeout):
            while len(self.calls_to(path)) < count:
                await asyncio.sleep(0.01)
        return self.calls_to(path)

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return _answer(47001, "data format error")
        call = Call(path, request.query.get("access_token"), body)
        self.calls.append(call)
        if path == "message/mass/send" and self.mass_send_seconds > 0:
            async with self._mass_turn:
                await asyncio.sleep(self.mass_send_seconds)
                answer = await self._carry_out(request, path, raw, body)
        else:
            answer = await self._carry_out(request, path, raw, body)
        if self.on_call is not None:
            await self.on_call(call)
        return answer

    async def _carry_out(
        self, request: web.Request, path: str, raw: bytes, body: dict[str, Any]
    ) -> web.Response:
        fault = self._once[path].popleft() if self._once[path] else self._always.get(path)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status != 200:
                return web.Response(status=fault.status, text="upstream error")
            if fault.errcode is not None:
                return _answer(fault.errcode, "injected")
        if path in TOKEN_PATHS:
            return self._issue_token(request, body)
        if request.query.get("access_token") != self.token or self.token is None:
            return _answer(40001, "invalid credential, access_token is invalid or not latest")
        if b"\\u" in raw:
            return _answer(40033, "invalid charset. please check your request")
        handler = {
            "message/custom/send": self._custom_send,
            "message/mass/send": self._mass_send,
            "menu/create": self._menu_create,
        }.get(path)
        answer = handler(body) if handler else _answer(40066, "invalid url")
        if fault is not None and fault.late:
            await asyncio.sleep(fault.late)
        return answer

    def _issue_token(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        appid = body.get("appid") or request.query.get("appid")
        secret = body.get("secret") or request.query.get("secret")
        if appid != APP_ID or secret != SECRET:
            return _answer(40125, "invalid appsecret")
        if self.token is None or body.get("force_refresh"):
            self.tokens_issued += 1
            self.token = f"TOKEN_{self.tokens_issued}"
        return web.json_response({"access_token": self.token, "expires_in": 7200})

    def _custom_send(self, body: dict[str, Any]) -> web.Response:
        kind = body.get("msgtype")
        if not body.get("touser") or kind not in ("text", "news"):
            return _answer(40008, "invalid message type")
        if kind == "text" and not body.get("text", {}).get("content"):
            return _answer(44004, "empty content")
        if kind == "news" and len(body.get("news", {}).get("articles", [])) != 1:
            return _answer(45008, "article size out of limit")
        text = body["text"]["content"] if kind == "text" else body["news"]["articles"][0]["title"]
        self.received.setdefault(str(body["touser"]), []).append(text)
        return _answer(0, "ok")

    def _mass_send(self, body: dict[str, Any]) -> web.Response:
        touser = body.get("touser")
        if not isinstance(touser, list) or not 2 <= len(touser) <= 10_000:
            return _answer(40032, "invalid openid list size")
        clientmsgid = str(body.get("clientmsgid", ""))
        if len(clientmsgid.encode()) > 64:
            return _answer(45067, "clientmsgid size out of limit")
        if self.foreign_clientmsgids > 0 and clientmsgid not in self.clientmsgids:
            self.foreign_clientmsgids -= 1
            self.clientmsgids[clientmsgid] = 1
        if clientmsgid in self.clientmsgids:
            return web.json_response(
                {
                    "errcode": 45065,
                    "errmsg": "clientmsgid exist",
                    "msg_id": self.clientmsgids[clientmsgid],
                }
            )
        if self.mass_quota is not None:
            if self.mass_quota <= 0:
                return _answer(45028, "has no masssend quota")
            self.mass_quota -= 1
        msg_id = 1000 + len(self.clientmsgids)
        self.clientmsgids[clientmsgid] = msg_id
        text = str(body.get("text", {}).get("content", ""))
        for openid in dict.fromkeys(touser):
            self.received.setdefault(str(openid), []).append(text)
        return web.json_response(
            {"errcode": 0, "errmsg": "send job submission success", "msg_id": msg_id}
        )

    def _menu_create(self, body: dict[str, Any]) -> web.Response:
        buttons = body.get("button")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            return _answer(40017, "invalid button size")
        return _answer(0, "ok")


def _answer(errcode: int, errmsg: str) -> web.Response:
    # WeChat answers errors with HTTP 200 and a JSON body (often typed text/plain).
    return web.Response(
        text=json.dumps({"errcode": errcode, "errmsg": errmsg}), content_type="text/plain"
    )
