"""`infoguard serve`: one aiohttp application hosting the WeChat webhook, the case pages and,
when configured, the Telegram webhook, plus the background work of a running server (purging
expired rows, the scheduled push). It only composes and runs; each part owns its routes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from bot.channels import telegram, wechat
from bot.channels.registry import build_senders
from bot.channels.telegram import add_telegram
from bot.channels.wechat import add_wechat
from bot.config import Settings
from bot.engine import Engine
from bot.errors import ConfigError
from bot.pages import add_case_pages
from bot.push import push_order
from bot.runtime import open_configured_storage, open_push_store, running_engine
from bot.schedule import run_scheduled_push
from bot.storage import Storage

_LOGGER = logging.getLogger(__name__)
SHUTDOWN_TIMEOUT_SECONDS = 15.0
"""How long in-flight requests get to finish after a stop signal."""
PURGE_INTERVAL_SECONDS = 600.0
PUSH_CHANNELS = ("wechat", "telegram")
"""Channels the server pushes on; console subscribers exist only for `infoguard chat`."""
"""Expired sessions, message ids and cache entries are deleted this often."""
MAX_BODY_BYTES = 64 * 1024
"""WeChat messages are a few KB; anything far larger is refused with 413 before parsing."""


WORKER_HEADER = "X-InfoGuard-Worker"
"""With `serve --workers N`, which worker (1..N) answered: for operators and the tests."""


def build_app(engine: Engine, settings: Settings, *, worker: int | None = None) -> web.Application:
    middlewares = [_worker_header(worker)] if worker is not None else []
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=middlewares)
    app.router.add_get("/", _to_case_pages)
    add_case_pages(app, engine.content)
    add_wechat(app, engine, settings)
    add_telegram(app, engine, settings)
    return app


def _worker_header(worker: int) -> Any:
    @web.middleware
    async def add_header(request: web.Request, handler: Any) -> StreamResponse:
        response: StreamResponse = await handler(request)
        response.headers[WORKER_HEADER] = str(worker)
        return response

    return add_header


async def _to_case_pages(request: web.Request) -> web.Response:
    """The server's only public face is the case pages; relative, so a path prefix holds."""
    raise web.HTTPFound("cases/")


def push_channels(settings: Settings) -> list[str]:
    """The channels whose credentials allow pushing."""
    return [
        name
        for name, able in (
            ("WeChat", settings.wechat_app_id and settings.wechat_secret),
            ("Telegram", settings.telegram_token),
        )
        if able
    ]


def startup_lines(settings: Settings) -> list[str]:
    """What `infoguard serve` says before serving: each channel on or off, and why; the
    schedule of pushes."""
    days = settings.push_interval_days
    pushing = push_channels(settings)
    if days <= 0:
        push = "scheduled push off: INFOGUARD_PUSH_INTERVAL_DAYS is 0"
    elif not pushing:
        push = "scheduled push off: no channel to push on"
    else:
        push = f"scheduled push: every {days:g} days on {', '.join(pushing)}"
    return [wechat.status(settings), telegram.status(settings), "case pages at /cases/", push]


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log without query strings: WeChat puts the user's openid in the query. The path
    is logged with control characters escaped: a decoded `%0a` would start a forged log line."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %d %.1fms",
            loggable(request.method),
            loggable(request.path),
            response.status,
            time * 1000,
        )


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")


def loggable(text: str, limit: int = 200) -> str:
    """`text` on one line: control characters (and the backslash) as escapes, cut at `limit`."""
    text = text[:limit]
    return _UNPRINTABLE.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


async def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    worker: int | None = None,
    ready_fd: int | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; storage is closed after the last request is done.

    As worker `worker` of `infoguard serve --workers N` the socket is opened with SO_REUSEPORT
    (the kernel spreads connections over the workers) and a line is written to `ready_fd` once
    it listens."""
    async with running_engine(settings) as engine:
        app = build_app(engine, settings, worker=worker)
        runner = web.AppRunner(
            app, access_log_class=PathOnlyAccessLogger, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS
        )
        await runner.setup()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        purger = asyncio.create_task(_purge_periodically(engine.storage))
        pusher = asyncio.create_task(_push_on_schedule(engine, settings))
        try:
            site = web.TCPSite(runner, host, port, reuse_port=worker is not None or None)
            try:
                await site.start()
            except OSError as exc:
                raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            # The content and index live for the whole process: keep them out of the garbage
            # collector's full passes, which otherwise stall every request now and then.
            gc.collect()
            gc.freeze()
            if worker in (None, 1):  # the first worker speaks for all
                for line in startup_lines(settings):
                    print(f"infoguard: {line}", file=sys.stderr)
            if worker is None:
                print(f"infoguard: serving on http://{host}:{port}", file=sys.stderr, flush=True)
            if ready_fd is not None:
                os.write(ready_fd, f"{worker}\n".encode())
                os.close(ready_fd)
            await stop.wait()
            print("infoguard: stopping", file=sys.stderr, flush=True)
        finally:
            for task in (purger, pusher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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


async def _push_on_schedule(engine: Engine, settings: Settings) -> None:
    """Push each subscriber's next unseen case every `push_interval_days` (0 turns it off).

    The push gets its own database connection: its group-committed ledger transactions must not
    interleave with the webhook's session writes on one connection.
    """
    if settings.push_interval_days <= 0:
        return
    async with _own_storage(settings) as storage:
        senders = [s for s in build_senders(settings, storage) if s.channel in PUSH_CHANNELS]
        if not senders:
            return
        cards = push_order(engine.content, settings.case_url)
        try:
            store = await open_push_store(storage)
            await run_scheduled_push(
                store, cards, senders, interval_days=settings.push_interval_days
            )
        finally:
            for sender in senders:
                close = getattr(sender, "aclose", None)
                if close is not None:
                    await close()


@contextlib.asynccontextmanager
async def _own_storage(settings: Settings) -> AsyncIterator[Storage]:
    # A stop that lands while the connection opens must still close it: an open aiosqlite
    # connection's thread would keep the process from exiting.
    opening = asyncio.ensure_future(open_configured_storage(settings))
    try:
        storage = await asyncio.shield(opening)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await (await opening).close()
        raise
    try:
        yield storage
    finally:
        await storage.close()
