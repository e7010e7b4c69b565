"""Telegram channel: translates between the Telegram Bot API (python-telegram-bot 22) and the core.

It owns the PTB Application and its lifecycle inside our aiohttp server (webhook mode, with the
secret-token header checked) or on its own (long polling), the commands, and the rendering of
replies as plain text with inline keyboards. The push `Sender` lives in `telegram_api`;
`build_sender` is re-exported here. Conversation state lives in the engine's storage, never
in PTB: no ConversationHandler and no PTB persistence. Nothing here logs message text or
full chat ids.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from telegram import (
    Bot,
    BotCommand,
    Chat,
    ChatMember,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Update,
)
from telegram.error import Forbidden
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BaseUpdateProcessor,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot import replies as payloads
from bot.channels.telegram_api import (
    CHANNEL,
    TOKEN_PREFIX,
    ThrottledRateLimiter,
    api_urls,
    callback_data_for,
    close_bot,
    link_line,
    mask_chat,
    quiet_library_logs,
    throttle_for,
    url_row,
)
from bot.channels.telegram_api import build_sender as build_sender  # the push CLI imports it here
from bot.config import Settings
from bot.engine import Engine
from bot.errors import ConfigError
from bot.models import IncomingMessage, Reply
from bot.storage import Storage
from bot.text import readable

WEBHOOK_PATH = "/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALLOWED_UPDATES = ["message", "callback_query", "my_chat_member"]
APPLICATION_KEY = web.AppKey("telegram_application", Application)
"""Where `add_telegram` leaves the PTB Application on the aiohttp app (for tests and tools)."""

COMMANDS: dict[str, str] = {
    # Telegram's command menu; /start is the engine's welcome, the others payloads it knows.
    "start": "开始使用",
    "help": "我能帮您做什么",
    "report": "一步步准备报案",
    "cases": "典型案例（以案释法）",
    "subscribe": "订阅案例推送",
    "unsubscribe": "退订并删除数据",
    "privacy": "我们保存哪些数据",
}
COMMAND_PAYLOADS = {
    "help": payloads.ENTRY + "about",
    "report": payloads.REPORT.rstrip(":"),
    "cases": payloads.CASES_PAGE + "1",
    "subscribe": payloads.SUBSCRIBE,
    "unsubscribe": payloads.UNSUBSCRIBE,
    "privacy": payloads.ENTRY + "privacy",
}
DEEP_LINK_CASE = "case_"
"""t.me/<bot>?start=case_<id> opens a case; other start parameters name a command."""

BUTTON_EXPIRED = "这个按钮已失效，请重新选择。"

MAX_TEXT_CHARS = 4096
BUTTON_TTL_SECONDS = 180 * 24 * 3600
_BUTTON_CACHE = "telegram:button:"
_SECRET_FORMAT = re.compile(r"[A-Za-z0-9_-]{1,256}")
_LOGGER = logging.getLogger(__name__)


# --- rendering ----------------------------------------------------------------------------


def split_text(text: str, limit: int = MAX_TEXT_CHARS) -> list[str]:
    """Chunks within Telegram's message limit, cut at newlines where possible."""
    chunks: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        cut = cut if cut > limit // 2 else limit
        chunks.append(text[:cut])
        text = text[cut:].lstrip("\n")
    return [*chunks, text]


class ButtonCodec:
    """Maps button payloads to callback_data and back; long payloads are remembered in our
    storage (not in PTB) or recognised among the content's own payloads."""

    def __init__(self, engine: Engine, storage: Storage) -> None:
        self.storage = storage
        content = engine.content
        known = [payloads.ENTRY + e for e in content.entries]
        known += [payloads.CASE + c for c in content.cases]
        known += [b.payload for b in content.menu]
        self._content_tokens = {callback_data_for(p): p for p in known}

    async def encode(self, payload: str) -> str:
        data = callback_data_for(payload)
        if data != payload and data not in self._content_tokens:
            await self.storage.cache_put(_BUTTON_CACHE + data, payload, ttl=BUTTON_TTL_SECONDS)
        return data

    async def decode(self, data: str) -> str | None:
        """The payload behind callback_data, or None when a token is no longer known."""
        if not data.startswith(TOKEN_PREFIX):
            return data
        return self._content_tokens.get(data) or await self.storage.cache_get(_BUTTON_CACHE + data)


# --- conversation -------------------------------------------------------------------------


