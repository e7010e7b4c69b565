"""Scale-out benchmark: `infoguard serve` with 1 and with 2 workers on PostgreSQL + Redis.

1. Throughput and latency of signed WeChat text messages at 64 concurrent clients (each its
   own user, every message its own MsgId), for 1 worker and for `--workers 2`, both servers up
   and taking turns for a few rounds; the ratio of the best runs.
2. Retries: each message posted 4 times at once, each delivery on a connection of its own (so
   the kernel spreads them over both workers), 16 messages at a time (64 connections); per
   message, how many deliveries carried the answer (must be exactly one), and on how many
   workers its deliveries landed (from the X-InfoGuard-Worker header).

Beside each run: the cores the server's processes kept busy, their CPU time per request, the
cores busy with anything else meanwhile ("others": PostgreSQL, Redis, and whatever else runs
on the machine), which on a shared machine caps what a second worker can add, and the load
client's own CPU time per request (it shares the cores with the server).

The client is benchmarks/wechat_benchmark.py's. The servers are INFOGUARD_TEST_DATABASE_URL and
INFOGUARD_TEST_REDIS_URL if set, else the ones `scripts/test-services start` starts (tuned
for tests: no fsync); each run gets a schema and a Redis prefix of its own.

    .venv/bin/python -m benchmarks.scale_benchmark [--requests 3000] [--max-seconds 15]
        [--rounds 3] [--messages 400]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import tempfile
import time
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


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(root: int) -> float:
    """CPU time used so far by process `root` and its children (the workers)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        if root in (pid, ppid):
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy so far (all cores, everyone's processes)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / TICKS


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


@asynccontextmanager
async def server(
    workers: int, database: str, redis: str, tmp: str
) -> AsyncIterator[tuple[str, int]]:
    """`infoguard serve --workers N` on a schema of its own: (webhook URL, supervisor pid)."""
    async with fresh_schema(database) as url:
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
        migrate = [sys.executable, "-m", "bot", "db", "migrate"]
        subprocess.run(migrate, env=env, check=True, capture_output=True)
        serve = [sys.executable, "-m", "bot", "serve", "--workers", str(workers)]
        async with process(serve, env, b"serving on") as proc:
            yield f"http://127.0.0.1:{port}/wechat", proc.pid


async def measured(
    endpoint: str, pid: int, workers: int, options: argparse.Namespace, ids: itertools.count[int]
) -> Figures:
    server_before, machine_before = cpu_seconds(pid), machine_busy_seconds()
    client_before = time.process_time()  # this process is the load client only
    figures = await load(
        endpoint, str(workers), CLIENTS, options.requests, options.max_seconds, ids
    )
    used = cpu_seconds(pid) - server_before
    client = time.process_time() - client_before
    # Busy cores that were neither the server nor this client: PostgreSQL, Redis, and whatever
    # else runs on a shared machine.
    others = machine_busy_seconds() - machine_before - used - client
    row = figures.row().replace(f"{workers:<16}", f"{workers:<10}", 1)
    done = max(1, figures.requests)
    print(
        f"{row}{used / figures.seconds:>11.2f}{used / done * 1000:>12.2f}"
        f"{others / figures.seconds:>8.2f}{client / done * 1000:>15.3f}",
        flush=True,
    )
    return figures


async def run(options: argparse.Namespace) -> None:
    database, redis = service_urls()
    ids = itertools.count(10**13)
    rates: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            server(1, database, redis, tmp) as (one_url, one_pid),
            server(2, database, redis, tmp) as (two_url, two_pid),
        ):
            for url in (one_url, two_url):
                await load(url, "warmup", 8, WARMUP * 4, 30, ids)
            print(
                f"{'workers':<10}{'clients':>8}{'requests':>10}{'req/s':>12}"
                f"{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}{'deferred':>10}"
                f"{'srv cores':>11}{'cpu ms/req':>12}{'others':>8}{'client ms/req':>15}"
            )
            # Both servers stay up and take turns, so that a burst of other work on a shared
            # machine does not land on one of them only.
            for _ in range(options.rounds):
                for workers, url, pid in ((1, one_url, one_pid), (2, two_url, two_pid)):
                    figures = await measured(url, pid, workers, options, ids)
                    rates[workers].append(figures.requests / figures.seconds)
            answered, spread, failed = await retries(two_url, options.messages, ids)
    best = {n: max(r) for n, r in rates.items()}
    print(
        f"\n2 workers / 1 worker at {CLIENTS} clients, best of {options.rounds} each: "
        f"{best[2] / best[1]:.2f}x ({best[2]:.0f} vs {best[1]:.0f} req/s; goal ≥ {RATIO_GOAL}x)"
    )
    print(
        f"retries ({RETRIES} overlapping deliveries per message, 2 workers): "
        f"{options.messages} messages, answered once {answered.get(1, 0)}, never "
        f"{answered.get(0, 0)}, more than once {sum(v for k, v in answered.items() if k > 1)}; "
        f"deliveries spread over both workers for {spread}; failed deliveries {failed}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per run")
    parser.add_argument("--max-seconds", type=float, default=15.0, help="time cap per run")
    parser.add_argument("--messages", type=int, default=400, help="messages in the retry test")
    parser.add_argument("--rounds", type=int, default=3, help="turns each server takes")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
