"""Fuzzing `infoguard serve` from outside: thousands of broken WeChat safe-mode pushes and
Telegram webhook bodies (the generators of tests/fuzz_inputs.py), counted by HTTP status.

Starts the server with WeChat in safe mode and Telegram in webhook mode (a fake Telegram
Bot API on 127.0.0.1 behind it), posts --cases bodies to each webhook, then one genuine
message to each, and prints the statuses, the number of 5xx (must be 0) and whether the
genuine messages were answered. Bounded by --cases and --max-seconds per webhook.

    .venv/bin/python benchmarks/fuzz_benchmark.py [--cases 2000] [--seed N] [--max-seconds 120]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_telegram_api import TOKEN as TELEGRAM_TOKEN  # noqa: E402
from fake_telegram_api import FakeTelegramAPI  # noqa: E402
from fuzz_inputs import TelegramFuzzer, WeChatFuzzer  # noqa: E402
from wechatpy.crypto import WeChatCrypto  # noqa: E402

TOKEN = "fuzzbenchmarktoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APP_ID = "wxfuzzbenchmark0"
ACCOUNT = "gh_fuzz"
SECRET = "fuzz-secret"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start_server(
    port: int, telegram: FakeTelegramAPI, data: Path
) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "INFOGUARD_DATABASE": str(data / "fuzz.sqlite3"),
        "INFOGUARD_PORT": str(port),
        "INFOGUARD_PUBLIC_URL": "https://bot.example",
        "INFOGUARD_PUSH_INTERVAL_DAYS": "0",
        "WECHAT_TOKEN": TOKEN,
        "WECHAT_APP_ID": APP_ID,
        "WECHAT_AES_KEY": AES_KEY,
        "TELEGRAM_TOKEN": TELEGRAM_TOKEN,
        "TELEGRAM_MODE": "webhook",
        "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "TELEGRAM_API_BASE": telegram.base_url,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", env=env, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), 60)
        if not line:
            raise SystemExit("infoguard serve ended before serving")
        if b"serving on" in line:
            break
    asyncio.get_running_loop().create_task(_drain(proc.stderr))
    return proc


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


def report(name: str, statuses: Counter[tuple[str, int]], seconds: float) -> int:
    total = sum(statuses.values())
    errors = sum(n for (_, status), n in statuses.items() if status >= 500)
    by_status = Counter[int]()
    for (_, status), n in statuses.items():
        by_status[status] += n
    print(f"{name}: {total} bodies in {seconds:.1f} s, 5xx: {errors}")
    print("  by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(by_status.items())))
    labels = sorted({label for label, _ in statuses})
    for label in labels:
        row = {s: n for (lab, s), n in statuses.items() if lab == label}
        print(f"  {label:22} " + ", ".join(f"{s}: {n}" for s, n in sorted(row.items())))
    return errors


async def fuzz_wechat(
    http: aiohttp.ClientSession, base: str, args: argparse.Namespace
) -> tuple[int, bool]:
    fuzz = WeChatFuzzer(args.seed, TOKEN, AES_KEY, APP_ID, ACCOUNT)
    statuses: Counter[tuple[str, int]] = Counter()
    started = time.monotonic()
    for label, query, body in fuzz.cases(args.cases):
        if time.monotonic() - started > args.max_seconds:
            break
        async with http.post(f"{base}/wechat", params=query, data=body) as resp:
            statuses[label, resp.status] += 1
    errors = report("WeChat safe mode", statuses, time.monotonic() - started)
    query, body = fuzz.genuine("验证码能告诉别人吗", "oGenuineAfterFuzz")
    async with http.post(f"{base}/wechat", params=query, data=body) as resp:
        text = await resp.text()
    crypto = WeChatCrypto(TOKEN, AES_KEY, APP_ID)
    answered = resp.status == 200 and "<Encrypt>" in text
    if answered:
        start = text.index("<MsgSignature><![CDATA[") + 23
        signature = text[start : text.index("]]>", start)]
        start = text.index("<TimeStamp>") + 11
        stamp = text[start : text.index("</TimeStamp>")]
        start = text.index("<Nonce><![CDATA[") + 16
        nonce = text[start : text.index("]]>", start)]
        answered = "验证码" in crypto.decrypt_message(text, signature, stamp, nonce)
    return errors, answered


async def fuzz_telegram(
    http: aiohttp.ClientSession, base: str, telegram: FakeTelegramAPI, args: argparse.Namespace
) -> tuple[int, bool]:
    chats = tuple(range(5001, 5021))
    fuzz = TelegramFuzzer(args.seed, SECRET, SECRET_HEADER, chats)
    statuses: Counter[tuple[str, int]] = Counter()
    started = time.monotonic()
    for label, headers, body in fuzz.cases(args.cases):
        if time.monotonic() - started > args.max_seconds:
            break
        async with http.post(f"{base}/telegram", data=body, headers=headers) as resp:
            statuses[label, resp.status] += 1
    errors = report("Telegram webhook", statuses, time.monotonic() - started)
    genuine = fuzz.genuine(4242, "/help", 10**12)
    async with http.post(f"{base}/telegram", json=genuine, headers={SECRET_HEADER: SECRET}):
        pass
    try:
        await telegram.wait_sent(4242, 1, timeout=60)
        return errors, True
    except AssertionError:
        return errors, False


async def main(args: argparse.Namespace) -> int:
    telegram = FakeTelegramAPI()
    await telegram.start()
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        proc = await start_server(port, telegram, Path(data))
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:
                wechat_errors, wechat_ok = await fuzz_wechat(http, base, args)
                telegram_errors, telegram_ok = await fuzz_telegram(http, base, telegram, args)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 60)
            await telegram.stop()
    print(f"genuine message answered afterwards: WeChat {wechat_ok}, Telegram {telegram_ok}")
    print(f"server exit code after SIGTERM: {code}")
    failed = wechat_errors or telegram_errors or not (wechat_ok and telegram_ok) or code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000, help="bodies per webhook")
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="per webhook")
    sys.exit(asyncio.run(main(parser.parse_args())))
