"""`infoguard serve`: one aiohttp application hosting the WeChat webhook, the case pages and,
when configured, the Telegram webhook. This module only composes; each part owns its routes."""

from __future__ import annotations

from aiohttp import web

from bot.channels.telegram import add_telegram
from bot.channels.wechat import add_wechat
from bot.config import Settings
from bot.engine import Engine
from bot.pages import add_case_pages

MAX_BODY_BYTES = 64 * 1024
"""WeChat messages are a few KB; anything far larger is refused with 413 before parsing."""


def build_app(engine: Engine, settings: Settings) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    add_case_pages(app, engine.content)
    add_wechat(app, engine, settings)
    add_telegram(app, engine, settings)
    return app
