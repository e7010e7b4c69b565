"""WeChat Official Account channel (stub, replaced by the WeChat work)."""

from __future__ import annotations

from aiohttp import web

from bot.config import Settings
from bot.engine import Engine


def add_wechat(app: web.Application, engine: Engine, settings: Settings) -> None:
    """Register the WeChat webhook on `app` when WeChat is configured."""
