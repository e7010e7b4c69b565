"""WeChat webhook throughput and latency on loopback.

Starts `infoguard serve` (one process, a temporary SQLite database) and, as the ceiling, a
bare aiohttp handler that returns a fixed XML reply, then posts signed text messages to each
at 1, 16 and 64 concurrent clients and prints requests/s and p50/p99 latency. Every message
has its own MsgId; each client is its own WeChat user. Bounded by --requests per level and
--max-seconds per level.

    .venv/bin/python benchmarks/wechat_benchmark.py [--requests 2000] [--max-seconds 20]
        [--knowledge DIR --cases DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

TOKEN = "benchmarktoken"
LEVELS = (1, 16, 64)
WARMUP = 50
QUESTIONS = (
    "验证码能告诉别人吗",
    "信息泄露了怎么办",
    "有人冒充警察给我打电话",
    "快递单怎么处理",
    "被骗了怎么报警",
    "你好",
    "我的身份证复印件被别人拿去了咋整",
    "今天天气怎么样",
)
BARE_SERVER = """
import sys
from aiohttp import web
REPLY = ("<xml><ToUserName><![CDATA[u]]></ToUserName><FromUserName><![CDATA[gh]]></FromUserName>"
         "<CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType>"
         "<Content><![CDATA[fixed reply]]></Content></xml>")
async def reply(request):
    await request.read()
    return web.Response(text=REPLY, content_type="application/xml")
app = web.Application()
app.router.add_post("/wechat", reply)
print("serving", file=sys.stderr, flush=True)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


@dataclass
class Figures:
    target: str
    clients: int
    requests: int
    seconds: float
    latencies: list[float]
    errors: int
    deferred: int
    """Answered `success` (the answer would have gone by customer service)."""

    def row(self) -> str:
        ordered = sorted(self.latencies) or [0.0]
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        rate = self.requests / self.seconds if self.seconds else 0.0
        return (
            f"{self.target:<16}{self.clients:>8}{self.requests:>10}{rate:>12.0f}"
            f"{p50:>10.1f}{p99:>10.1f}{self.errors:>8}{self.deferred:>10}"
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def process(
    args: list[str], env: dict[str, str], ready: bytes
) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL
    )
    assert proc.stderr is not None
    try:
        seen = b""
        while ready not in seen:  # `serve` says which channels are on before "serving on"
            line = await asyncio.wait_for(proc.stderr.readline(), 60)
            seen += line
            if not line:
                raise SystemExit(f"server did not start: {seen.decode(errors='replace')}")
        drain = asyncio.create_task(proc.stderr.read())  # keep the pipe from filling up
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
        if "drain" in locals():
            drain.cancel()


def signed_query() -> dict[str, str]:
    stamp, nonce = str(int(time.time())), "bench"
    signature = hashlib.sha1("".join(sorted([TOKEN, stamp, nonce])).encode()).hexdigest()
    return {"signature": signature, "timestamp": stamp, "nonce": nonce}


def text_body(user: str, msg_id: int, question: str) -> bytes:
    """A WeChat text message push (plain mode) from `user`."""
    return (
        f"<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA["
        f"{user}]]></FromUserName><CreateTime>{int(time.time())}</CreateTime><MsgType>"
        f"<![CDATA[text]]></MsgType><Content><![CDATA[{question}]]></Content>"
        f"<MsgId>{msg_id}</MsgId></xml>"
    ).encode()


async def load(
    url: str, target: str, clients: int, total: int, max_seconds: float, ids: itertools.count[int]
) -> Figures:
    latencies: list[float] = []
    errors = deferred = 0
    sent = 0
    stop_at = time.perf_counter() + max_seconds
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client(number: int) -> None:
            nonlocal errors, deferred, sent
            user = f"oBenchUser{number:04d}{'x' * 14}"
            while sent < total and time.perf_counter() < stop_at:
                sent += 1
                msg_id = next(ids)
                body = text_body(user, msg_id, QUESTIONS[msg_id % len(QUESTIONS)])
                began = time.perf_counter()
                try:
                    async with http.post(url, params=signed_query(), data=body) as resp:
                        text = await resp.text()
                        ok = resp.status == 200
                except aiohttp.ClientError:
                    ok, text = False, ""
                latencies.append(time.perf_counter() - began)
                errors += not ok
                deferred += ok and text == "success"

        began = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        seconds = time.perf_counter() - began
    return Figures(target, clients, len(latencies), seconds, latencies, errors, deferred)


async def run(options: argparse.Namespace) -> None:
    ids = itertools.count(10**12)
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        bot_port, bare_port = free_port(), free_port()
        env = {
            **os.environ,
            "WECHAT_TOKEN": TOKEN,
            "INFOGUARD_DATABASE": str(Path(tmp) / "bench.sqlite3"),
            "INFOGUARD_PORT": str(bot_port),
            "INFOGUARD_KNOWLEDGE_DIR": str(options.knowledge or root / "knowledge"),
            "INFOGUARD_CASES_DIR": str(options.cases or root / "cases_explained"),
        }
        for name in ("WECHAT_APP_ID", "WECHAT_SECRET", "WECHAT_AES_KEY"):
            env.pop(name, None)  # no customer-service calls to the real WeChat
        serve = [sys.executable, "-m", "bot", "serve"]
        bare = [sys.executable, "-c", BARE_SERVER, str(bare_port)]
        async with process(serve, env, b"serving on"), process(bare, env, b"serving"):
            targets = [
                ("bare aiohttp", f"http://127.0.0.1:{bare_port}/wechat"),
                ("infoguard serve", f"http://127.0.0.1:{bot_port}/wechat"),
            ]
            for _, url in targets:
                await load(url, "warmup", 4, WARMUP, 30, ids)
            print(
                f"{'target':<16}{'clients':>8}{'requests':>10}{'req/s':>12}"
                f"{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}{'deferred':>10}"
            )
            for clients in LEVELS:
                for name, url in targets:
                    figures = await load(
                        url, name, clients, options.requests, options.max_seconds, ids
                    )
                    print(figures.row(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per level")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="time cap per level")
    parser.add_argument("--knowledge", type=Path, help="knowledge folder (default: bundled)")
    parser.add_argument("--cases", type=Path, help="cases folder (default: bundled)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
