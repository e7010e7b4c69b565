"""The Telegram Bot API side shared by the chat channel and the push: the Bot's construction
(quiet library logs, a configurable API base), button data within Telegram's 64-byte limit,
links to case pages, and the push `Sender`.

Every message of a bot, pushed or replied, goes through one `Throttle` per bot token in the
process: about 25 messages a second overall, evenly spaced, replies first, and a 429 holds
every send of the bot until its retry_after has passed (Telegram's flood limit is per bot).
Replies reach it through `ThrottledRateLimiter`, PTB's rate-limiter hook. The push Sender also
keeps one message a second to any chat (PTB's AIORateLimiter does not throttle a single
private chat), and claims a delivery only once its turn has come, just before the HTTP call,
so that a crash leaves uncertain only the requests on the wire. Errors become `Result`s: Forbidden
means unreachable (the push engine forgets the user), BadRequest a recorded failure, a network
error before the request left a retry; a timeout after it left is raised, so the push engine
records the delivery as uncertain instead of risking a duplicate. Neither logs nor results
carry message text or chat ids.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
import warnings
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any

import httpx
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import BaseRateLimiter
from telegram.warnings import PTBDeprecationWarning

from bot import replies as payloads
from bot.config import Settings
from bot.models import CaseCard
from bot.sender import Claim, Result, Status
from bot.storage import RateBudget, shared_rate_budget

CHANNEL = "telegram"
READ_MORE = "阅读全文"
READ_HERE = "在这里阅读"
UNSUBSCRIBE_LABEL = "退订"
PUSH_HEADING = "【以案释法】"
_LOGGER = logging.getLogger(__name__)
MAX_CALLBACK_BYTES = 64
TOKEN_PREFIX = "~"
"""Marks callback_data that stands for a payload too long for Telegram; payloads start with #."""


def quiet_library_logs() -> None:
    """Make PTB and httpx at most as talkative as we are, and never below a floor: PTB logs
    request parameters (message text) at DEBUG, httpx logs URLs holding the bot token at INFO."""
    floors = (("telegram", logging.INFO), ("httpx", logging.WARNING), ("httpcore", logging.INFO))
    for name, floor in floors:
        library = logging.getLogger(name)
        # The effective level is the CLI's now; fixing it also keeps a later --debug out.
        library.setLevel(max(floor, library.getEffectiveLevel()))


def api_urls(settings: Settings) -> dict[str, str]:
    base = settings.telegram_api_base.rstrip("/")
    return {"base_url": f"{base}/bot", "base_file_url": f"{base}/file/bot"} if base else {}


def make_bot(settings: Settings) -> Bot:
    quiet_library_logs()
    return Bot(settings.telegram_token, **api_urls(settings))


async def close_bot(bot: Bot) -> None:
    """Close the bot's connections, even when `initialize()` failed (a rejected token), where
    PTB's own `shutdown()` returns early and would leave a connection open."""
    await bot.shutdown()
    await bot.request.shutdown()


def callback_data_for(payload: str) -> str:
    """The payload itself when it fits in 64 bytes, else a stable short token standing for it."""
    if len(payload.encode()) <= MAX_CALLBACK_BYTES and not payload.startswith(TOKEN_PREFIX):
        return payload
    digest = hashlib.sha256(payload.encode()).digest()[:15]
    return TOKEN_PREFIX + base64.urlsafe_b64encode(digest).decode()


def mask_chat(chat_id: int | str) -> str:
    """A chat id fit for logs: only its last three digits."""
    return "***" + str(chat_id)[-3:]


def link_line(url: str | None) -> str:
    # Telegram refuses URL buttons to local or plain-http hosts; such links go in the text.
    return f"\n\n{READ_MORE}：{url}" if url and not url.startswith("https://") else ""


def url_row(url: str | None) -> list[list[InlineKeyboardButton]]:
    return (
        [[InlineKeyboardButton(READ_MORE, url=url)]] if url and url.startswith("https://") else []
    )


def card_message(card: CaseCard) -> tuple[str, InlineKeyboardMarkup]:
    """A pushed case: title and summary, a button to its page, one to read it here, one to stop."""
    text = f"{PUSH_HEADING}{card.title}\n\n{card.summary}{link_line(card.url)}"
    rows = [
        *url_row(card.url),
        [
            InlineKeyboardButton(
                READ_HERE, callback_data=callback_data_for(payloads.CASE + card.case_id)
            )
        ],
        [InlineKeyboardButton(UNSUBSCRIBE_LABEL, callback_data=payloads.UNSUBSCRIBE)],
    ]
    return text, InlineKeyboardMarkup(rows)


_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""httpx failures that happen before the request leaves: safe to send again."""


def _error_name(error: Exception) -> str:
    cause = error.__cause__
    return type(cause if cause is not None else error).__name__.lower()


def retry_after_seconds(error: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns that the type becomes a timedelta
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


DEFAULT_RATE = 25.0
"""Messages a second per bot: under Telegram's "about 30 messages per second" for bulk sends."""


