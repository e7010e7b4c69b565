"""The Telegram Bot API side shared by the chat channel and the push: the Bot's construction
(quiet library logs, a configurable API base), button data within Telegram's 64-byte limit,
links to case pages, and the push `Sender`.

The Sender sends one chat per call, about 25 messages a second overall and one a second to any
chat (PTB's AIORateLimiter does not throttle a single private chat, so the pacing is done
here); a 429 holds every send back for its retry_after. Errors become `Result`s: Forbidden
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
from collections.abc import Callable, Sequence
from datetime import timedelta

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
from telegram.warnings import PTBDeprecationWarning

from bot import replies as payloads
from bot.config import Settings
from bot.models import CaseCard
from bot.sender import Result, Status

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


class TelegramSender:
    """The push `Sender` for Telegram: one chat per call, at most `messages_per_second` overall
    and one message per `per_chat_interval` seconds to any chat; a 429 pauses every send."""

    channel = CHANNEL
    max_batch = 1
    idempotent = False

    def __init__(
        self,
        bot: Bot,
        *,
        messages_per_second: float = 25.0,
        per_chat_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bot = bot
        self._interval = 1.0 / messages_per_second
        self._per_chat = per_chat_interval
        self._clock = clock
        self._next_slot = 0.0
        self._chat_free: dict[int, float] = {}
        self._prune_at = 10_000
        self._ready = False
        self._ready_lock = asyncio.Lock()

    async def send(
        self, card: CaseCard, recipients: Sequence[str], *, batch_key: str
    ) -> dict[str, Result]:
        text, markup = card_message(card)
        return {user: await self._send_one(user, text, markup) for user in recipients}

    async def aclose(self) -> None:
        """Close the HTTP connections (the push command calls this when it is done)."""
        await close_bot(self.bot)
        self._ready = False

    async def _send_one(self, user_id: str, text: str, markup: InlineKeyboardMarkup) -> Result:
        """One message; raises when it may have gone out unconfirmed (the push engine then
        records it as uncertain rather than sending it twice)."""
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
        """Sleep until this chat may receive again and an overall slot is free, then take both.

        Checking and taking happen with no await between them, so concurrent sends to one chat
        queue up one per interval."""
        while (wait := self._chat_free.get(chat_id, 0.0) - self._clock()) > 0:
            await asyncio.sleep(wait)
        slot = max(self._clock(), self._next_slot)
        self._next_slot = slot + self._interval
        self._chat_free[chat_id] = slot + self._per_chat
        self._forget_idle_chats()
        if (delay := slot - self._clock()) > 0:
            await asyncio.sleep(delay)

    def _pause(self, chat_id: int, seconds: float) -> None:
        # Telegram's flood control is per bot: nothing goes out before retry_after has passed.
        resume = self._clock() + seconds
        self._next_slot = max(self._next_slot, resume)
        self._chat_free[chat_id] = max(self._chat_free.get(chat_id, 0.0), resume)

    def _forget_idle_chats(self) -> None:
        # Bounded memory over 100,000 subscribers: drop chats whose interval has passed.
        if len(self._chat_free) < self._prune_at:
            return
        now = self._clock()
        self._chat_free = {c: t for c, t in self._chat_free.items() if t > now}
        self._prune_at = max(10_000, 2 * len(self._chat_free))


def build_sender(settings: Settings) -> TelegramSender | None:
    """The Telegram push sender, or None when no bot token is configured."""
    return TelegramSender(make_bot(settings)) if settings.telegram_token else None