class TelegramChannel:
    """The handlers: each turns an update into an engine message and the replies into messages."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.buttons = ButtonCodec(engine, engine.storage)

    def install(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        private = filters.ChatType.PRIVATE  # personal matters are not discussed in groups
        for name in COMMANDS:
            application.add_handler(CommandHandler(name, self.on_command, filters=private))
        text = (filters.TEXT | filters.CAPTION) & private & filters.UpdateType.MESSAGE
        application.add_handler(MessageHandler(text, self.on_text))
        application.add_handler(CallbackQueryHandler(self.on_button))
        application.add_handler(
            ChatMemberHandler(self.on_membership, ChatMemberHandler.MY_CHAT_MEMBER)
        )
        application.add_error_handler(_log_error)

    async def on_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not message.text:
            return
        name = message.text.split()[0][1:].split("@")[0].lower()
        payload = COMMAND_PAYLOADS.get(name)
        if name == "start" and context.args:  # a deep link: t.me/<bot>?start=<argument>
            payload = _deep_link(context.args[0])
        if payload is None:
            user = IncomingMessage(CHANNEL, str(message.chat_id), "")
            await self.send_replies(context.bot, message.chat_id, await self.engine.welcome(user))
            return
        await self.converse(context.bot, message.chat_id, payload)

    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        text = message and (message.text or message.caption)
        if message and text:
            await self.converse(context.bot, message.chat_id, text)

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        chat = update.effective_chat
        if query is None:
            return
        payload = await self.buttons.decode(query.data or "")
        if payload is None or chat is None or chat.type != chat.PRIVATE:
            await query.answer(BUTTON_EXPIRED if payload is None else None)
            return
        await query.answer()  # first: it stops the spinner on the user's button
        await self.converse(context.bot, chat.id, payload)

    async def on_membership(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A user who blocks the bot is forgotten at once, as if they had unsubscribed."""
        change = update.my_chat_member
        if change is None or change.chat.type != change.chat.PRIVATE:
            return
        if change.new_chat_member.status in (ChatMember.BANNED, ChatMember.LEFT):
            await self.engine.storage.forget_user(CHANNEL, str(change.chat.id))
            _LOGGER.info("telegram user blocked the bot chat=%s", mask_chat(change.chat.id))

    async def converse(self, bot: Bot, chat_id: int, text: str) -> None:
        # JSON may carry half a surrogate pair; the core takes well-formed text.
        message = IncomingMessage(CHANNEL, str(chat_id), readable(text))
        replies = await self.engine.handle(message)
        await self.send_replies(bot, chat_id, replies)

    async def send_replies(self, bot: Bot, chat_id: int, replies: Sequence[Reply]) -> None:
        """Send the replies in order; a 403 (the user blocked the bot, or deleted their
        account) forgets the user, as a block seen in my_chat_member does, and stops."""
        try:
            for reply in replies:
                card_url = reply.card.url if reply.card else None
                chunks = split_text(reply.text + link_line(card_url))
                markup = await self.keyboard(reply)
                for number, chunk in enumerate(chunks, 1):
                    # Plain text, no parse mode: content is plain, and nothing needs escaping.
                    last = number == len(chunks)
                    await bot.send_message(chat_id, chunk, reply_markup=markup if last else None)
        except Forbidden:
            await self.engine.storage.forget_user(CHANNEL, str(chat_id))
            _LOGGER.info("telegram reply refused (403): user forgotten chat=%s", mask_chat(chat_id))

    async def keyboard(self, reply: Reply) -> InlineKeyboardMarkup | None:
        """One button per row: the labels are Chinese phrases, too long to sit side by side."""
        rows = url_row(reply.card.url if reply.card else None)
        for button in reply.buttons:
            data = await self.buttons.encode(button.payload)
            rows.append([InlineKeyboardButton(button.label, callback_data=data)])
        return InlineKeyboardMarkup(rows) if rows else None


def _deep_link(argument: str) -> str | None:
    if argument.startswith(DEEP_LINK_CASE):
        return payloads.CASE + argument.removeprefix(DEEP_LINK_CASE)
    return COMMAND_PAYLOADS.get(argument.lower())


async def _log_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    # The error's message may quote what the user sent; log its type and where it happened.
    error = context.error
    if error is None:
        return
    frames = "".join(traceback.format_tb(error.__traceback__))
    _LOGGER.error("telegram update failed: %s\n%s", type(error).__name__, frames)


class PerChatUpdateProcessor(BaseUpdateProcessor):
    """Updates from different chats run concurrently; those of one chat run in order, so a
    user's session in storage is never read and written by two of their messages at once."""

    def __init__(self, max_concurrent_updates: int = 64) -> None:
        super().__init__(max_concurrent_updates)
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        chat = update.effective_chat if isinstance(update, Update) else None
        if chat is None:
            await coroutine
            return
        lock, users = self._locks.get(chat.id, (asyncio.Lock(), 0))
        self._locks[chat.id] = (lock, users + 1)
        try:
            async with lock:
                await coroutine
        finally:
            lock, users = self._locks[chat.id]
            if users == 1:
                del self._locks[chat.id]
            else:
                self._locks[chat.id] = (lock, users - 1)

    async def initialize(self) -> None:
        """Nothing to allocate."""

    async def shutdown(self) -> None:
        """Nothing to free."""


# --- application and lifecycle ------------------------------------------------------------


def build_application(
    engine: Engine, settings: Settings, *, polling: bool
) -> Application[Any, Any, Any, Any, Any, Any]:
    """A PTB Application wired to the engine; polling builds an Updater, webhook mode none."""
    quiet_library_logs()
    builder = ApplicationBuilder().token(settings.telegram_token)
    urls = api_urls(settings)
    if urls:
        builder = builder.base_url(urls["base_url"]).base_file_url(urls["base_file_url"])
    # Replies share the bot's pace and flood holds with the push (one retry after a 429).
    throttle = throttle_for(settings.telegram_token, settings.telegram_push_rate, settings)
    builder = builder.rate_limiter(ThrottledRateLimiter(throttle))
    builder = builder.concurrent_updates(PerChatUpdateProcessor())
    if not polling:
        builder = builder.updater(None)
    application = builder.build()
    TelegramChannel(engine).install(application)
    return application


