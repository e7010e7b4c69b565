"""The hot, short-lived state on Redis (INFOGUARD_REDIS_URL), shared by every worker in front of
the database: seen WeChat message ids, cached values (the WeChat access token and its refresh
lease), conversation sessions, and a send-rate budget (`RedisRateBudget`, e.g. one ~30
messages a second for the Telegram bot across all workers).

`RedisStorage` wraps the durable `Storage` (PostgreSQL or SQLite): subscriptions (and through
the durable store the push ledger) stay in the database; what Redis holds expires by itself
(SET … PX), so nothing needs purging there. Losing Redis loses at most sessions (a user starts
their report guidance over) and dedup memory of the last ten minutes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.errors import ConfigError
from bot.storage.protocol import SEEN_MESSAGE_TTL_SECONDS, SESSION_TTL_SECONDS, Storage, Subscriber
from bot.storage.urls import redact_url


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


async def connect(url: str) -> aioredis.Redis:
    """A client (its own connection pool); ConfigError if the server does not answer."""
    try:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=10)
        await client.ping()
    except (RedisError, OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot connect to Redis at {redact_url(url)}: {type(exc).__name__}: {exc}"
        ) from None
    return client


class RedisStorage:
    """`Storage` with sessions, seen ids and the cache on Redis, the rest in `durable`."""

    def __init__(self, durable: Storage, client: aioredis.Redis, prefix: str) -> None:
        self.durable = durable
        self.redis = client
        self.prefix = prefix

    @classmethod
    async def open(cls, durable: Storage, url: str, *, prefix: str) -> RedisStorage:
        return cls(durable, await connect(url), prefix)

    async def close(self) -> None:
        try:
            await self.redis.aclose()
        finally:
            await self.durable.close()

    def _session_key(self, channel: str, user_id: str) -> str:
        # The channel never holds ":"; the user id comes last, so the key is unambiguous.
        return f"{self.prefix}session:{channel}:{user_id}"

    async def get_session(self, channel: str, user_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self._session_key(channel, user_id))
        if raw is None:
            return None
        state: dict[str, Any] = json.loads(raw)
        return state

    async def put_session(
        self,
        channel: str,
        user_id: str,
        state: dict[str, Any],
        *,
        ttl: float = SESSION_TTL_SECONDS,
    ) -> None:
        await self.redis.set(
            self._session_key(channel, user_id),
            json.dumps(state, ensure_ascii=False),
            px=_ms(ttl),
        )

    async def delete_session(self, channel: str, user_id: str) -> None:
        await self.redis.delete(self._session_key(channel, user_id))

    async def purge_expired(self) -> int:
        return await self.durable.purge_expired()  # Redis expires its own keys

    async def subscribe(self, channel: str, user_id: str) -> bool:
        return await self.durable.subscribe(channel, user_id)

    async def is_subscribed(self, channel: str, user_id: str) -> bool:
        return await self.durable.is_subscribed(channel, user_id)

    async def subscribers(
        self, channel: str | None = None, *, batch: int = 1000
    ) -> AsyncIterator[Subscriber]:
        async for subscriber in self.durable.subscribers(channel, batch=batch):
            yield subscriber

    async def count_subscribers(self, channel: str | None = None) -> int:
        return await self.durable.count_subscribers(channel)

    async def forget_user(self, channel: str, user_id: str) -> bool:
        await self.delete_session(channel, user_id)
        return await self.durable.forget_user(channel, user_id)

    async def first_sighting(self, key: str, *, ttl: float = SEEN_MESSAGE_TTL_SECONDS) -> bool:
        # SET NX is atomic on the server: of all workers, exactly one sees True.
        created = await self.redis.set(f"{self.prefix}seen:{key}", b"1", nx=True, px=_ms(ttl))
        return bool(created)

    async def cache_get(self, key: str) -> str | None:
        raw = await self.redis.get(f"{self.prefix}cache:{key}")
        return None if raw is None else raw.decode()

    async def cache_put(self, key: str, value: str, *, ttl: float) -> None:
        await self.redis.set(f"{self.prefix}cache:{key}", value, px=_ms(ttl))


# A token bucket by reservation, on the server's clock so that every worker agrees on time:
# the bucket may go below zero, and the caller sleeps until its reserved sends are due.
_RESERVE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local rate, burst, count = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate) - count
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
if tokens >= 0 then return '0' end
return tostring(-tokens / rate)
"""


class RedisRateBudget:
    """At most `rate` sends a second on average (bursts of `burst`) for everyone using `name`
    on this Redis, whichever process or machine they run in."""

    def __init__(
        self,
        client: aioredis.Redis,
        name: str,
        rate: float,
        *,
        burst: float | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.client = client
        self.key = name
        self.rate = rate
        self.burst = burst if burst is not None else rate
        self._script = client.register_script(_RESERVE)
        self._sleep = sleep

    async def reserve(self, count: int = 1) -> float:
        """Take `count` sends; the seconds to wait before they may go out."""
        wait = await self._script(keys=[self.key], args=[self.rate, self.burst, count])
        return float(wait)

    async def acquire(self, count: int = 1) -> None:
        wait = await self.reserve(count)
        if wait > 0:
            await self._sleep(wait)

    async def close(self) -> None:
        await self.client.aclose()
