"""`LocalRateBudget`: a send-rate budget for one process (a token bucket), the fallback when no
Redis is configured to share one budget between workers (`bot.storage.redis.RedisRateBudget`).

Both budgets work by reservation: `acquire` takes its sends at once, possibly from the future,
and sleeps until they are due, so waiters are served in the order they asked, with one clock
reading and no retry loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


class LocalRateBudget:
    """At most `rate` sends a second on average, with bursts of up to `burst`."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._at = clock()

    def reserve(self, count: int = 1) -> float:
        """Take `count` sends; the seconds to wait before they may go out."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate) - count
        self._at = now
        return max(0.0, -self._tokens / self.rate)

    async def acquire(self, count: int = 1) -> None:
        wait = self.reserve(count)
        if wait > 0:
            await self._sleep(wait)

    async def close(self) -> None:
        """Nothing to release; here for the `RateBudget` protocol."""
