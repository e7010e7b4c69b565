"""The storage protocol: what the core may ask of any backend (sessions, subscribers, seen
message ids, a key-value cache), and the shared send-rate budget. The engine, channels, push and
ledger see only these types, never a backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

SESSION_TTL_SECONDS = 30 * 60
"""An idle conversation (e.g. a half-finished report guidance) is forgotten after this."""
SEEN_MESSAGE_TTL_SECONDS = 10 * 60
"""WeChat retries within 15 s; ten minutes of message ids is ample for deduplication."""


@dataclass(frozen=True, slots=True)
class Subscriber:
    channel: str
    user_id: str
    subscribed_at: float


class Storage(Protocol):
    """The persistence the core needs. All methods are safe to call concurrently."""

    async def get_session(self, channel: str, user_id: str) -> dict[str, Any] | None: ...

    async def put_session(
        self, channel: str, user_id: str, state: dict[str, Any], *, ttl: float = ...
    ) -> None: ...

    async def delete_session(self, channel: str, user_id: str) -> None: ...

    async def subscribe(self, channel: str, user_id: str) -> bool:
        """Add a subscriber; False if they already were one."""
        ...

    async def is_subscribed(self, channel: str, user_id: str) -> bool: ...

    def subscribers(
        self, channel: str | None = None, *, batch: int = 1000
    ) -> AsyncIterator[Subscriber]:
        """Stream subscribers in a stable order without loading them all."""
        ...

    async def count_subscribers(self, channel: str | None = None) -> int: ...

    async def forget_user(self, channel: str, user_id: str) -> bool:
        """Delete everything held about a user (subscription, session, push ledger); True if they
        were a subscriber."""
        ...

    async def first_sighting(self, key: str, *, ttl: float = ...) -> bool:
        """Record a message id; True the first time it is seen within `ttl` seconds."""
        ...

    async def cache_get(self, key: str) -> str | None: ...

    async def cache_put(self, key: str, value: str, *, ttl: float) -> None: ...

    async def purge_expired(self) -> int:
        """Delete expired sessions, message ids and cache entries; how many went (a backend
        whose entries expire by themselves returns 0)."""
        ...

    async def close(self) -> None: ...


class RateBudget(Protocol):
    """A send-rate budget shared by everything that sends on one bot account (e.g. Telegram's
    ~30 messages a second for a bot), across all the workers that use the same budget."""

    async def acquire(self, count: int = 1) -> None:
        """Wait until `count` sends fit in the budget, and take them."""
        ...

    async def close(self) -> None: ...
