"""What the bot remembers, behind the `Storage` protocol; one module per backend.

Callers import from here (`from bot.storage import Storage, SqliteStorage`), never from a
backend module, so that a backend can change without touching the engine, channels or push.
"""

from bot.storage.sqlite import (
    SEEN_MESSAGE_TTL_SECONDS,
    SESSION_TTL_SECONDS,
    SqliteStorage,
    Storage,
    Subscriber,
)

__all__ = [
    "SEEN_MESSAGE_TTL_SECONDS",
    "SESSION_TTL_SECONDS",
    "SqliteStorage",
    "Storage",
    "Subscriber",
]
