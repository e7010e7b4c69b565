"""`infoguard serve`: runs the one aiohttp application (WeChat webhook, case pages, Telegram
webhook) on INFOGUARD_HOST:INFOGUARD_PORT until SIGINT or SIGTERM, then shuts down
gracefully: stops accepting, lets answers in progress finish, closes storage."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from bot.config import Settings
from bot.errors import ConfigError
from bot.runtime import running_engine
from bot.server import build_app

_LOGGER = logging.getLogger(__name__)
SHUTDOWN_TIMEOUT_SECONDS = 15.0
"""How long in-flight requests get to finish after a stop signal."""
PURGE_INTERVAL_SECONDS = 600.0
"""Expired sessions, message ids and cache entries are deleted this often."""


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log without query strings: WeChat puts the user's openid in the query."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %d %.1fms", request.method, request.path, response.status, time * 1000
        )


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
    asyncio.run(serve(settings, host, port))
    return 0


async def serve(settings: Settings, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM; storage is closed after the last request is done."""
    async with running_engine(settings) as engine:
        app = build_app(engine, settings)
        runner = web.AppRunner(
            app, access_log_class=PathOnlyAccessLogger, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS
        )
        await runner.setup()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        purger = asyncio.create_task(_purge_periodically(engine.storage))
        try:
            site = web.TCPSite(runner, host, port)
            try:
                await site.start()
            except OSError as exc:
                raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            print(f"infoguard: serving on http://{host}:{port}", file=sys.stderr, flush=True)
            await stop.wait()
            print("infoguard: stopping", file=sys.stderr, flush=True)
        finally:
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger
            await runner.cleanup()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


async def _purge_periodically(storage: object) -> None:
    purge = getattr(storage, "purge_expired", None)
    if purge is None:
        return
    while True:
        await asyncio.sleep(PURGE_INTERVAL_SECONDS)
        try:
            removed = await purge()
            _LOGGER.info("purged %d expired rows", removed)
        except Exception as exc:  # a failed purge must not stop the server
            _LOGGER.warning("purge failed: %s", type(exc).__name__)
