"""WeChat webhook throughput and latency on loopback.

Starts `infoguard serve` (one process, a temporary SQLite database) and, as the ceiling, a
bare aiohttp handler that returns a fixed XML reply, then posts signed text messages to each
at 1, 16 and 64 concurrent clients and prints requests/s and p50/p99 latency. Every message
has its own MsgId; each client is its own WeChat user. Bounded by --requests per level and
--max-seconds per level. Beside each level, the load client's own CPU time per request.

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
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import yaml

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


def signed_query(stamp: int | None = None) -> dict[str, str]:
    """The query WeChat signs a push with, for `stamp` (default: now)."""
    stamp_text, nonce = str(int(time.time()) if stamp is None else stamp), "bench"
    signature = hashlib.sha1("".join(sorted([TOKEN, stamp_text, nonce])).encode()).hexdigest()
    return {"signature": signature, "timestamp": stamp_text, "nonce": nonce}


def text_body(user: str, msg_id: int, question: str) -> bytes:
    """A WeChat text message push (plain mode) from `user`."""
    return (
        f"<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA["
        f"{user}]]></FromUserName><CreateTime>{int(time.time())}</CreateTime><MsgType>"
        f"<![CDATA[text]]></MsgType><Content><![CDATA[{question}]]></Content>"
        f"<MsgId>{msg_id}</MsgId></xml>"
    ).encode()


Reply = tuple[int, bytes, bool]
"""Status, body, and whether the server closes the connection after it."""


def parse_reply(buffer: bytearray) -> Reply | None:
    """The HTTP/1.1 response at the start of `buffer`, or None while it is incomplete. The
    server always sends Content-Length; a response without one raises (KeyError)."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buffer[:end]).lower().split(b"\r\n")
    status = int(lines[0].split(None, 2)[1])
    fields = dict(line.split(b":", 1) for line in lines[1:])
    start = end + 4
    stop = start + int(fields[b"content-length"])  # int() ignores the blanks around it
    if len(buffer) < stop:
        return None
    close = fields.get(b"connection", b"").strip() == b"close" or lines[0].startswith(b"http/1.0")
    return status, bytes(buffer[start:stop]), close


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Reply] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        try:
            reply = parse_reply(self.buffer)
        except (ValueError, LookupError) as exc:
            self.waiter.set_exception(ConnectionError(f"bad response: {exc!r}"))
            return
        if reply is not None:
            self.waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("closed before the response"))

    async def exchange(self, request: bytes) -> Reply:
        assert self.transport is not None
        self.buffer.clear()
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def load(
    url: str,
    target: str,
    clients: int,
    total: int,
    max_seconds: float,
    ids: itertools.count[int],
    questions: Sequence[str] = QUESTIONS,
) -> Figures:
    """`clients` concurrent WeChat users posting signed text messages to `url` until `total`
    requests or `max_seconds`.

    A bare HTTP/1.1 client on asyncio, one keep-alive connection per user, rather than
    aiohttp's: the client shares the machine's cores with the server it measures, so the less
    CPU it takes per request (a third of aiohttp's or less), the more the figure is the server's.
    The signature covers only token, timestamp and nonce, so the request head is signed once a
    second, not per request. A connection error, a malformed response or a status other than
    200 counts as an error; `deferred` counts 200s whose body is `success`."""
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = deferred = 0
    sent = 0
    stop_at = time.perf_counter() + max_seconds
    signed_at, head = -1, b""

    def request(body: bytes) -> bytes:
        nonlocal signed_at, head
        now = int(time.time())
        if now != signed_at:
            signed_at = now
            head = (
                f"POST {path}?{urlencode(signed_query(now))} HTTP/1.1\r\nHost: {parts.netloc}"
                f"\r\nContent-Type: text/xml\r\nContent-Length: "
            ).encode()
        return b"%s%d\r\n\r\n%s" % (head, len(body), body)

    async def client(number: int) -> None:
        nonlocal errors, deferred, sent
        user = f"oBenchUser{number:04d}{'x' * 14}"
        conn: Connection | None = None
        try:
            while sent < total and time.perf_counter() < stop_at:
                sent += 1
                msg_id = next(ids)
                body = text_body(user, msg_id, questions[msg_id % len(questions)])
                began = time.perf_counter()
                try:
                    if conn is None or conn.lost:
                        _, conn = await loop.create_connection(Connection, host, port)
                    status, text, close = await conn.exchange(request(body))
                    ok = status == 200
                except OSError:  # ConnectionError included
                    ok, text, close = False, b"", True
                latencies.append(time.perf_counter() - began)
                errors += not ok
                deferred += ok and text == b"success"
                if close and conn is not None:
                    conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    seconds = time.perf_counter() - began
    return Figures(target, clients, len(latencies), seconds, latencies, errors, deferred)


def test_set_messages() -> list[str]:
    """Every message of the paired test sets: most of them new to the encoder's memory."""
    folder = Path(__file__).resolve().parent.parent / "tests" / "data"
    found = []
    for path in sorted(folder.glob("matcher_pairs*.yaml")):
        found += [" ".join(str(item["q"]).split()) for item in yaml.safe_load(path.read_text())]
    return found


async def run(options: argparse.Namespace) -> None:
    ids = itertools.count(10**12)
    questions = test_set_messages() if options.varied else QUESTIONS
    print(f"{len(set(questions))} different messages", flush=True)
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
                f"{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}{'deferred':>10}{'client ms/req':>15}"
            )
            for clients in LEVELS:
                for name, url in targets:
                    cpu = time.process_time()  # this process is the load client only
                    figures = await load(
                        url, name, clients, options.requests, options.max_seconds, ids, questions
                    )
                    cpu = time.process_time() - cpu
                    client = cpu / max(1, figures.requests) * 1000
                    print(f"{figures.row()}{client:>15.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per level")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="time cap per level")
    parser.add_argument("--knowledge", type=Path, help="knowledge folder (default: bundled)")
    parser.add_argument("--cases", type=Path, help="cases folder (default: bundled)")
    parser.add_argument(
        "--varied",
        action="store_true",
        help="post the test sets' messages (about 2,000) instead of 8 fixed ones",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
