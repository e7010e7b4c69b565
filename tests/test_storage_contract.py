"""The `Storage` contract, one suite run against every backend: SQLite, PostgreSQL, and
PostgreSQL with Redis in front, on the real servers (no mocks). Two "workers" are two storages
opened on the same data, as two processes would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from conftest import RedisTarget, postgres_schema, redis_namespace

from bot.storage import Storage, open_storage

Opener = Callable[[], Awaitable[Storage]]
BACKENDS = ["sqlite", "postgres", "postgres+redis"]


@pytest.fixture(params=BACKENDS)
async def opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens one more storage on the same data each time it is called; all closed after."""
    opened: list[Storage] = []
    async with AsyncExitStack() as stack:
        url, redis = f"sqlite://{tmp_path / 'contract.sqlite3'}", RedisTarget("", "")
        if request.param != "sqlite":
            url = await stack.enter_async_context(postgres_schema(migrated=True))
        if "redis" in request.param:
            redis = await stack.enter_async_context(redis_namespace())

        async def open_one() -> Storage:
            storage = await open_storage(url, redis_url=redis.url, redis_prefix=redis.prefix)
            opened.append(storage)
            return storage

        try:
            yield open_one
        finally:
            for storage in opened:
                await storage.close()


async def test_sessions_round_trip_replace_and_delete(opener: Opener) -> None:
    storage = await opener()
    assert await storage.get_session("wechat", "u1") is None
    await storage.put_session("wechat", "u1", {"buttons": ["#a", "#b"], "report": "leak"})
    await storage.put_session("telegram", "u1", {"buttons": []})
    assert await storage.get_session("wechat", "u1") == {
        "buttons": ["#a", "#b"],
        "report": "leak",
    }
    await storage.put_session("wechat", "u1", {"buttons": ["#c"], "note": "中文"})
    assert await storage.get_session("wechat", "u1") == {"buttons": ["#c"], "note": "中文"}
    await storage.delete_session("wechat", "u1")
    assert await storage.get_session("wechat", "u1") is None
    assert await storage.get_session("telegram", "u1") == {"buttons": []}


async def test_sessions_expire(opener: Opener) -> None:
    storage = await opener()
    await storage.put_session("wechat", "short", {"n": 1}, ttl=0.05)
    await storage.put_session("wechat", "long", {"n": 2}, ttl=60)
    await asyncio.sleep(0.15)
    assert await storage.get_session("wechat", "short") is None
    assert await storage.get_session("wechat", "long") == {"n": 2}


async def test_subscribe_once_count_and_check(opener: Opener) -> None:
    storage = await opener()
    assert await storage.subscribe("wechat", "a") is True
    assert await storage.subscribe("wechat", "a") is False
    assert await storage.subscribe("telegram", "a") is True
    assert await storage.is_subscribed("wechat", "a")
    assert not await storage.is_subscribed("wechat", "b")
    assert await storage.count_subscribers() == 2
    assert await storage.count_subscribers("wechat") == 1
    assert await storage.count_subscribers("console") == 0


async def test_subscribers_stream_in_byte_order_across_batches(opener: Opener) -> None:
    storage = await opener()
    users = ["b", "B", "a", "Z", "中文", "o_Z9", "aa", "a b", "0", "~"]
    for user in users:
        await storage.subscribe("wechat", user)
    await storage.subscribe("telegram", "12345")
    streamed = [(s.channel, s.user_id) async for s in storage.subscribers(batch=3)]
    expected = sorted([("wechat", u) for u in users] + [("telegram", "12345")])
    assert streamed == expected
    only = [s.user_id async for s in storage.subscribers("wechat", batch=4)]
    assert only == sorted(users)
    assert [s async for s in storage.subscribers("console")] == []
    (only_telegram,) = [s async for s in storage.subscribers("telegram")]
    assert only_telegram.subscribed_at > 1_600_000_000


async def test_forget_user_deletes_subscription_and_session(opener: Opener) -> None:
    storage = await opener()
    await storage.subscribe("wechat", "gone")
    await storage.subscribe("wechat", "stays")
    await storage.put_session("wechat", "gone", {"buttons": ["#x"]})
    assert await storage.forget_user("wechat", "gone") is True
    assert await storage.forget_user("wechat", "gone") is False
    assert not await storage.is_subscribed("wechat", "gone")
    assert await storage.get_session("wechat", "gone") is None
    assert await storage.is_subscribed("wechat", "stays")


async def test_first_sighting_is_true_once_until_it_expires(opener: Opener) -> None:
    storage = await opener()
    assert await storage.first_sighting("msg:1") is True
    assert await storage.first_sighting("msg:1") is False
    assert await storage.first_sighting("msg:2") is True
    assert await storage.first_sighting("short", ttl=0.05) is True
    await asyncio.sleep(0.15)
    assert await storage.first_sighting("short", ttl=0.05) is True
    assert await storage.first_sighting("msg:1") is False


async def test_two_workers_racing_on_one_message_id_see_it_first_once(opener: Opener) -> None:
    workers = [await opener(), await opener()]
    for round_number in range(5):
        key = f"race:{round_number}"
        results = await asyncio.gather(*(workers[i % 2].first_sighting(key) for i in range(16)))
        assert results.count(True) == 1, results


async def test_workers_share_sessions_and_cache(opener: Opener) -> None:
    one, two = await opener(), await opener()
    await one.put_session("wechat", "u", {"buttons": ["#a"]})
    assert await two.get_session("wechat", "u") == {"buttons": ["#a"]}
    await one.cache_put("wechat:token", "T1", ttl=60)
    assert await two.cache_get("wechat:token") == "T1"
    await two.subscribe("wechat", "s")
    assert await one.is_subscribed("wechat", "s")
    assert await one.forget_user("wechat", "s") is True
    assert not await two.is_subscribed("wechat", "s")


async def test_cache_put_get_replace_expire(opener: Opener) -> None:
    storage = await opener()
    assert await storage.cache_get("k") is None
    await storage.cache_put("k", "v1", ttl=60)
    await storage.cache_put("k", "v2 中文", ttl=60)
    assert await storage.cache_get("k") == "v2 中文"
    await storage.cache_put("brief", "x", ttl=0.05)
    await asyncio.sleep(0.15)
    assert await storage.cache_get("brief") is None
    assert await storage.cache_get("k") == "v2 中文"


async def test_purge_keeps_what_is_live(opener: Opener) -> None:
    storage = await opener()
    await storage.put_session("wechat", "dead", {"n": 0}, ttl=0.01)
    await storage.put_session("wechat", "live", {"n": 1}, ttl=60)
    await storage.cache_put("dead", "x", ttl=0.01)
    await storage.cache_put("live", "y", ttl=60)
    await storage.first_sighting("seen-live", ttl=60)
    await asyncio.sleep(0.05)
    removed = await storage.purge_expired()
    assert removed >= 0
    assert await storage.get_session("wechat", "dead") is None
    assert await storage.get_session("wechat", "live") == {"n": 1}
    assert await storage.cache_get("dead") is None
    assert await storage.cache_get("live") == "y"
    assert await storage.first_sighting("seen-live") is False
    assert await storage.purge_expired() == 0
