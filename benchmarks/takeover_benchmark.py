"""Takeover benchmark: the scheduled push of `infoguard serve --workers 2` when the worker that
pushes is SIGKILLed in the middle, counted where subscribers see it (at the fake WeChat API).

1. A fresh schema on the test PostgreSQL (INFOGUARD_TEST_DATABASE_URL), migrated with
   `infoguard db migrate`, and a Redis prefix of its own (INFOGUARD_TEST_REDIS_URL); N WeChat
   subscribers; the fake WeChat API of tests/ on 127.0.0.1 with its mass sends slowed down and
   taken one at a time (`mass_send_seconds`), so that the push lasts a few seconds.
2. `infoguard serve --workers 2`, WeChat on and pointed at the fake. On a fresh database the
   scheduled push starts at once. Once the first mass send has reached the fake, the lease row
   names the worker that pushes (host/pid); it is SIGKILLed right after the Kth mass send was
   carried out and before WeChat's answer reaches it (delivered, not recorded as sent), while
   its next batches wait their turn at the fake (their calls die with it: never delivered).
3. Until every subscriber has the case and the round is finished in the ledger (at most
   --timeout s after the kill), then prints: the takeover time (kill -> first delivery by the
   new owner; beside it the lease changing hands and the new owner's first mass send, which
   may be a repeat that WeChat drops), who took over (the other worker, or the killed one as
   restarted by the supervisor), the total time, and per subscriber: reached exactly once,
   missed, received twice, received a different case.
4. SIGTERM to the supervisor; the schema and the Redis keys are dropped.

Bars: 0 missed, 0 received twice or another case, takeover within 60 s (and the kill made
mid-push). Exit 0 when they hold, 1 otherwise. Everything runs on 127.0.0.1.

    source /tmp/svc.env   # INFOGUARD_TEST_DATABASE_URL, INFOGUARD_TEST_REDIS_URL
    .venv/bin/python -m benchmarks.takeover_benchmark [--subscribers 200000] [--kill-at K]
        [--send-seconds S] [--timeout 180]

At least 2 mass sends are needed (more than 10,000 subscribers) for a kill mid-push.

Without those variables `scripts/test-services start` starts the servers (as for
benchmarks/scale_benchmark.py). Timings are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Also run as `python benchmarks/takeover_benchmark.py`; tests/ holds the fakes.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import asyncpg
from push_world import PushWorld, Tally, pending_rows, tally

from benchmarks.push_benchmark import openid
from benchmarks.scale_benchmark import fresh_schema, service_urls
from benchmarks.wechat_benchmark import TOKEN, free_port
from bot.channels.wechat_api import MASS_SEND_MAX
from bot.config import Settings
from bot.push import PushOptions, lease_owner, push_order
from bot.runtime import load
from bot.schedule import BUSY_RETRY_SECONDS

ROOT = Path(__file__).resolve().parent.parent
MASS = "message/mass/send"
TAKEOVER_GOAL_SECONDS = 60.0
QUEUE_SECONDS = 7.0
"""Default slowness: the mass sends one worker has in flight at once take this long in all at
the fake, well within the client's 10 s timeout (a timed-out call would be retried)."""
STOP_TIMEOUT_SECONDS = 45.0
LEASE_SQL = "SELECT owner FROM push_lease WHERE name = 'push'"


@dataclass(frozen=True)
class Send:
    """A mass send the fake carried out (answered, or about to be)."""

    at: float
    """time.monotonic() when it was carried out."""
    recipients: int
    fresh: bool
    """It delivered: its clientmsgid was new (a repeat is dropped by WeChat)."""


@dataclass
class Killer:
    """The fake's hook: records each mass send, and SIGKILLs `pid` once the `at`th is carried
    out (before it is answered). Runs on the fake's thread."""

    at: int
    pid: int | None = None
    ready: bool = False
    killed_at: float | None = None
    sends: list[Send] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    known: dict[str, int] = field(default_factory=dict)

    async def on_call(self, call: Any) -> None:
        if call.path != MASS:
            return
        key = str(call.body.get("clientmsgid", ""))
        fresh = key not in self.seen and key in self.known  # registered: it was sent
        self.seen.add(key)
        self.sends.append(Send(time.monotonic(), len(set(call.body.get("touser", []))), fresh))
        if self.killed_at is None and self.pid and self.ready and len(self.sends) >= self.at:
            os.kill(self.pid, signal.SIGKILL)
            self.killed_at = time.monotonic()
            await asyncio.sleep(1.0)  # the answer is lost: its client is gone


