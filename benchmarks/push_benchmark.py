"""Push benchmark: 100,000 subscribers through a fake per-user sender with 5 ms latency.

1. A full push in a child process: wall time, throughput, and the child's own peak RSS.
2. The same push killed with SIGKILL at random points and resumed: duplicate and missed
   deliveries, counted from the sender's own durable log (both must be 0).

The push is a "next unseen case" round over three cases; a third of the subscribers already
had the first one, so they must get the second. The fake sender is idempotent by batch key, like
WeChat's clientmsgid, and commits every delivery to its own SQLite file (group-committed) before
it reports it sent, so a kill can land between delivery and ledger at any moment.

    python benchmarks/push_benchmark.py [--subscribers 100000] [--kills 1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from bot.ledger import Ledger
from bot.models import CaseCard
from bot.push import PushEngine, PushOptions
from bot.sender import Result, Status
from bot.storage import SqliteStorage

CHANNEL = "bench"
CARDS = [
    CaseCard("case_2020", "案例一", "摘要一", "https://bot.example/cases/case_2020"),
    CaseCard("case_2021", "案例二", "摘要二", "https://bot.example/cases/case_2021"),
    CaseCard("case_2022", "案例三", "摘要三", "https://bot.example/cases/case_2022"),
]
TIME_GOAL_SECONDS = 60.0
RSS_GOAL_MB = 150.0


def user_id(number: int) -> str:
    return f"user{number:07d}"


def expected_case(number: int) -> str:
    """Every third subscriber already had the first case, so gets the second."""
    return CARDS[1].case_id if number % 3 == 0 else CARDS[0].case_id


class DurableFakeSender:
    """One message per user after `latency`; every delivery is committed to a log file before
    `send` returns, and a repeated (batch key, user) is not delivered again."""

    channel = CHANNEL
    max_batch = 1
    idempotent = True

    def __init__(self, db: aiosqlite.Connection, latency: float) -> None:
        self.db = db
        self.latency = latency
        self._queue: list[tuple[list[tuple[str, str, str]], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path, latency: float) -> DurableFakeSender:
        db = await aiosqlite.connect(str(path))
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute(
            "CREATE TABLE IF NOT EXISTS delivered (batch_key TEXT NOT NULL, user_id TEXT NOT NULL,"
            " case_id TEXT NOT NULL, PRIMARY KEY (batch_key, user_id)) WITHOUT ROWID"
        )
        await db.commit()
        return cls(db, latency)

    async def send(
        self, card: CaseCard, recipients: Sequence[str], *, batch_key: str
    ) -> dict[str, Result]:
        await asyncio.sleep(self.latency)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(([(batch_key, r, card.case_id) for r in recipients], future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await future
        return {r: Result(Status.SENT) for r in recipients}

    async def _flush(self) -> None:
        while self._queue:
            wave, self._queue = self._queue, []
            rows = [row for rows, _ in wave for row in rows]
            await self.db.executemany("INSERT OR IGNORE INTO delivered VALUES (?, ?, ?)", rows)
            await self.db.commit()
            for _, future in wave:
                future.set_result(None)


# The child: one push, as `infoguard push` would run it.


async def child(args: argparse.Namespace) -> dict[str, Any]:
    storage = await SqliteStorage.open(args.database)
    sender = await DurableFakeSender.open(args.log, args.latency)
    ledger = await Ledger.open(storage)
    options = PushOptions(concurrency=args.concurrency)
    engine = PushEngine(storage, ledger, CARDS, options=options)
    # A resumed run finishes the round the killed one opened; it starts one only if the kill
    # came before the first run got that far (as the scheduler does with its claimed period).
    async with storage.db.execute("SELECT 1 FROM push_rounds WHERE channel = ?", (CHANNEL,)) as cur:
        new_round = not args.resume or await cur.fetchone() is None
    started = time.perf_counter()
    report = await engine.push([sender], new_round=new_round)
    wall = time.perf_counter() - started
    await sender.db.close()
    await storage.close()
    counts = report.totals
    return {
        "push_seconds": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sent": counts.sent,
        "skipped": counts.skipped,
        "uncertain": counts.uncertain,
        "resumed": counts.resumed,
        "failed": counts.failed,
    }


# The parent: seeding, timing, killing and counting.


def seed(database: Path, subscribers: int) -> None:
    async def schema() -> None:
        storage = await SqliteStorage.open(database)
        await Ledger.open(storage)
        await storage.close()

    asyncio.run(schema())
    with sqlite3.connect(database) as db:
        now = time.time()
        db.executemany(
            "INSERT INTO subscribers VALUES (?, ?, ?)",
            ((CHANNEL, user_id(n), now) for n in range(subscribers)),
        )
        db.executemany(
            "INSERT INTO push_deliveries VALUES (?, ?, ?, 'sent', 'seed', 1, '', NULL, ?)",
            ((CHANNEL, user_id(n), CARDS[0].case_id, now) for n in range(0, subscribers, 3)),
        )


def child_command(
    args: argparse.Namespace, database: Path, log: Path, *, resume: bool = False
) -> list[str]:
    return [
        sys.executable, __file__, "--child", "--database", str(database), "--log", str(log),
        "--latency", str(args.latency), "--concurrency", str(args.concurrency),
        *(["--resume"] if resume else []),
    ]  # fmt: skip


def run_child(
    args: argparse.Namespace, database: Path, log: Path, *, resume: bool = False
) -> dict[str, Any]:
    done = subprocess.run(
        child_command(args, database, log, resume=resume),
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def delivered_count(log: Path) -> int:
    if not log.exists():
        return 0
    with sqlite3.connect(log) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM delivered").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def verify(log: Path, subscribers: int) -> dict[str, int]:
    """Duplicates: extra deliveries of a case to a user; missed: subscribers who got nothing;
    wrong: subscribers who got another case than their next unseen one."""
    with sqlite3.connect(log) as db:
        rows = db.execute("SELECT user_id, case_id, COUNT(*) FROM delivered GROUP BY 1, 2")
        got: dict[str, list[tuple[str, int]]] = {}
        for user, case, count in rows:
            got.setdefault(user, []).append((case, count))
    duplicates = sum(count - 1 for cases in got.values() for _, count in cases)
    missed = sum(1 for n in range(subscribers) if user_id(n) not in got)
    wrong = sum(
        1
        for n in range(subscribers)
        if user_id(n) in got and [c for c, _ in got[user_id(n)]] != [expected_case(n)]
    )
    deliveries = sum(count for cases in got.values() for _, count in cases)
    return {"deliveries": deliveries, "duplicates": duplicates, "missed": missed, "wrong": wrong}


def ledger_statuses(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT status, COUNT(*) FROM push_deliveries GROUP BY status")
        return {status: count for status, count in rows}


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    results: dict[str, Any] = {"subscribers": args.subscribers, "latency_ms": args.latency * 1000}
    with tempfile.TemporaryDirectory(prefix="push-bench-") as tmp:
        folder = Path(tmp)
        database, log = folder / "full.sqlite3", folder / "full-log.sqlite3"
        seed(database, args.subscribers)
        started = time.perf_counter()
        full = run_child(args, database, log)
        child_wall = time.perf_counter() - started
        full_check = verify(log, args.subscribers)
        results["full"] = {
            **full,
            "child_wall_seconds": child_wall,
            "throughput_per_second": full["sent"] / full["push_seconds"],
            **full_check,
            "ledger": ledger_statuses(database),
        }

        database, log = folder / "killed.sqlite3", folder / "killed-log.sqlite3"
        seed(database, args.subscribers)
        kills = []
        for number in range(args.kills):
            delay = rng.uniform(0.05, 0.95) * child_wall
            process = subprocess.Popen(
                child_command(args, database, log, resume=number > 0),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(delay)
            finished = process.poll() is not None
            if not finished:
                os.kill(process.pid, signal.SIGKILL)
            process.wait()
            kills.append(
                {
                    "after_seconds": round(delay, 2),
                    "delivered": delivered_count(log),
                    "finished_first": finished,
                }
            )
        resumed = run_child(args, database, log, resume=True)
        results["killed"] = {
            "kills": kills,
            "resume": resumed,
            **verify(log, args.subscribers),
            "ledger": ledger_statuses(database),
        }
    return results


def report(results: dict[str, Any]) -> None:
    full, killed = results["full"], results["killed"]
    print(
        f"push benchmark: {results['subscribers']:,} subscribers, fake per-user sender, "
        f"{results['latency_ms']:g} ms latency"
    )
    print(
        f"  full push:   {full['push_seconds']:.1f} s push ({full['child_wall_seconds']:.1f} s "
        f"child process), {full['throughput_per_second']:,.0f} deliveries/s, "
        f"peak RSS {full['peak_rss_mb']:.0f} MB"
    )
    print(
        f"               sent {full['sent']:,}, skipped {full['skipped']:,}; duplicates "
        f"{full['duplicates']}, missed {full['missed']}, wrong case {full['wrong']}"
    )
    for number, kill in enumerate(killed["kills"], 1):
        print(
            f"  SIGKILL #{number}:  after {kill['after_seconds']} s, "
            f"{kill['delivered']:,} deliveries logged"
            + (" (the run had finished already)" if kill["finished_first"] else "")
        )
    resume = killed["resume"]
    print(
        f"  resumed:     sent {resume['sent']:,}, skipped {resume['skipped']:,}, re-sent in "
        f"flight {resume['resumed']}, uncertain {resume['uncertain']}"
    )
    print(
        f"  after kill:  {killed['deliveries']:,} deliveries; duplicates {killed['duplicates']}, "
        f"missed {killed['missed']}, wrong case {killed['wrong']}"
    )
    ok_time = full["push_seconds"] <= TIME_GOAL_SECONDS
    ok_rss = full["peak_rss_mb"] <= RSS_GOAL_MB
    ok_once = all(r[k] == 0 for r in (full, killed) for k in ("duplicates", "missed", "wrong"))
    print(
        f"  goals:       time <= {TIME_GOAL_SECONDS:g} s {'OK' if ok_time else 'MISSED'}, "
        f"RSS <= {RSS_GOAL_MB:g} MB {'OK' if ok_rss else 'MISSED'}, "
        f"exactly once {'OK' if ok_once else 'MISSED'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--latency", type=float, default=0.005, help="seconds per send")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--kills", type=int, default=1, help="SIGKILLs before the final resume")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        figures = asyncio.run(child(args))
        print(json.dumps(figures))
        return 0
    results = benchmark(args)
    if args.json:
        print(json.dumps(results))
    else:
        report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
