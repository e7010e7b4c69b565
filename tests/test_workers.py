"""`infoguard serve --workers 2` on PostgreSQL + Redis, over real HTTP on 127.0.0.1: the
kernel spreads connections over both workers, and WeChat's overlapping retries of one message,
reaching different workers, are answered once (counted at the HTTP responses and at the fake
WeChat API's customer-service endpoint, where the user would see them)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from conftest import RedisTarget
from fake_wechat_api import APP_ID, SECRET, FakeWeChatAPI
from test_wechat_webhook import TOKEN, signed, text_xml

from bot.cli import main
from bot.server import WORKER_HEADER

SEND = "message/custom/send"
QUESTION = "验证码能告诉别人吗"
ANSWER = "验证码只给你自己用"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def fake_wechat() -> AsyncIterator[FakeWeChatAPI]:
    fake = FakeWeChatAPI()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def two_workers(
    mini_dirs: tuple[Path, Path],
    migrated_postgres_url: str,
    redis_target: RedisTarget,
    fake_wechat: FakeWeChatAPI,
) -> AsyncIterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "INFOGUARD_KNOWLEDGE_DIR": str(mini_dirs[0]),
        "INFOGUARD_CASES_DIR": str(mini_dirs[1]),
        "INFOGUARD_DATABASE_URL": migrated_postgres_url,
        "INFOGUARD_REDIS_URL": redis_target.url,
        "INFOGUARD_REDIS_PREFIX": redis_target.prefix,
        "INFOGUARD_PUSH_INTERVAL_DAYS": "0",
        "WECHAT_TOKEN": TOKEN,
        "WECHAT_APP_ID": APP_ID,
        "WECHAT_SECRET": SECRET,
        "WECHAT_API_BASE": fake_wechat.base_url,
        "WECHAT_REPLY_BUDGET": "4",
    }
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bot", "serve", "--workers", "2", "--port", str(port)),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    seen = b""
    try:
        async with asyncio.timeout(90):
            while b"serving on" not in seen:
                line = await proc.stderr.readline()
                assert line, f"serve --workers 2 did not start: {seen.decode(errors='replace')}"
                seen += line
        assert b"with 2 workers" in seen
        drain = asyncio.create_task(proc.stderr.read())
        yield f"http://127.0.0.1:{port}/wechat"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 40)
        if "drain" in locals():
            drain.cancel()
    assert proc.returncode == 0


async def post_once(url: str, xml: str) -> tuple[str, str]:
    """One delivery on a connection of its own, as WeChat's retries come: (worker, body)."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
        http.post(url, params=signed(), data=xml.encode()) as response,
    ):
        assert response.status == 200
        return response.headers[WORKER_HEADER], await response.text()


async def test_retries_spread_over_two_workers_are_answered_once(
    two_workers: str, fake_wechat: FakeWeChatAPI
) -> None:
    messages = 12
    retries = 4
    spread = 0
    workers_seen: set[str] = set()
    for number in range(messages):
        user = f"oWorkerTestUser{number:04d}xxxxxxxxxx"
        push = text_xml(QUESTION, user=user)
        replies = await asyncio.gather(*(post_once(two_workers, push) for _ in range(retries)))
        workers = {worker for worker, _ in replies}
        workers_seen |= workers
        spread += len(workers) > 1
        passive = [body for _, body in replies if body != "success"]
        await asyncio.sleep(0.05)  # a customer-service send would have started by now
        by_service = [c for c in fake_wechat.calls_to(SEND) if c.body.get("touser") == user]
        assert len(passive) + len(by_service) == 1, (replies, by_service)
        if passive:
            assert ANSWER in passive[0]
    assert workers_seen == {"1", "2"}
    # Connections are spread by the kernel: most messages had retries on both workers.
    assert spread >= 3, spread


def test_several_workers_refuse_telegram_polling(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TELEGRAM_TOKEN", "123:abc")
    monkeypatch.setenv("TELEGRAM_MODE", "polling")
    assert main(["serve", "--workers", "2"]) == 1
    assert "several workers need TELEGRAM_MODE=webhook" in capsys.readouterr().err