class Throttle:
    """The pace of every message one bot sends: evenly spaced slots, at most `rate` a second;
    urgent callers (replies to a user) take free slots before others (pushes); `hold` stops
    every caller until a flood wait has passed, including those already waiting."""

    def __init__(
        self,
        rate: float = DEFAULT_RATE,
        clock: Callable[[], float] = time.monotonic,
        *,
        shared: Callable[[], RateBudget] | None = None,
    ):
        self.interval = 1.0 / rate
        self.clock = clock
        self._next_slot = 0.0
        self._held_until = 0.0
        self._urgent = 0
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._shared_factory = shared
        """Makes the budget all workers of the bot share (on Redis), if there is one."""
        self._shared: tuple[asyncio.AbstractEventLoop, RateBudget] | None = None

    async def acquire(self, *, urgent: bool = False) -> None:
        """Wait for a slot and take it. Checking and taking happen with no await between.

        Other callers queue on a lock, so only one of them at a time sleeps towards the next
        slot (no herd waking every few milliseconds); urgent ones wait beside the queue and
        take the slot first when both are due."""
        if urgent:
            self._urgent += 1
            try:
                await self._take(urgent=True)
            finally:
                self._urgent -= 1
        else:
            async with self._queue():
                await self._take(urgent=False)
        # Then a slot of the budget every worker of the bot shares, when there are several.
        shared = self._shared_budget()
        if shared is not None:
            await shared.acquire()

    def _shared_budget(self) -> RateBudget | None:
        if self._shared_factory is None:
            return None
        # One per event loop, like the lock: a Redis client belongs to the loop it was made in.
        loop = asyncio.get_running_loop()
        if self._shared is None or self._shared[0] is not loop:
            self._shared = (loop, self._shared_factory())
        return self._shared[1]

    async def _take(self, *, urgent: bool) -> None:
        while True:
            now = self.clock()
            wait = max(self._held_until, self._next_slot) - now
            if wait <= 0 and (urgent or not self._urgent):
                self._next_slot = max(now, self._next_slot) + self.interval
                return
            await asyncio.sleep(max(wait, self.interval / 2))

    def _queue(self) -> asyncio.Lock:
        # One lock per event loop: the Throttle outlives loops (tests, `asyncio.run` calls).
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock[0] is not loop:
            self._lock = (loop, asyncio.Lock())
        return self._lock[1]

    def hold(self, seconds: float) -> None:
        self._held_until = max(self._held_until, self.clock() + seconds)

    @property
    def held_for(self) -> float:
        return max(0.0, self._held_until - self.clock())


_THROTTLES: dict[str, Throttle] = {}


def throttle_for(
    token: str, rate: float = DEFAULT_RATE, settings: Settings | None = None
) -> Throttle:
    """The one Throttle of a bot token in this process (shared by replies and pushes). With
    INFOGUARD_REDIS_URL in `settings`, it also takes each slot from one budget on Redis that
    every worker of the bot shares, so that N workers together keep to `rate`."""
    key = hashlib.sha256(token.encode()).hexdigest()
    throttle = _THROTTLES.get(key)
    if throttle is None:
        shared = None
        if settings is not None and settings.redis_url:
            url, prefix = settings.redis_url, settings.redis_prefix

            def shared() -> RateBudget:
                return shared_rate_budget(f"telegram:{key[:16]}", rate, url, prefix)

        throttle = _THROTTLES[key] = Throttle(rate, shared=shared)
    return throttle


_MESSAGE_METHODS = ("send", "copy", "forward", "edit")
"""Bot API methods that put a message in a chat (sendMessage, editMessageText, ...)."""


class ThrottledRateLimiter(BaseRateLimiter[None]):
    """PTB's rate-limiter hook for replies: each message takes an (urgent) slot of the bot's
    Throttle; a 429 holds every send of the bot, then the reply is tried once more."""

    def __init__(self, throttle: Throttle, max_retries: int = 1) -> None:
        self.throttle = throttle
        self.max_retries = max_retries

    async def initialize(self) -> None:
        """Nothing to set up: the Throttle is shared and lives with the process."""

    async def shutdown(self) -> None:
        """Nothing to free."""

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Any]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: None,
    ) -> Any:
        if not endpoint.lower().startswith(_MESSAGE_METHODS):
            return await callback(*args, **kwargs)
        attempt = 0
        while True:
            await self.throttle.acquire(urgent=True)
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as error:
                self.throttle.hold(retry_after_seconds(error))
                attempt += 1
                if attempt > self.max_retries:
                    raise


