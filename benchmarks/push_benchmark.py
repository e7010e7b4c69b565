"""Push benchmark, counted where subscribers see it: `infoguard push` (both channels) as a
child process against the fake WeChat and Telegram APIs of tests/ over real HTTP on 127.0.0.1.

1. Speed: 100,000 WeChat subscribers, uninterrupted: the child's wall time and peak RSS.
2. Exactly once under kill -9: WeChat and Telegram subscribers, one "next unseen case" round,
   the child SIGKILLed three times, at chosen moments, then run to the end:
   - while WeChat handles the batch of two that ends a case (10,001 recipients: 9,999 + 2;
     before, the odd one went alone by customer-service message);
   - while Telegram messages wait behind the rate limiter (at the Nth message of the run);
   - at a random moment.
   Half the subscribers of each channel already had the first case, so they get the second.
   Then the next push: everybody must get their next unseen case.
   Printed per channel: reached (the round's case exactly once), missed, received twice,
   received a different case, and the next push's check.

    python benchmarks/push_benchmark.py [--wechat 20002] [--telegram 300] [--speed 100000]

Telegram goes at the bot's real pace (25 messages a second) by default: what is in doubt at a
kill is what is on the wire, which grows with the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from push_world import PushWorld, Run, Tally, pending_rows, summary_line, tally

from bot.config import Settings
from bot.push import push_order
from bot.runtime import load

TIME_GOAL_SECONDS = 15.0
"""For 100,000 subscribers; in proportion for more (a million: 150 s)."""
RSS_GOAL_MB = 150.0


def openid(number: int) -> str:
    return f"oBench{number:022d}"  # 28 characters, like a real openid


def chat(number: int) -> str:
    return str(700_000_000 + number)


def peak_child_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


async def speed(args: argparse.Namespace, folder: Path, order: list[str]) -> dict[str, Any]:
    world = PushWorld(folder, database_url=args.database_url)
    await world.start()
    try:
        world.seed("wechat", [openid(n) for n in range(args.speed)])
        run = await world.push("--channel", "wechat", timeout=max(120.0, args.speed / 1000))
        delivered = sum(len(texts) for texts in world.wechat.received.values())
        return {
            "subscribers": args.speed,
            "seconds": run.seconds,
            "peak_rss_mb": peak_child_rss_mb(),
            "delivered": delivered,
            "mass_sends": len(world.wechat.calls_to("message/mass/send")),
            "summary": summary_line(run.stdout, "wechat"),
            "returncode": run.returncode,
        }
    finally:
        await world.stop()


async def kills(
    args: argparse.Namespace, folder: Path, order: list[str], titles: dict[str, str]
) -> dict[str, Any]:
    rng = random.Random(args.seed)
    world = PushWorld(
        folder, telegram_rate=args.telegram_rate, threaded=True, database_url=args.database_url
    )
    await world.start()
    try:
        wechat_users = [openid(n) for n in range(args.wechat)]
        telegram_users = [chat(n) for n in range(args.telegram)]

        # The first half (rounded up) had the first case already: they get the second.
        def had(users: list[str]) -> dict[str, str]:
            return {u: order[0] for u in users[: (len(users) + 1) // 2]}

        world.seed("wechat", wechat_users, had(wechat_users))
        world.seed("telegram", telegram_users, had(telegram_users))
        expected = {
            "wechat": {u: order[1] if u in had(wechat_users) else order[0] for u in wechat_users},
            "telegram": {
                u: order[1] if u in had(telegram_users) else order[0] for u in telegram_users
            },
        }
        moments = ["during the WeChat batch of two", "Telegram queued", "at random"]
        runs: list[dict[str, Any]] = []
        for moment in moments:
            if runs and not runs[-1].get("killed"):
                # The round finished before the kill came: another run would be a new round.
                runs.append({"moment": moment, "skipped": True})
                continue
            counting = {"telegram": 0}

            async def on_wechat(call: Any, moment: str = moment) -> None:
                body = call.body
                if moment.startswith("during") and len(body.get("touser", [])) == 2:
                    world.signal_kill()
                    await asyncio.sleep(0.3)  # the kill lands while WeChat is sending

            async def on_telegram(
                call: Any, moment: str = moment, counting: dict[str, int] = counting
            ) -> None:
                if call.method != "sendMessage":
                    return
                counting["telegram"] += 1
                if moment == "Telegram queued" and counting["telegram"] == args.telegram // 4:
                    world.signal_kill()

            world.wechat.on_call = on_wechat
            world.telegram.on_call = on_telegram
            if moment == "at random":
                delay = rng.uniform(2.0, 5.0)  # after start-up, during the push
                asyncio.get_running_loop().call_later(delay, world.signal_kill)
            run = await world.push(kill=True)
            await asyncio.sleep(0.5)  # what was on the wire reaches the fakes' books
            runs.append({**describe(moment, run), "in_flight": in_flight(world)})
        world.wechat.on_call = world.telegram.on_call = None
        if runs[-1].get("killed"):
            final = await world.push()
            runs.append(describe("final run", final))
        results: dict[str, Any] = {"runs": runs, "channels": {}}
        received = {
            "wechat": {u: list(t) for u, t in world.wechat.received.items()},
            "telegram": {str(c): list(t) for c, t in world.telegram.received.items()},
        }
        for channel in ("wechat", "telegram"):
            results["channels"][channel] = tally(received[channel], expected[channel], titles)
        # The next push: each subscriber's next unseen case, from what they really received.
        before = {
            "wechat": {u: len(t) for u, t in world.wechat.received.items()},
            "telegram": {str(c): len(t) for c, t in world.telegram.received.items()},
        }
        following = await world.push()
        runs.append(describe("next push", following))
        after = {
            "wechat": world.wechat.received,
            "telegram": {str(c): t for c, t in world.telegram.received.items()},
        }
        for channel, users in (("wechat", wechat_users), ("telegram", telegram_users)):
            seeded = had(users)
            nexts: dict[str, str] = {}
            new_texts: dict[str, list[str]] = {}
            for user in users:
                seen = {seeded[user]} if user in seeded else set()
                seen |= {titles_case(t, titles) for t in received[channel].get(user, [])}
                nexts[user] = next(c for c in order if c not in seen)
                new_texts[user] = after[channel].get(user, [])[before[channel].get(user, 0) :]
            results["channels"][channel + "_next"] = tally(new_texts, nexts, titles)
        return results
    finally:
        await world.stop()


def in_flight(world: PushWorld) -> dict[str, list[int]]:
    """Per channel, deliveries the killed push left pending: [rows, of which received]."""
    rows = pending_rows(world)
    received = {
        "wechat": world.wechat.received,
        "telegram": {str(c): t for c, t in world.telegram.received.items()},
    }
    found: dict[str, list[int]] = {"wechat": [0, 0], "telegram": [0, 0]}
    for channel, user in rows:
        found[channel][0] += 1
        found[channel][1] += bool(received[channel].get(user))
    return found


def titles_case(text: str, titles: dict[str, str]) -> str:
    from push_world import case_of

    return case_of(text, titles)


def describe(moment: str, run: Run) -> dict[str, Any]:
    return {
        "moment": moment,
        "killed": run.killed,
        "seconds": round(run.seconds, 2),
        "wechat": summary_line(run.stdout, "wechat"),
        "telegram": summary_line(run.stdout, "telegram"),
        "returncode": run.returncode,
    }


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings()
    cards = push_order(load(settings), settings.case_url)
    order = [card.case_id for card in cards]
    titles = {card.title: card.case_id for card in cards}
    base_url = args.database_url
    with tempfile.TemporaryDirectory(prefix="push-bench-") as tmp:
        results: dict[str, Any] = {}
        if args.speed:
            (Path(tmp) / "speed").mkdir()
            async with own_schema(base_url) as args.database_url:
                results["speed"] = await speed(args, Path(tmp) / "speed", order)
        (Path(tmp) / "kills").mkdir()
        async with own_schema(base_url) as args.database_url:
            results["kills"] = await kills(args, Path(tmp) / "kills", order, titles)
    return results


@contextlib.asynccontextmanager
async def own_schema(base_url: str) -> AsyncIterator[str]:
    """A new, migrated schema of the PostgreSQL database `base_url` for one run (dropped
    after); "" (SQLite) stays ""."""
    if not base_url:
        yield ""
        return
    import asyncpg

    from bot.storage import migrate_database

    schema = f"push_bench_{random.randrange(16**8):08x}"
    conn = await asyncpg.connect(base_url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        url = f"{base_url}{'&' if '?' in base_url else '?'}search_path={schema}"
        await migrate_database(url)
        yield url
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


def report(results: dict[str, Any], kills_made: int) -> bool:
    ok = True
    if "speed" in results:
        s = results["speed"]
        time_goal = TIME_GOAL_SECONDS * max(1.0, s["subscribers"] / 100_000)
        time_ok = s["seconds"] <= time_goal
        rss_ok = s["peak_rss_mb"] <= RSS_GOAL_MB
        all_got = s["delivered"] == s["subscribers"]
        ok &= time_ok and rss_ok and all_got
        print(f"speed: {s['subscribers']:,} WeChat subscribers, one push, uninterrupted")
        print(
            f"  {s['seconds']:.1f} s (child process, start to exit), peak RSS "
            f"{s['peak_rss_mb']:.0f} MB, {s['mass_sends']} mass sends, "
            f"{s['delivered']:,} received at the fake WeChat"
        )
        print(f"  {s['summary']}")
        print(
            f"  bars: time <= {time_goal:g} s {'OK' if time_ok else 'MISSED'}, "
            f"RSS <= {RSS_GOAL_MB:g} MB {'OK' if rss_ok else 'MISSED'}"
        )
    k = results["kills"]
    print("exactly once under SIGKILL:")
    for run in k["runs"]:
        if run.get("skipped"):
            print(f"  {run['moment']:<32} not made: the round had finished")
            continue
        state = "SIGKILL" if run["killed"] else f"exit {run['returncode']}"
        print(f"  {run['moment']:<32} {state:<8} {run['seconds']:6.1f} s")
        if "in_flight" in run:
            flight = run["in_flight"]
            print(
                "      left in flight: "
                + ", ".join(f"{c} {n} ({got} of them received)" for c, (n, got) in flight.items())
            )
        for channel in ("wechat", "telegram"):
            if run[channel]:
                print(f"      {run[channel]}")
    for channel in ("wechat", "telegram"):
        t: Tally = k["channels"][channel]
        n: Tally = k["channels"][channel + "_next"]
        print(
            f"  {channel:<8} {t.subscribers:,} subscribers: reached {t.reached:,}, missed "
            f"{t.missed}, received twice {t.twice}, a different case {t.other_case}"
        )
        print(
            f"  {'':<8} next push, next unseen case: {n.reached:,} of {n.subscribers:,} "
            f"(missed {n.missed}, twice {n.twice}, another case {n.other_case})"
        )
        for problem in t.problems + n.problems:
            print(f"  {'':<8}   e.g. {problem}")
    w, tg = k["channels"]["wechat"], k["channels"]["telegram"]
    wechat_ok = w.missed == w.twice == w.other_case == 0
    telegram_ok = tg.missed + tg.twice <= kills_made and tg.other_case == 0
    nexts_ok = all(
        k["channels"][c + "_next"].reached == k["channels"][c + "_next"].subscribers
        for c in ("wechat",)
    )
    print(
        f"  bars: WeChat exactly once {'OK' if wechat_ok else 'MISSED'}, Telegram missed + "
        f"twice <= {kills_made} kills {'OK' if telegram_ok else 'MISSED'}, WeChat next push "
        f"{'OK' if nexts_ok else 'MISSED'}"
    )
    return ok and wechat_ok and telegram_ok and nexts_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=int, default=100_000, help="0 skips the speed run")
    parser.add_argument("--wechat", type=int, default=20_002)
    parser.add_argument("--telegram", type=int, default=300)
    parser.add_argument(
        "--telegram-rate",
        type=float,
        default=25.0,
        help="TELEGRAM_PUSH_RATE of the pushes (default: the bot's own, 25/s)",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--database-url",
        default="",
        help="push on this migrated postgresql:// database (use an empty one: it is filled "
        "with subscribers) instead of a SQLite file",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    results = asyncio.run(benchmark(args))
    kills_made = sum(1 for run in results["kills"]["runs"] if run.get("killed"))
    if args.json:
        print(json.dumps(results, default=lambda o: o.__dict__))
        return 0
    return 0 if report(results, kills_made) else 1


if __name__ == "__main__":
    sys.exit(main())
