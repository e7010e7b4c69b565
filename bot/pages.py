"""Case pages (stub, replaced by the case-pages work): mobile HTML at /cases/ and /cases/<id>."""

from __future__ import annotations

from aiohttp import web

from bot.content import Content


def add_case_pages(app: web.Application, content: Content) -> None:
    """Register the case page routes on `app`."""
