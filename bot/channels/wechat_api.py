"""The WeChat Official Account API client (token, customer-service send, menu, mass send) and
the push `Sender` built on it.

Why our own small aiohttp client rather than wrapping wechatpy's `WeChatClient` (research
../shared/research/wechat.md §2.3): wechatpy's client is synchronous (every call would need a
thread), recurses without bound on a persistent 40001, fetches tokens from a hard-coded host
ignoring its timeout, sends the obsolete `group_id` for mass send, and has no way to share
one refresh between workers. The calls we need are five small JSON POSTs; owning them gives
a non-blocking client with a configurable base URL, a token shared through `Storage`, and an
explicit retry policy:

* 40001/40014/42001 (token rejected): refresh the token once, retry once; never loop.
* -1 (system busy), HTTP 5xx and network errors: retried with backoff, at most
  `max_attempts` times, and only for idempotent calls (mass send under one clientmsgid, menu):
  a customer-service message that may have gone out is not sent twice. A connection that
  never opened is retried for any call.
* Everything else (45015 outside the 48 h window, 45047 quota, 43004 not a follower, 45009
  daily quota, ...) is an outcome, raised once as `WeChatAPIError` for the caller to record.

Tokens come from `stable_token` (normal mode does not invalidate the token other workers
hold); a forced refresh after a rejection happens at most once per 30 s across all workers,
through a storage lease. Nothing here logs a token, a secret, message text or a full openid.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

from bot.config import Settings
from bot.models import CaseCard
from bot.sender import Claim, Result, Status
from bot.storage import Storage

_LOGGER = logging.getLogger(__name__)

API_TIMEOUT_SECONDS = 10.0
MAX_ATTEMPTS = 3
BACKOFF_SECONDS = 0.5
TOKEN_EARLY_RENEWAL_SECONDS = 300
"""Renew this long before expiry; stable_token hands out a fresh token in its last 5 min."""
FORCED_REFRESH_INTERVAL_SECONDS = 30
"""WeChat allows a forced stable_token refresh at most every 30 s (and 20 times a day)."""
TOKEN_WAIT_POLLS = 10
TOKEN_WAIT_SECONDS = 0.3
MASS_SEND_MIN, MASS_SEND_MAX = 2, 10_000
CLIENTMSGID_MAX = 64
MASS_RECORD_TTL_SECONDS = 30 * 24 * 3600

TOKEN_REJECTED = frozenset({40001, 40014, 42001})
SYSTEM_BUSY = -1
DUPLICATE_CLIENTMSGID = 45065
NO_MASS_QUOTA = 45028
"""No mass-send quota left (the account's, or the users' 4 a month): try at the next push."""
_UNREACHABLE = frozenset({40003, 43004, 43019, 43101, 45015, 48002})
_RETRY_AFTER = {
    None: 60.0,  # network error or timeout
    SYSTEM_BUSY: 60.0,
    45009: 6 * 3600.0,  # daily API quota used up
    45011: 60.0,  # per-minute rate limit
    45047: 24 * 3600.0,  # customer-service quota used up
    45066: 60.0,  # same clientmsgid retried too fast
}


class WeChatAPIError(Exception):
    """A call that did not succeed: `errcode` is WeChat's code, None for a transport failure
    (`kind` then names it: "connect", "timeout", "network", "http_503", "bad_response")."""

    def __init__(
        self,
        errcode: int | None,
        kind: str = "",
        data: dict[str, Any] | None = None,
        attempts: int = 1,
    ) -> None:
        self.errcode = errcode
        self.kind = kind or f"errcode:{errcode}"
        self.data = data or {}
        """WeChat's whole answer, e.g. the first msg_id with a 45065."""
        self.attempts = attempts
        """HTTP attempts the call made: after more than one, an earlier may have arrived."""
        super().__init__(self.kind)


