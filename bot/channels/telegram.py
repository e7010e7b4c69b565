"""Telegram channel (stub, replaced by the Telegram work)."""

from __future__ import annotations

from aiohttp import web

from bot.config import Settings
from bot.engine import Engine


def add_telegram(app: web.Application, engine: Engine, settings: Settings) -> None:
    """Register the Telegram webhook (or polling) lifecycle on `app` when configured."""
