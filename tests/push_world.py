"""A push world for end-to-end tests and the push benchmark: the fake WeChat and Telegram APIs
on 127.0.0.1, a database of subscribers, and `infoguard push` run as a child process over real
HTTP, which can be SIGKILLed at a chosen moment (a hook of the fakes decides). Outcomes are
counted where subscribers see them: in what the fakes delivered to each."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fake_telegram_api import TOKEN, FakeTelegramAPI
from fake_wechat_api import APP_ID, SECRET, FakeWeChatAPI

ROOT = Path(__file__).resolve().parent.parent
HEADING = "【以案释法】"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    killed: bool


@dataclass
class Tally:
    """One channel after a round, counted at the fake server."""

    subscribers: int = 0
    reached: int = 0
    """Got the round's case exactly once, and nothing else."""
    missed: int = 0
    """Got nothing."""
    twice: int = 0
    """Got the round's case more than once."""
    other_case: int = 0
    """Got a case other than the round's (or several cases)."""
    problems: list[str] = field(default_factory=list)


@dataclass
class PushWorld:
    folder: Path
    telegram_rate: float = 200.0
    threaded: bool = False
    """Run each fake on its own thread and event loop, as separate servers would be: one
    fake busy with a 10,000-openid body does not leave the other's requests unread."""
    database_url: str = ""
    """A migrated postgresql:// database instead of the SQLite file in `folder`."""
    wechat: FakeWeChatAPI = field(default_factory=FakeWeChatAPI)
    telegram: FakeTelegramAPI = field(default_factory=FakeTelegramAPI)
    kill_now: asyncio.Event = field(default_factory=asyncio.Event)
    _loop: asyncio.AbstractEventLoop | None = None
    _threads: list[tuple[asyncio.AbstractEventLoop, threading.Thread]] = field(default_factory=list)

    @property
    def database(self) -> Path:
        return self.folder / "infoguard.sqlite3"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._on_own_loop(self.wechat.start())
        await self._on_own_loop(self.telegram.start())

    async def stop(self) -> None:
        await self._on_own_loop(self.wechat.close(), reuse=0)
        await self._on_own_loop(self.telegram.stop(), reuse=1)
        for loop, thread in self._threads:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()

    def signal_kill(self) -> None:
        """Ask for the kill; callable from a fake's hook on any thread."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.kill_now.set)

    async def _on_own_loop(self, work: Coroutine[Any, Any, Any], reuse: int | None = None) -> Any:
        if not self.threaded:
            return await work
        if reuse is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, daemon=True)
            thread.start()
            self._threads.append((loop, thread))
        else:
            loop = self._threads[reuse][0]
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, loop))

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WECHAT_", "TELEGRAM_"))}
        env.update(
            WECHAT_APP_ID=APP_ID,
            WECHAT_SECRET=SECRET,
            WECHAT_API_BASE=self.wechat.base_url,
            TELEGRAM_TOKEN=TOKEN,
            TELEGRAM_API_BASE=self.telegram.base_url,
            TELEGRAM_PUSH_RATE=str(self.telegram_rate),
            INFOGUARD_DATABASE=str(self.database),
            INFOGUARD_DATABASE_URL=self.database_url,
            PTB_TIMEDELTA="true",
        )
        env.pop("INFOGUARD_PUBLIC_URL", None)
        return env

    def seed(self, channel: str, users: Sequence[str], had: dict[str, str] | None = None) -> None:
        """Subscribe `users`; `had` maps some of them to a case they already received."""
        if self.database_url:
            seed_postgres(self.database_url, channel, users, had or {})
            return
        create_schema(self.database)
        now = time.time()
        with contextlib.closing(sqlite3.connect(self.database)) as db, db:
            db.executemany(
                "INSERT OR IGNORE INTO subscribers VALUES (?, ?, ?)",
                ((channel, user, now) for user in users),
            )
            db.executemany(
                "INSERT INTO push_deliveries VALUES (?, ?, ?, 'sent', 'seed', 1, '', NULL, ?)",
                ((channel, user, case, now) for user, case in (had or {}).items()),
            )

    async def push(self, *args: str, kill: bool = False, timeout: float = 120.0) -> Run:
        """`infoguard push ARGS` as a child; SIGKILLed as soon as `kill_now` is set (when
        `kill`). The event is cleared first."""
        self.kill_now.clear()
        started = time.perf_counter()
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "push", *args,
            env=self.env(), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        output = asyncio.create_task(child.communicate())
        killer = asyncio.create_task(self.kill_now.wait())
        killed = False
        async with asyncio.timeout(timeout):
            done, _ = await asyncio.wait({output, killer}, return_when=asyncio.FIRST_COMPLETED)
            if killer in done and kill and not output.done():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                killed = True
            killer.cancel()
            stdout, stderr = await output
        return Run(
            child.returncode or 0,
            stdout.decode(),
            stderr.decode(),
            time.perf_counter() - started,
            killed,
        )


def pending_rows(world: PushWorld) -> list[tuple[str, str]]:
    """(channel, user_id) of every delivery left pending in the world's database."""
    sql = "SELECT channel, user_id FROM push_deliveries WHERE status = 'pending'"
    if not world.database_url:
        with contextlib.closing(sqlite3.connect(world.database)) as db:
            return [(str(c), str(u)) for c, u in db.execute(sql).fetchall()]
    found: list[tuple[str, str]] = []

    async def run() -> None:
        import asyncpg

        conn = await asyncpg.connect(world.database_url)
        try:
            found.extend((str(c), str(u)) for c, u in await conn.fetch(sql))
        finally:
            await conn.close()

    asyncio.run(run()) if not _in_loop() else _run_in_thread(run)
    return found