class WeChatAPI:
    """The API calls the bot makes; use as `async with WeChatAPI(...) as api:` or call
    `close()`. Safe to share between coroutines."""

    def __init__(
        self,
        app_id: str,
        secret: str,
        storage: Storage,
        *,
        base_url: str = "https://api.weixin.qq.com",
        timeout: float = API_TIMEOUT_SECONDS,
        max_attempts: int = MAX_ATTEMPTS,
        backoff: float = BACKOFF_SECONDS,
    ) -> None:
        self.app_id = app_id
        self._secret = secret
        self.storage = storage
        self.base_url = base_url.rstrip("/") + "/cgi-bin/"
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self._token_key = f"wechat:access_token:{app_id}"
        self._lease_key = f"wechat:token_refresh:{app_id}"
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"WeChatAPI(app_id={self.app_id!r}, base_url={self.base_url!r})"

    async def __aenter__(self) -> WeChatAPI:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the calls ---------------------------------------------------------------------------

    async def send_text(self, openid: str, text: str) -> None:
        """A customer-service text message (allowed within 48 h of the user's message)."""
        payload = {"touser": openid, "msgtype": "text", "text": {"content": text}}
        await self.call("message/custom/send", payload, idempotent=False)

    async def send_news(
        self, openid: str, title: str, description: str, url: str, picture: str = ""
    ) -> None:
        """A customer-service news card with one article."""
        article = {"title": title, "description": description, "url": url, "picurl": picture}
        payload = {"touser": openid, "msgtype": "news", "news": {"articles": [article]}}
        await self.call("message/custom/send", payload, idempotent=False)

    async def create_menu(self, menu: dict[str, Any]) -> None:
        """Replace the custom menu (`{"button": [...]}`)."""
        await self.call("menu/create", menu, idempotent=True)

    async def mass_send_text(
        self, openids: Sequence[str], text: str, clientmsgid: str, *, repeat: bool = False
    ) -> tuple[int, bool]:
        """Mass send a text to 2-10,000 followers; returns (msg_id, duplicate). A repeated
        clientmsgid within 24 h is not sent again: WeChat answers 45065 with the first msg_id.
        That is our own earlier send, and counts as sent, only when `repeat` (the caller may
        have sent this clientmsgid before) or when this call itself had to try again; any
        other 45065 is raised. The job's result arrives later as a MASSSENDJOBFINISH event."""
        if not MASS_SEND_MIN <= len(openids) <= MASS_SEND_MAX:
            raise ValueError(f"mass send takes {MASS_SEND_MIN}-{MASS_SEND_MAX} openids")
        if not 0 < len(clientmsgid.encode()) <= CLIENTMSGID_MAX:
            raise ValueError(f"clientmsgid must be 1-{CLIENTMSGID_MAX} bytes")
        payload = {
            "touser": list(openids),
            "msgtype": "text",
            "text": {"content": text},
            "clientmsgid": clientmsgid,
        }
        try:
            # A repeat's 45065 is expected: not worth a warning in the log.
            quiet = frozenset({DUPLICATE_CLIENTMSGID}) if repeat else frozenset()
            data = await self.call("message/mass/send", payload, idempotent=True, quiet=quiet)
        except WeChatAPIError as exc:
            if exc.errcode != DUPLICATE_CLIENTMSGID or not (repeat or exc.attempts > 1):
                raise
            return int(exc.data.get("msg_id", 0) or 0), True
        return int(data.get("msg_id", 0) or 0), False

    # -- the machinery -----------------------------------------------------------------------

    async def call(
        self,
        path: str,
        payload: dict[str, Any],
        *,
        idempotent: bool,
        quiet: frozenset[int] = frozenset(),
    ) -> dict[str, Any]:
        """POST `payload` to /cgi-bin/`path` with the access token, under the retry policy in
        the module docstring; returns the JSON answer or raises WeChatAPIError (logged as a
        warning unless its errcode is one of `quiet`, which the caller expects)."""
        token = await self.access_token()
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            try:
                data = await self._post(path, payload, {"access_token": token})
            except WeChatAPIError as exc:
                # "connect": nothing reached WeChat, so even a non-idempotent call may repeat.
                if attempt < self.max_attempts and (idempotent or exc.kind == "connect"):
                    await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                _LOGGER.warning("wechat %s failed: %s", path, exc.kind)
                exc.attempts = attempt
                raise
            code = _errcode(data)
            if code == 0:
                return data
            if code in TOKEN_REJECTED and not refreshed:
                refreshed = True
                token = await self._refresh_rejected(token)
                continue
            # -1 may come after WeChat acted: only a call safe to repeat is tried again.
            if code == SYSTEM_BUSY and idempotent and attempt < self.max_attempts:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            level = logging.DEBUG if code in quiet else logging.WARNING
            _LOGGER.log(level, "wechat %s answered errcode %s", path, code)
            raise WeChatAPIError(code, data=data, attempts=attempt)

    async def access_token(self) -> str:
        """The shared access token: from storage, else fetched once for all coroutines."""
        cached = await self.storage.cache_get(self._token_key)
        if cached:
            return cached
        async with self._lock:
            cached = await self.storage.cache_get(self._token_key)  # fetched while we waited?
            return cached or await self._fetch_token(force=False)

    async def _refresh_rejected(self, rejected: str) -> str:
        """A token after WeChat rejected `rejected`: whoever refreshed first wins, and a forced
        refresh happens at most once per FORCED_REFRESH_INTERVAL_SECONDS across workers."""
        async with self._lock:
            cached = await self.storage.cache_get(self._token_key)
            if cached and cached != rejected:
                return cached
            if await self.storage.first_sighting(
                self._lease_key, ttl=FORCED_REFRESH_INTERVAL_SECONDS
            ):
                return await self._fetch_token(force=True)
            # Another worker holds the lease: its new token will appear in storage, or not.
            for _ in range(TOKEN_WAIT_POLLS):
                await asyncio.sleep(TOKEN_WAIT_SECONDS)
                cached = await self.storage.cache_get(self._token_key)
                if cached and cached != rejected:
                    return cached
            raise WeChatAPIError(40001, "token_refresh_exhausted")

    async def _fetch_token(self, *, force: bool) -> str:
        body = {
            "grant_type": "client_credential",
            "appid": self.app_id,
            "secret": self._secret,
            "force_refresh": force,
        }
        data = await self._post("stable_token", body, {})
        token = data.get("access_token")
        if _errcode(data) or not isinstance(token, str) or not token:
            _LOGGER.error("wechat token fetch failed: errcode %s", _errcode(data))
            raise WeChatAPIError(_errcode(data) or None, "token_fetch_failed")
        expires_in = float(data.get("expires_in") or 7200)
        ttl = max(60.0, expires_in - TOKEN_EARLY_RENEWAL_SECONDS)
        await self.storage.cache_put(self._token_key, token, ttl=ttl)
        _LOGGER.info("wechat access token fetched (forced=%s)", force)
        return token

    async def _post(self, path: str, payload: dict[str, Any], params: dict[str, str]) -> Any:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        # ensure_ascii=False: WeChat refuses \uXXXX escapes in text (40033).
        body = json.dumps(payload, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8"}
        try:
            async with self._session.post(
                self.base_url + path, data=body, params=params, headers=headers
            ) as resp:
                if resp.status >= 400:
                    raise WeChatAPIError(None, f"http_{resp.status}")
                raw = await resp.read()
        except TimeoutError:
            raise WeChatAPIError(None, "timeout") from None
        except aiohttp.ClientConnectorError:
            raise WeChatAPIError(None, "connect") from None
        except aiohttp.ClientError:
            # Never the exception's text: aiohttp puts the URL, token included, into it.
            raise WeChatAPIError(None, "network") from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise WeChatAPIError(None, "bad_response") from None
        if not isinstance(data, dict):
            raise WeChatAPIError(None, "bad_response")
        return data


def _errcode(data: dict[str, Any]) -> int:
    try:
        return int(data.get("errcode") or 0)
    except (TypeError, ValueError):
        return SYSTEM_BUSY


def result_for(error: WeChatAPIError) -> Result:
    """A failed send as the push ledger's outcome."""
    if error.errcode in _UNREACHABLE:
        return Result(Status.UNREACHABLE, detail=error.kind)
    if error.errcode in _RETRY_AFTER:
        return Result(Status.RETRY, retry_after=_RETRY_AFTER[error.errcode], detail=error.kind)
    if error.errcode in TOKEN_REJECTED:
        return Result(Status.RETRY, retry_after=60.0, detail=error.kind)
    return Result(Status.FAILED, detail=error.kind)


def clientmsgid_for(batch_key: str) -> str:
    """A clientmsgid (≤ 64 bytes) that is the same every time for the same batch."""
    return "ig-" + hashlib.sha256(batch_key.encode()).hexdigest()[:48]


def push_text(card: CaseCard) -> str:
    """A case as a pushed text: mass send of news needs a draft's media_id, text does not."""
    link = f"\n\n阅读全文：{card.url}" if card.url else ""
    return f"【以案释法】{card.title}\n\n{card.summary}{link}\n\n回复“退订”可取消推送。"


@dataclass
class WeChatSender:
    """The push engine's `Sender` for WeChat: one mass send per batch of 2-10,000 followers.

    Mass send by openid list is the only idempotent path (a repeated clientmsgid is dropped
    within 24 h) and the only one meant for unsolicited pushes; a customer-service message is
    neither (and reaches only users who wrote within 48 h). So a batch is never smaller than
    two: the push engine holds back a follower alone on their case until a later push can
    pair them (`min_batch`), and if a batch shrinks to one at its claim (the other
    unsubscribed meanwhile) it is DEFERRED, not sent another way. A quota refusal (45009,
    45028) is DEFERRED to the next push too.
    """

    api_factory: Callable[[], WeChatAPI]
    storage: Storage
    channel: str = "wechat"
    min_batch: int = MASS_SEND_MIN
    max_batch: int = MASS_SEND_MAX
    idempotent: bool = True

    async def send(
        self, card: CaseCard, recipients: Sequence[str], *, batch_key: str, claim: Claim
    ) -> dict[str, Result]:
        openids = list(dict.fromkeys(recipients))
        if len(openids) > self.max_batch:
            raise ValueError(f"a WeChat batch holds at most {self.max_batch} recipients")
        alone = Result(Status.DEFERRED, detail="lone_recipient")
        if len(openids) < self.min_batch:
            return {o: alone for o in openids}
        clientmsgid = clientmsgid_for(batch_key)
        async with self.api_factory() as api:
            await api.access_token()  # before the claim: the claim is the last step before sending
            openids = await claim(openids)
            if len(openids) < self.min_batch:
                return {o: alone for o in openids}
            try:
                msg_id, duplicate = await api.mass_send_text(
                    openids, push_text(card), clientmsgid, repeat=claim.repeat
                )
            except WeChatAPIError as exc:
                outcome = _mass_result(exc)
                return {o: outcome for o in openids}
        record = {"clientmsgid": clientmsgid, "case": card.case_id, "recipients": len(openids)}
        await self.storage.cache_put(
            f"wechat:mass:{msg_id}", json.dumps(record), ttl=MASS_RECORD_TTL_SECONDS
        )
        _LOGGER.info(
            "wechat mass send msg_id=%s recipients=%d duplicate=%s", msg_id, len(openids), duplicate
        )
        sent = Result(Status.SENT, detail="duplicate" if duplicate else "")
        return {o: sent for o in openids}


def _mass_result(error: WeChatAPIError) -> Result:
    if error.errcode == DUPLICATE_CLIENTMSGID:
        # Not our earlier send (see mass_send_text): nothing of ours went out under it.
        return Result(Status.DEFERRED, detail="clientmsgid_not_ours")
    if error.errcode in (NO_MASS_QUOTA, 45009):
        return Result(Status.DEFERRED, detail=error.kind)
    return result_for(error)


def build_sender(settings: Settings, storage: Storage) -> WeChatSender | None:
    """The WeChat push sender, or None when WECHAT_APP_ID/WECHAT_SECRET are not set."""
    if not (settings.wechat_app_id and settings.wechat_secret):
        return None

    def new_api() -> WeChatAPI:
        return WeChatAPI(
            settings.wechat_app_id,
            settings.wechat_secret,
            storage,
            base_url=settings.wechat_api_base,
        )

    return WeChatSender(new_api, storage)
