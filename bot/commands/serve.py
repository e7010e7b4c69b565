"""`infoguard serve`: runs the one aiohttp application (WeChat webhook, case pages, Telegram
webhook) on INFOGUARD_HOST:INFOGUARD_PORT until SIGINT or SIGTERM, then shuts down
gracefully: stops accepting, lets answers in progress finish, closes storage."""

from __future__ import annotations

import argparse
import asyncio

from bot.config import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the server: WeChat webhook, case pages, Telegram webhook",
        description="Serve on INFOGUARD_HOST:INFOGUARD_PORT until interrupted. WeChat is "
        "enabled by WECHAT_TOKEN (webhook at /wechat), Telegram by TELEGRAM_TOKEN.",
    )
    p.add_argument("--host", help="address to listen on (env INFOGUARD_HOST)")
    p.add_argument("--port", type=int, help="port to listen on (env INFOGUARD_PORT)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    # Imported here: the web stack and both channels load only for the command that needs them.
    from bot.server import serve

    asyncio.run(serve(settings, host, port))
    return 0