@dataclass
class Outcome:
    subscribers: int
    send_seconds: float
    batches: int
    started: float = 0.0
    """time.monotonic() when the server was started."""
    warmup_seconds: float = 0.0
    ready_at: float | None = None
    workers: dict[int, int] = field(default_factory=dict)
    """pid -> worker number at the kill."""
    killed_pid: int | None = None
    killed_owner: str = ""
    in_flight: tuple[int, int, int] = (0, 0, 0)
    """Right after the kill: pending rows, their batches, of them received at the fake."""
    new_owner: str = ""
    lease_moved_at: float | None = None
    who: str = "nobody"
    done_at: float | None = None
    sends: list[Send] = field(default_factory=list)
    killed_at: float | None = None
    received: dict[str, list[str]] = field(default_factory=dict)
    ledger: dict[str, int] = field(default_factory=dict)
    rounds_open: int = -1
    stop_code: int | None = None
    stop_seconds: float = 0.0
    exited_early: bool = False
    """The server had exited by itself before the SIGTERM."""
    titles: dict[str, str] = field(default_factory=dict)
    """Case title -> case id, of the content the server pushes."""
    expected_case: str = ""
    """The case of the round: the first in push order (nobody had any)."""
    log: list[tuple[float, str]] = field(default_factory=list)
    failure: str = ""


