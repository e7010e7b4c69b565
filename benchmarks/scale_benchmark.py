"""Scale-out benchmark: `infoguard serve` with 1 and with 2 workers on PostgreSQL + Redis.

1. Throughput and latency of signed WeChat text messages at 64 concurrent clients (each its
   own user, every message its own MsgId), for 1 worker and for `--workers 2`; the ratio.
2. Retries: each message posted 4 times at once, each delivery on a connection of its own (so
   the kernel spreads them over both workers), 16 messages at a time (64 connections); per
   message, how many deliveries carried the answer (must be exactly one), and on how many
   workers its deliveries landed (from the X-InfoGuard-Worker header).

The client is benchmarks/wechat_benchmark.py's. The servers are INFOGUARD_TEST_DATABASE_URL and
INFOGUARD_TEST_REDIS_URL if set, else the ones `scripts/test-services start` starts (tuned
for tests: no fsync); each run gets a schema and a Redis prefix of its own.

    .venv/bin/python -m benchmarks.scale_benchmark [--requests 4000] [--max-seconds 30]
        [--messages 400]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg

from benchmarks.wechat_benchmark import (
    QUESTIONS,
    TOKEN,
    WARMUP,
    Figures,
    free_port,
    load,
    process,
    signed_query,
    text_body,
)

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 64
RETRIES = 4
WORKER_HEADER = "X-InfoGuard-Worker"
RATIO_GOAL = 1.6


def service_urls() -> tuple[str, str]:
    database = os.environ.get("INFOGUARD_TEST_DATABASE_URL", "")
    redis = os.environ.get("INFOGUARD_TEST_REDIS_URL", "")
    if database and redis:
        return database, redis
    out = subprocess.run(
        [str(ROOT / "scripts" / "test-services"), "start"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = dict(
        line.removeprefix("export ").split("=", 1) for line in out.splitlines() if "=" in line
    )
    return found["INFOGUARD_TEST_DATABASE_URL"], found["INFOGUARD_TEST_REDIS_URL"]


@asynccontextmanager
async def fresh_schema(base: str) -> AsyncIterator[str]:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}search_path={schema}"
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


async def retries(
    url: str, messages: int, ids: itertools.count[int]
) -> tuple[dict[int, int], int, int]:
    """(messages by number of deliveries that carried an answer, messages whose deliveries
    reached both workers, failed deliveries)."""
    answered: dict[int, int] = {}
    spread = failed = 0
    per_wave = CLIENTS // RETRIES

    async def deliver(body: bytes) -> tuple[str, str]:
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.post(url, params=signed_query(), data=body) as resp,
        ):
            text = await resp.text()
            return resp.headers.get(WORKER_HEADER, "?"), text if resp.status == 200 else "!"

    async def one(number: int) -> None:
        nonlocal spread, failed
        msg_id = next(ids)
        body = text_body(f"oRetryUser{number:06d}{'x' * 12}", msg_id, QUESTIONS[number % 5])
        replies = await asyncio.gather(*(deliver(body) for _ in range(RETRIES)))
        carried = sum(text not in ("success", "!") for _, text in replies)
        failed += sum(text == "!" for _, text in replies)
        answered[carried] = answered.get(carried, 0) + 1
        spread += len({worker for worker, _ in replies}) > 1

    for start in range(0, messages, per_wave):
        await asyncio.gather(*(one(n) for n in range(start, min(messages, start + per_wave))))
    return answered, spread, failed


async def run(options: argparse.Namespace) -> None:
    database, redis = service_urls()
    ids = itertools.count(10**13)
    results: dict[int, Figures] = {}
    print(
        f"{'workers':<10}{'clients':>8}{'requests':>10}{'req/s':>12}"
        f"{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}{'deferred':>10}"
    )
    for workers in (1, 2):
        async with fresh_schema(database) as url:
            with tempfile.TemporaryDirectory() as tmp:
                port = free_port()
                env = {
                    **os.environ,
                    "WECHAT_TOKEN": TOKEN,
                    "INFOGUARD_DATABASE_URL": url,
                    "INFOGUARD_DATABASE": str(Path(tmp) / "unused.sqlite3"),
                    "INFOGUARD_REDIS_URL": redis,
                    "INFOGUARD_REDIS_PREFIX": f"bench:{uuid.uuid4().hex[:8]}:",
                    "INFOGUARD_PORT": str(port),
                    "INFOGUARD_PUSH_INTERVAL_DAYS": "0",
                    "INFOGUARD_KNOWLEDGE_DIR": str(ROOT / "knowledge"),
                    "INFOGUARD_CASES_DIR": str(ROOT / "cases_explained"),
                }
                for name in ("WECHAT_APP_ID", "WECHAT_SECRET", "WECHAT_AES_KEY"):
                    env.pop(name, None)  # no customer-service calls to the real WeChat
                subprocess.run(
                    [sys.executable, "-m", "bot", "db", "migrate"],
                    env=env,
                    check=True,
                    capture_output=True,
                )
                serve = [sys.executable, "-m", "bot", "serve", "--workers", str(workers)]
                endpoint = f"http://127.0.0.1:{port}/wechat"
                async with process(serve, env, b"serving on"):
                    await load(endpoint, "warmup", 8, WARMUP * 2 * workers, 30, ids)
                    figures = await load(
                        endpoint, str(workers), CLIENTS, options.requests, options.max_seconds, ids
                    )
                    results[workers] = figures
                    print(figures.row().replace(f"{workers:<16}", f"{workers:<10}", 1), flush=True)
                    if workers == 2:
                        answered, spread, failed = await retries(endpoint, options.messages, ids)
    one, two = (results[n].requests / results[n].seconds for n in (1, 2))
    ratio = two / one
    print(f"\n2 workers / 1 worker at {CLIENTS} clients: {ratio:.2f}x (goal ≥ {RATIO_GOAL}x)")
    once = answered.get(1, 0)
    print(
        f"retries ({RETRIES} overlapping deliveries per message, 2 workers): "
        f"{options.messages} messages, answered once {once}, never "
        f"{answered.get(0, 0)}, more than once {sum(v for k, v in answered.items() if k > 1)}; "
        f"deliveries spread over both workers for {spread}; failed deliveries {failed}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per run")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time cap per run")
    parser.add_argument("--messages", type=int, default=400, help="messages in the retry test")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
