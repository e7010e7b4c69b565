"""What the bot remembers, behind the `Storage` protocol; one module per backend:
`sqlite` (the default), `postgres` (a server database) and `redis` (the hot, short-lived state
shared by several workers, in front of either).

Callers import from here (`from bot.storage import Storage, open_storage`), never from a
backend module, so that a backend can change without touching the engine, channels or push.
"""

from bot.storage.protocol import (
    SEEN_MESSAGE_TTL_SECONDS,
    SESSION_TTL_SECONDS,
    RateBudget,
    Storage,
    Subscriber,
)
from bot.storage.sqlite import SqliteStorage

__all__ = [
    "SEEN_MESSAGE_TTL_SECONDS",
    "SESSION_TTL_SECONDS",
    "RateBudget",
    "SqliteStorage",
    "Storage",
    "Subscriber",
]
