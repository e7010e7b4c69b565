"""The composition root of the core: loads content, opens storage, builds the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import Settings
from bot.content import Content, load_content
from bot.storage import SqliteStorage

if TYPE_CHECKING:
    from bot.engine import Engine


def load(settings: Settings) -> Content:
    """The validated content the settings point at (raises ContentError)."""
    return load_content(settings.knowledge_dir, settings.cases_dir)


@asynccontextmanager
async def running_engine(
    settings: Settings, *, database: str | Path | None = None
) -> AsyncIterator[Engine]:
    """An engine on the configured content and storage, closed on exit."""
    from bot.engine import Engine  # here: commands that do not converse skip the matcher

    content = load(settings)
    storage = await SqliteStorage.open(database if database is not None else settings.database)
    try:
        yield Engine(content, storage, case_url=settings.case_url, cache_dir=settings.cache_dir)
    finally:
        await storage.close()