def seed_postgres(url: str, channel: str, users: Sequence[str], had: dict[str, str]) -> None:
    async def run() -> None:
        import asyncpg

        now = time.time()
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                # COPY is the fast way in; through a scratch table, to ignore repeats.
                await conn.execute("CREATE TEMP TABLE seed (LIKE subscribers) ON COMMIT DROP")
                await conn.copy_records_to_table(
                    "seed", records=((channel, user, now) for user in users)
                )
                await conn.execute(
                    "INSERT INTO subscribers SELECT * FROM seed ON CONFLICT DO NOTHING"
                )
            await conn.executemany(
                "INSERT INTO push_deliveries VALUES ($1, $2, $3, 'sent', 'seed', 1, '', NULL, $4)",
                [(channel, user, case, now) for user, case in had.items()],
            )
        finally:
            await conn.close()

    asyncio.run(run()) if not _in_loop() else _run_in_thread(run)


def create_schema(database: Path) -> None:
    async def run() -> None:
        from bot.ledger import SqlitePushStore
        from bot.storage import SqliteStorage

        storage = await SqliteStorage.open(database)
        await SqlitePushStore.open(storage)
        await storage.close()

    asyncio.run(run()) if not _in_loop() else _run_in_thread(run)


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run_in_thread(factory: Callable[[], object]) -> None:
    thread = threading.Thread(target=lambda: asyncio.run(factory()))  # type: ignore[arg-type]
    thread.start()
    thread.join()


def case_of(text: str, titles: dict[str, str]) -> str:
    """The case id a pushed text is about (by its title after the heading), or "?"."""
    start = text.find(HEADING)
    if start < 0:
        return "?"
    line = text[start + len(HEADING) :].split("\n", 1)[0]
    return titles.get(line.strip(), "?")


def tally(
    received: dict[str, list[str]], expected: dict[str, str], titles: dict[str, str]
) -> Tally:
    """Count, per subscriber in `expected` (user -> the round's case), what they received."""
    result = Tally(subscribers=len(expected))
    for user, case in expected.items():
        cases = Counter(case_of(text, titles) for text in received.get(user, []))
        if not cases:
            result.missed += 1
            continue
        if cases[case] > 1:
            result.twice += 1
        if set(cases) != {case}:
            result.other_case += 1
            if len(result.problems) < 5:
                result.problems.append(f"{user[-6:]}: {dict(cases)} (expected {case})")
        if cases == Counter({case: 1}):
            result.reached += 1
    return result


def summary_line(stdout: str, channel: str) -> str:
    return next((line.strip() for line in stdout.splitlines() if f"{channel}:" in line), "")
