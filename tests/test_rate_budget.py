"""The send-rate budget: a token bucket by reservation, in one process (`LocalRateBudget`, on a
fake clock) and shared by several workers through the real Redis (`RedisRateBudget`, on the
server's clock): however the sends are split between workers, the waits they are given keep
the total at the rate."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from conftest import RedisTarget

from bot.storage import LocalRateBudget, RateBudget, open_rate_budget
from bot.storage.redis import RedisRateBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_local_budget_allows_a_burst_then_paces() -> None:
    clock = Clock()
    budget = LocalRateBudget(30, clock=clock)
    waits = [budget.reserve() for _ in range(60)]
    assert waits[:30] == [0.0] * 30
    assert waits[30] == pytest.approx(1 / 30)
    assert waits[59] == pytest.approx(1.0)
    clock.now += 2.0  # the bucket refills to its burst, no further
    assert [budget.reserve() for _ in range(30)][-1] == pytest.approx(0.0, abs=1e-9)
    assert budget.reserve() > 0


async def test_local_acquire_sleeps_the_reserved_wait() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    budget = LocalRateBudget(10, burst=2, clock=Clock(), sleep=sleep)
    for _ in range(4):
        await budget.acquire()
    assert slept == pytest.approx([0.1, 0.2])


async def test_two_workers_share_one_budget_on_redis(redis_target: RedisTarget) -> None:
    clients = [aioredis.Redis.from_url(redis_target.url) for _ in range(2)]
    key = f"{redis_target.prefix}rate:telegram"
    try:
        workers = [RedisRateBudget(c, key, 30) for c in clients]
        # 90 sends, alternating between the workers, reserved at once.
        waits = await asyncio.gather(*(workers[n % 2].reserve() for n in range(90)))
        ordered = sorted(waits)
        assert ordered[:30] == [0.0] * 30 or max(ordered[:30]) < 0.05
        # Together they were given 60 sends beyond the burst: two more seconds at 30/s.
        assert ordered[-1] == pytest.approx(2.0, abs=0.15)
        assert ordered[59] == pytest.approx(1.0, abs=0.15)
        # A third worker arriving now waits behind all of them.
        third = RedisRateBudget(clients[0], key, 30)
        assert await third.reserve() == pytest.approx(2.0 + 1 / 30, abs=0.15)
    finally:
        for client in clients:
            await client.aclose()


async def test_open_rate_budget_is_shared_only_with_redis(redis_target: RedisTarget) -> None:
    local = await open_rate_budget("telegram", 30)
    assert isinstance(local, LocalRateBudget)
    one = await open_rate_budget(
        "telegram", 5, redis_url=redis_target.url, redis_prefix=redis_target.prefix
    )
    two = await open_rate_budget(
        "telegram", 5, redis_url=redis_target.url, redis_prefix=redis_target.prefix
    )
    try:
        assert isinstance(one, RedisRateBudget) and isinstance(two, RedisRateBudget)
        for _ in range(5):
            await one.acquire()  # the burst: no wait
        assert await two.reserve() == pytest.approx(0.2, abs=0.1)
    finally:
        await one.close()
        await two.close()
        await local.close()


async def test_two_workers_telegram_throttles_keep_to_one_shared_rate(
    redis_target: RedisTarget,
) -> None:
    from bot.channels.telegram_api import Throttle

    waits: list[float] = []
    clients: list[aioredis.Redis] = []

    async def sleep(seconds: float) -> None:  # records what the shared budget asks to wait
        waits.append(seconds)

    def shared() -> RateBudget:
        clients.append(aioredis.Redis.from_url(redis_target.url))
        return RedisRateBudget(clients[-1], f"{redis_target.prefix}rate:tg", 20, sleep=sleep)

    # Each worker alone would allow 1,000 a second; together they must keep to 20.
    workers = [Throttle(1000.0, shared=shared) for _ in range(2)]
    try:
        await asyncio.gather(*(workers[n % 2].acquire() for n in range(30)))
    finally:
        for client in clients:
            await client.aclose()
    assert len(clients) == 2  # one budget client per worker, one key between them
    # 30 sends at 20/s with a burst of 20: the last 10 were told to wait, up to 0.5 s (a
    # slow machine refills a little meanwhile).
    assert 8 <= len(waits) <= 10
    assert 0.3 <= max(waits) <= 0.55
