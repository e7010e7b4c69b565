"""`infoguard telegram poll` (run the bot by long polling, e.g. on a laptop) and
`infoguard telegram info` (which bot the token belongs to and where its updates go)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from bot.config import Settings
from bot.errors import ConfigError, InfoGuardError
from bot.runtime import running_engine


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    telegram = sub.add_parser("telegram", help="run or inspect the Telegram bot")
    telegram_sub = telegram.add_subparsers(
        dest="telegram_command", required=True, metavar="{poll,info}"
    )
    p = telegram_sub.add_parser(
        "poll",
        help="answer Telegram messages by long polling until Ctrl-C",
        description="Run the bot without a public URL: it fetches updates from Telegram "
        "(any webhook is removed first). Needs TELEGRAM_TOKEN. Stop with Ctrl-C.",
    )
    p.set_defaults(func=_poll)
    p = telegram_sub.add_parser(
        "info",
        help="show the bot's name and its webhook status",
        description="Print the bot's username, the webhook URL Telegram posts to (if any), "
        "the number of pending updates and Telegram's last delivery error.",
    )
    p.set_defaults(func=_info)


def _require_token(settings: Settings) -> None:
    if not settings.telegram_token:
        raise ConfigError("TELEGRAM_TOKEN is not set")


def _poll(args: argparse.Namespace, settings: Settings) -> int:
    _require_token(settings)
    # Imported here: the other commands need not load python-telegram-bot.
    from bot.channels.telegram import build_application, running

    async def run() -> None:
        async with running_engine(settings) as engine:
            application = build_application(engine, settings, polling=True)
            async with running(application, settings):
                me = application.bot.username
                print(f"@{me} is answering by long polling; Ctrl-C stops it", file=sys.stderr)
                await _until_stopped()

    _run(run())
    return 0


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run; Telegram's refusals become errors the CLI prints in one line."""
    from telegram.error import InvalidToken, TelegramError

    try:
        asyncio.run(main)
    except InvalidToken:
        raise ConfigError("Telegram rejected TELEGRAM_TOKEN") from None
    except TelegramError as exc:
        raise InfoGuardError(f"Telegram: {type(exc).__name__}: {exc.message}") from None


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not on Windows, nor outside the main thread: there Ctrl-C ends the run instead.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def _info(args: argparse.Namespace, settings: Settings) -> int:
    _require_token(settings)
    from bot.channels.telegram_api import close_bot, make_bot

    async def run() -> None:
        bot = make_bot(settings)
        try:
            await bot.initialize()  # getMe: raises InvalidToken on a wrong token
            info = await bot.get_webhook_info()
            print(f"bot: @{bot.username} (id {bot.id})")
            print(f"mode setting: {settings.telegram_mode}")
            print(f"webhook: {info.url or '(none: updates are fetched by polling)'}")
            print(f"pending updates: {info.pending_update_count}")
            if info.last_error_message:
                print(f"last delivery error: {info.last_error_message}")
        finally:
            await close_bot(bot)

    _run(run())
    return 0