class TelegramSender:
    """The push `Sender` for Telegram: one chat per call, paced by the bot's `Throttle`, one
    message per `per_chat_interval` seconds to any chat; a 429 pauses every send of the bot."""

    channel = CHANNEL
    min_batch = 1
    max_batch = 1
    idempotent = False

    def __init__(
        self,
        bot: Bot,
        *,
        throttle: Throttle | None = None,
        messages_per_second: float = DEFAULT_RATE,
        per_chat_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bot = bot
        self.throttle = throttle or Throttle(messages_per_second, clock)
        self._per_chat = per_chat_interval
        self._clock = clock
        self._chat_free: dict[int, float] = {}
        self._prune_at = 10_000
        self._ready = False
        self._ready_lock = asyncio.Lock()

    async def send(
        self, card: CaseCard, recipients: Sequence[str], *, batch_key: str, claim: Claim
    ) -> dict[str, Result]:
        text, markup = card_message(card)
        results: dict[str, Result] = {}
        for user in recipients:
            result = await self._send_one(user, text, markup, claim)
            if result is not None:
                results[user] = result
        return results

    async def aclose(self) -> None:
        """Close the HTTP connections (the push command calls this when it is done)."""
        await close_bot(self.bot)
        self._ready = False

    async def _send_one(
        self, user_id: str, text: str, markup: InlineKeyboardMarkup, claim: Claim
    ) -> Result | None:
        """One message; None when the claim refused it. Raises when it may have gone out
        unconfirmed (the push engine then records it as uncertain rather than sending twice)."""
        try:
            chat_id = int(user_id)
        except ValueError:
            return Result(Status.FAILED, detail="bad_chat_id")
        try:
            await self._initialize()
        except InvalidToken:  # nothing was sent; every other send will fail the same way
            _LOGGER.error("Telegram rejected TELEGRAM_TOKEN: no push can be delivered")
            return Result(Status.RETRY, detail="invalid_token")
        except NetworkError as error:  # getMe failed: nothing was sent
            return Result(Status.RETRY, detail=_error_name(error))
        await self._wait_turn(chat_id)
        if not await claim([user_id]):
            return None
        try:
            await self.bot.send_message(chat_id, text, reply_markup=markup)
        except RetryAfter as error:
            seconds = retry_after_seconds(error)
            self._pause(chat_id, seconds)
            return Result(Status.RETRY, seconds, "retry_after")
        except Forbidden:
            return Result(Status.UNREACHABLE, detail="forbidden")
        except BadRequest:  # before NetworkError: BadRequest subclasses it
            return Result(Status.FAILED, detail="bad_request")
        except ChatMigrated:
            return Result(Status.FAILED, detail="chat_migrated")
        except InvalidToken:  # revoked while pushing: nothing was sent
            _LOGGER.error("Telegram rejected TELEGRAM_TOKEN: no push can be delivered")
            return Result(Status.RETRY, detail="invalid_token")
        except NetworkError as error:
            if isinstance(error.__cause__, _NEVER_SENT):
                return Result(Status.RETRY, detail=_error_name(error))
            raise  # a read timeout or a dropped connection: Telegram may have delivered it
        except TelegramError as error:
            return Result(Status.FAILED, detail=_error_name(error))
        return Result(Status.SENT)

    async def _initialize(self) -> None:
        async with self._ready_lock:
            if not self._ready:
                await self.bot.initialize()
                self._ready = True

    async def _wait_turn(self, chat_id: int) -> None:
        """Sleep until this chat may receive again, then take a slot of the bot's Throttle
        (which waits out any flood hold, even one that began while this call waited)."""
        while (wait := self._chat_free.get(chat_id, 0.0) - self._clock()) > 0:
            await asyncio.sleep(wait)
        self._chat_free[chat_id] = self._clock() + self._per_chat  # before the await: in order
        await self.throttle.acquire()
        self._chat_free[chat_id] = max(self._chat_free[chat_id], self._clock() + self._per_chat)
        self._forget_idle_chats()

    def _pause(self, chat_id: int, seconds: float) -> None:
        # Telegram's flood control is per bot: nothing goes out before retry_after has passed.
        self.throttle.hold(seconds)
        resume = self._clock() + seconds
        self._chat_free[chat_id] = max(self._chat_free.get(chat_id, 0.0), resume)

    def _forget_idle_chats(self) -> None:
        # Bounded memory over 100,000 subscribers: drop chats whose interval has passed.
        if len(self._chat_free) < self._prune_at:
            return
        now = self._clock()
        self._chat_free = {c: t for c, t in self._chat_free.items() if t > now}
        self._prune_at = max(10_000, 2 * len(self._chat_free))


def build_sender(settings: Settings) -> TelegramSender | None:
    """The Telegram push sender, or None when no bot token is configured. It shares the bot's
    Throttle with the replies of this process."""
    if not settings.telegram_token:
        return None
    throttle = throttle_for(settings.telegram_token, settings.telegram_push_rate, settings)
    return TelegramSender(make_bot(settings), throttle=throttle)