def worker_pids(supervisor: int) -> dict[int, int]:
    """pid -> worker number of the supervisor's live workers (from /proc)."""
    found: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != supervisor:
                continue
            args = (stat.parent / "cmdline").read_bytes().split(b"\0")
            found[int(stat.parent.name)] = int(args[args.index(b"--worker") + 1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, a zombie, or not a worker
    return found


def owner_pid(owner: str) -> int | None:
    """The pid in a lease owner id (machine/pid/random), if it is a process of this machine."""
    machine, pid, _ = [*owner.rsplit("/", 2), "", ""][:3]
    here = lease_owner().rsplit("/", 2)[0]
    return int(pid) if machine == here and pid.isdigit() else None


def serve_env(world: PushWorld, url: str, redis: str, prefix: str, port: int) -> dict[str, str]:
    """The push world's environment (WeChat at the fake, the database), WeChat's webhook on,
    Telegram off, the scheduled push on its default interval (due at once on a new database),
    and a snapshot of the knowledge and cases: an edit made meanwhile (other work on the
    checkout) would have each worker train the matcher anew at start."""
    settings = Settings.from_env()
    snapshot = {}
    for name, folder in (("knowledge", settings.knowledge_dir), ("cases", settings.cases_dir)):
        snapshot[name] = world.folder / name
        shutil.copytree(folder, snapshot[name])
    env = {k: v for k, v in world.env().items() if not k.startswith("TELEGRAM_")}
    env.update(
        INFOGUARD_KNOWLEDGE_DIR=str(snapshot["knowledge"]),
        INFOGUARD_CASES_DIR=str(snapshot["cases"]),
        WECHAT_TOKEN=TOKEN,
        INFOGUARD_DATABASE_URL=url,
        INFOGUARD_REDIS_URL=redis,
        INFOGUARD_REDIS_PREFIX=prefix,
        INFOGUARD_HOST="127.0.0.1",
        INFOGUARD_PORT=str(port),
        INFOGUARD_PUSH_INTERVAL_DAYS=str(Settings().push_interval_days),
    )
    return env


@contextlib.asynccontextmanager
async def supervisor(
    env: dict[str, str], out: Outcome
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`infoguard serve --workers 2` (its own session). Its stderr lines go to `out.log`;
    stopped with SIGTERM at the end (the exit code and time go to `out`)."""
    out.started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", "--workers", "2",
        env=env, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stderr is not None

    async def read(stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            out.log.append((time.monotonic(), text))
            if out.ready_at is None and "serving on" in text:
                out.ready_at = time.monotonic()

    reader = asyncio.create_task(read(proc.stderr))
    try:
        yield proc
    finally:
        stopping = time.monotonic()
        out.exited_early = proc.returncode is not None
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the group this benchmark started
                await proc.wait()
                out.failure = out.failure or "the server did not stop on SIGTERM"
        out.stop_code = proc.returncode
        out.stop_seconds = time.monotonic() - stopping
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader, 5)


WARM_UP = """
import asyncio
from bot.config import Settings
from bot.runtime import running_engine
async def main():
    async with running_engine(Settings.from_env(), database=":memory:"):
        pass
asyncio.run(main())
"""


async def warm_matcher(env: dict[str, str]) -> float:
    """Train the matcher into the cache once, if the knowledge changed since it last was:
    otherwise each worker trains it at start, and may miss the supervisor's start timeout."""
    started = time.monotonic()
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", WARM_UP],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=900,
    )
    return time.monotonic() - started


async def until(condition: Any, seconds: float, step: float = 0.02) -> bool:
    """Poll `condition()` until true or `seconds` passed."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


async def drop_redis_keys(url: str, prefix: str) -> None:
    import redis.asyncio as redis

    client = redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def benchmark(args: argparse.Namespace) -> Outcome:
    database, redis = service_urls()
    batches = max(1, math.ceil(args.subscribers / MASS_SEND_MAX))
    in_flight = min(batches, PushOptions().concurrency)
    send_seconds = args.send_seconds or min(1.0, QUEUE_SECONDS / in_flight)
    out = Outcome(args.subscribers, send_seconds, batches)
    killer = Killer(at=max(2, args.kill_at or batches // 4))
    prefix = f"takeover-bench:{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory(prefix="takeover-bench-") as tmp:
        async with fresh_schema(database) as url:
            world = PushWorld(Path(tmp), threaded=True, database_url=url)
            await world.start()
            try:
                env = serve_env(world, url, redis, prefix, free_port())
                settings = Settings.from_env(env)
                cards = push_order(load(settings), settings.case_url)
                out.titles = {card.title: card.case_id for card in cards}
                out.expected_case = cards[0].case_id
                migrate = [sys.executable, "-m", "bot", "db", "migrate"]
                await asyncio.to_thread(
                    subprocess.run, migrate, env=env, cwd=ROOT, check=True, capture_output=True
                )
                out.warmup_seconds = await warm_matcher(env)
                world.seed("wechat", [openid(n) for n in range(args.subscribers)])
                world.wechat.mass_send_seconds = send_seconds
                killer.known = world.wechat.clientmsgids
                world.wechat.on_call = killer.on_call
                conn = await asyncpg.connect(url)
                try:
                    async with supervisor(env, out) as proc:
                        await run(args, out, killer, world, conn, proc)
                        out.ledger = dict(
                            await conn.fetch(
                                "SELECT status, COUNT(*) FROM push_deliveries GROUP BY status"
                            )
                        )
                        out.rounds_open = await conn.fetchval(
                            "SELECT COUNT(*) FROM push_run_channels WHERE finished_at IS NULL"
                        )
                finally:
                    await conn.close()
            finally:
                world.wechat.on_call = None
                await world.stop()
                await drop_redis_keys(redis, prefix)
    out.sends, out.killed_at = list(killer.sends), killer.killed_at
    out.received = {user: list(texts) for user, texts in world.wechat.received.items()}
    return out


async def run(
    args: argparse.Namespace,
    out: Outcome,
    killer: Killer,
    world: PushWorld,
    conn: asyncpg.Connection,
    proc: asyncio.subprocess.Process,
) -> None:
    """From the server's start to the end of the push (or of the time allowed)."""
    supervisor_pid = proc.pid
    await until(lambda: out.ready_at is not None or proc.returncode is not None, 150)
    if out.ready_at is None:
        out.failure = "the server did not report ready"
        return
    killer.ready = True
    if not await until(lambda: bool(killer.sends), 120):
        out.failure = "no mass send reached the fake within 120 s of the server being ready"
        return
    owner = await conn.fetchval(LEASE_SQL)
    pid = owner_pid(owner or "")
    out.workers = worker_pids(supervisor_pid)
    if pid not in out.workers:
        out.failure = f"the lease owner {owner!r} is not one of the workers {out.workers}"
        return
    out.killed_pid, out.killed_owner = pid, owner
    killer.pid = pid  # armed: killed at the `at`th mass send
    subscribers = args.subscribers
    if not await until(
        lambda: killer.killed_at is not None or len(world.wechat.received) >= subscribers, 120
    ):
        out.failure = "the push neither reached the kill nor finished within 120 s"
        return
    if killer.killed_at is None:
        out.failure = "the push finished before the kill (more --subscribers or --send-seconds)"
        return
    killed_at = killer.killed_at
    await asyncio.sleep(0.2)  # the dead worker's connections are closed by now
    rows = pending_rows(world)
    keys = await conn.fetchval(
        "SELECT COUNT(DISTINCT batch_key) FROM push_deliveries WHERE status = 'pending'"
    )
    out.in_flight = (len(rows), keys, sum(bool(world.wechat.received.get(u)) for _, u in rows))
    deadline = killed_at + args.timeout
    checked = 0.0
    while time.monotonic() < deadline:
        owner = await conn.fetchval(LEASE_SQL)
        if out.lease_moved_at is None and owner and owner != out.killed_owner:
            out.new_owner, out.lease_moved_at = owner, time.monotonic()
        if len(world.wechat.received) >= subscribers and time.monotonic() - checked > 0.5:
            checked = time.monotonic()
            open_rounds = await conn.fetchval(
                "SELECT COUNT(*) FROM push_run_channels WHERE finished_at IS NULL"
            )
            pending = await conn.fetchval(
                "SELECT COUNT(*) FROM push_deliveries WHERE status = 'pending'"
            )
            if open_rounds == 0 and pending == 0:
                out.done_at = time.monotonic()
                break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # a stray late send would show now
    new_pid = owner_pid(out.new_owner)
    now = worker_pids(supervisor_pid)
    if new_pid is None:
        out.who = "nobody seen taking the lease" if not out.new_owner else out.new_owner
    elif new_pid in out.workers:
        out.who = f"the other worker: worker {out.workers[new_pid]} (pid {new_pid})"
    elif new_pid in now:
        out.who = f"the restarted worker: worker {now[new_pid]} (pid {new_pid})"
    else:
        out.who = f"pid {new_pid} (not a worker of this server now)"


def report(out: Outcome) -> bool:
    print(
        f"takeover between serve workers: {out.subscribers:,} WeChat subscribers, "
        f"{out.batches} mass sends of up to {MASS_SEND_MAX:,}, each {out.send_seconds:.2f} s "
        "at the fake, one at a time"
    )
    print(f"  matcher cache warmed up in {out.warmup_seconds:.1f} s (before the server)")
    t0 = out.started
    if out.ready_at is not None:
        print(f"  serve --workers 2 ready after {out.ready_at - t0:.1f} s")
    first = out.sends[0].at if out.sends else None
    killed = out.killed_at
    if first is not None:
        print(f"  first delivery at the fake {first - t0:.1f} s after the start")
    if killed is None:
        print(f"  NOT KILLED: {out.failure}")
        for _, line in out.log[-12:]:
            print(f"    server: {line[:160]}")
    else:
        before = [s for s in out.sends if s.at < killed]
        number = out.workers.get(out.killed_pid or 0, "?")
        print(
            f"  SIGKILL of the lease owner, worker {number} (pid {out.killed_pid}), "
            f"{killed - t0:.1f} s after the start, just after mass send {len(before)} was "
            f"carried out (not yet answered): {sum(s.recipients for s in before):,} "
            "subscribers had the case"
        )
        rows, keys, got = out.in_flight
        print(
            f"  left pending in the ledger: {rows:,} recipients in {keys} batches, "
            f"{got:,} of them already delivered"
        )
    after = [s for s in out.sends if killed is not None and s.at > killed]
    moved = out.lease_moved_at
    stale = [s for s in after if moved is None or s.at < moved]
    fresh = [s for s in after if s.fresh]
    takeover: float | None = None
    if killed is not None:
        if moved is not None:
            print(f"  lease taken over {moved - killed:.1f} s after the kill by {out.who}")
        else:
            print(f"  lease not seen changing hands ({out.who})")
        if after:
            print(f"  new owner's first mass send {after[0].at - killed:.1f} s after the kill")
        if fresh:
            takeover = fresh[0].at - killed
        elif after:
            takeover = after[0].at - killed  # nothing was left to deliver, only repeats
        if takeover is not None:
            print(f"  takeover time (kill -> first delivery by the new owner): {takeover:.1f} s")
        print(
            f"  after the kill: {len(fresh)} mass sends delivered "
            f"({sum(s.recipients for s in fresh):,} recipients), "
            f"{len(after) - len(fresh)} repeat(s) dropped by WeChat (same clientmsgid)"
            + (f", {len(stale)} before the lease moved (from the dead worker?)" if stale else "")
        )
        restarts = [line for _, line in out.log if "exited" in line and "restarting" in line]
        for line in restarts:
            print(f"  supervisor: {line.removeprefix('infoguard: ')}")
    if out.done_at is not None and first is not None:
        print(
            f"  everybody reached and the round finished {out.done_at - first:.1f} s after the "
            f"first delivery ({out.done_at - killed:.1f} s after the kill)"
            if killed is not None
            else f"  done {out.done_at - first:.1f} s after the first delivery"
        )
    elif killed is not None:
        print(f"  NOT DONE within the time allowed after the kill: {out.failure or 'timeout'}")
    expected = {openid(n): out.expected_case for n in range(out.subscribers)}
    t: Tally = tally(out.received, expected, out.titles)
    print(
        f"  per subscriber: reached exactly once {t.reached:,}, missed {t.missed:,}, received "
        f"twice {t.twice:,}, a different case {t.other_case:,} (of {t.subscribers:,})"
    )
    for problem in t.problems:
        print(f"    e.g. {problem}")
    strays = len(set(out.received) - set(expected))
    if strays:
        print(f"  {strays} openids that are not subscribers received something")
    ledger = ", ".join(f"{status} {n:,}" for status, n in sorted(out.ledger.items()))
    print(f"  ledger: {ledger or 'empty'}; rounds left open: {out.rounds_open}")
    if out.exited_early:
        print(f"  server had exited by itself: exit {out.stop_code}")
    else:
        print(f"  server stopped by SIGTERM: exit {out.stop_code} after {out.stop_seconds:.1f} s")
    problems = Counter(
        re.sub(r"\d+", "N", line.split(" ", 2)[-1])
        for _, line in out.log
        if " WARNING " in line or " ERROR " in line or "Traceback" in line
    )
    for line, count in problems.most_common(6):
        print(f"  server log x{count}: {line[:140]}")
    if out.failure and killed is not None:
        print(f"  note: {out.failure}")
    once = t.missed == 0 and t.twice == 0 and t.other_case == 0 and not strays
    fast = takeover is not None and takeover <= TAKEOVER_GOAL_SECONDS
    print(
        f"  bars: missed 0 and twice 0 {'OK' if once else 'MISSED'}, takeover <= "
        f"{TAKEOVER_GOAL_SECONDS:g} s {'OK' if fast else 'MISSED'} (another worker looks every "
        f"{BUSY_RETRY_SECONDS:g} s), killed mid-push {'OK' if killed is not None else 'MISSED'}"
    )
    return once and fast and killed is not None and out.stop_code == 0 and not out.exited_early


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=200_000)
    parser.add_argument(
        "--kill-at",
        type=int,
        default=0,
        help="kill after this mass send (default: a quarter of them; at least the 2nd, as the "
        "owner is looked up once the first has arrived)",
    )
    parser.add_argument(
        "--send-seconds",
        type=float,
        default=0.0,
        help=f"seconds each mass send takes at the fake (default: {QUEUE_SECONDS:g} s over "
        "the sends in flight at once)",
    )
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds allowed after the kill"
    )
    out = asyncio.run(benchmark(parser.parse_args()))
    return 0 if report(out) else 1


if __name__ == "__main__":
    sys.exit(main())