@asynccontextmanager
async def running(
    application: Application[Any, Any, Any, Any, Any, Any], settings: Settings
) -> AsyncIterator[None]:
    """Run the Application: with its Updater polling, or (without one) behind our webhook."""
    try:
        await application.initialize()  # getMe: fails fast on a wrong token
    except Exception:
        await close_bot(application.bot)  # PTB leaves the connection open after a failed start
        raise
    try:
        commands = [BotCommand(name, about) for name, about in COMMANDS.items()]
        await application.bot.set_my_commands(commands)
        updater = application.updater
        if updater is None:
            await application.bot.set_webhook(
                webhook_url(settings),
                secret_token=settings.telegram_webhook_secret,
                allowed_updates=ALLOWED_UPDATES,
            )
        else:
            await updater.start_polling(allowed_updates=ALLOWED_UPDATES)
        try:
            await application.start()
            _LOGGER.info("telegram bot running (%s)", "polling" if updater else "webhook")
            yield
        finally:
            if updater is not None and updater.running:
                await updater.stop()
            if application.running:
                await application.stop()
    finally:
        await application.shutdown()


def webhook_url(settings: Settings) -> str:
    return settings.public_url.rstrip("/") + WEBHOOK_PATH


def _checked_mode(settings: Settings) -> str:
    mode = settings.telegram_mode.strip().lower()
    if mode not in ("polling", "webhook"):
        raise ConfigError(f"TELEGRAM_MODE must be polling or webhook, got {mode!r}")
    if mode == "webhook":
        if not _SECRET_FORMAT.fullmatch(settings.telegram_webhook_secret):
            raise ConfigError(
                "TELEGRAM_WEBHOOK_SECRET is required in webhook mode: 1-256 of A-Z a-z 0-9 _ -"
            )
        if not settings.public_url.startswith("https://"):
            raise ConfigError("INFOGUARD_PUBLIC_URL (https://...) is required in webhook mode")
    return mode


def webhook_handler(
    application: Application[Any, Any, Any, Any, Any, Any], secret: str
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The aiohttp handler Telegram posts updates to: 403 without the right secret header."""
    expected = secret.encode()

    async def receive(request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, expected):
            return web.Response(status=403)
        try:
            update = Update.de_json(await request.json(), application.bot)
            well_formed = update is not None and _well_typed(update)
        except Exception:  # malformed JSON or not an Update: Telegram never sends these
            well_formed = False
        if not well_formed:
            return web.Response(status=400)
        # Acknowledge at once; the Application processes the queue in the background.
        await application.update_queue.put(update)
        return web.Response()

    return receive


def status(settings: Settings) -> str:
    """One line for `infoguard serve`: whether the bot runs, and how, or why not."""
    if not settings.telegram_token:
        return "Telegram off: TELEGRAM_TOKEN not set"
    if _checked_mode(settings) == "webhook":
        return f"Telegram on: webhook at {webhook_url(settings)}"
    return "Telegram on: long polling"


def _well_typed(update: Update) -> bool:
    """Whether the fields the handlers read have Telegram's types. PTB's `de_json` checks no
    types, so a body with the secret but, say, a list for a chat id would otherwise be
    queued and fail inside a handler."""
    if not isinstance(update.update_id, int):
        return False
    chat = update.effective_chat
    if chat is not None and not (isinstance(chat.id, int) and isinstance(chat.type, str)):
        return False
    message = update.effective_message
    if message is not None:
        texts = (message.text, message.caption)
        if not all(t is None or isinstance(t, str) for t in texts):
            return False
        if not isinstance(message.chat, Chat) or not isinstance(message.chat.id, int):
            return False
        if not isinstance(message.chat.type, str) or not isinstance(message.entities, tuple):
            return False
        for entity in message.entities:
            if not (isinstance(entity.type, str) and isinstance(entity.offset, int)):
                return False
            if not isinstance(entity.length, int):
                return False
    query = update.callback_query
    if query is not None and not (isinstance(query.id, str) and isinstance(query.data, str | None)):
        return False
    member = update.my_chat_member
    return member is None or isinstance(member.new_chat_member.status, str)


def add_telegram(app: web.Application, engine: Engine, settings: Settings) -> None:
    """Register the Telegram webhook (or polling) lifecycle on `app` when configured."""
    if not settings.telegram_token:
        return
    mode = _checked_mode(settings)
    application = build_application(engine, settings, polling=mode == "polling")
    app[APPLICATION_KEY] = application
    if mode == "webhook":
        handler = webhook_handler(application, settings.telegram_webhook_secret)
        app.router.add_post(WEBHOOK_PATH, handler)

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        async with running(application, settings):
            yield

    app.cleanup_ctx.append(lifecycle)
