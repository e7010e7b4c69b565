"""Answer quality on the paired test set, by kind, and a sweep of the answer threshold.

Each message goes through the engine, as a new conversation, so what is graded is what a
citizen gets (a case question answered with the case, an emergency with the 110 reply).
Prints answered-right, answered-wrong and declined (in scope) and out-of-scope declined, per
kind and overall, then the totals for thresholds around the current one, so the threshold can
be re-fitted after knowledge edits. Asserts nothing; tests/test_matcher_pairs.py holds budgets.

Run: .venv/bin/python -m benchmarks.matcher_quality [PAIRS.yaml] [--misses]
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bot import matcher as matcher_module
from bot.config import Settings
from bot.engine import Engine
from bot.models import IncomingMessage
from bot.runtime import running_engine

PAIRS = Path(__file__).resolve().parent.parent / "tests" / "data" / "matcher_pairs.yaml"
# What the engine reports for a built-in reply, and the entries that reply stands for.
SAME_AS = {
    "report": {"start_report"},
    "emergency": {"fraud_now", "extortion", "doxxing"},
}
# Replies that are not a confident answer: fine for a message that should be declined.
NOT_AN_ANSWER = {None, "greeting"}


@dataclass(frozen=True)
class Graded:
    item: dict[str, Any]
    got: str | None
    verdict: str


def verdict(got: str | None, expect: object) -> str:
    values = expect if isinstance(expect, list) else [expect]
    wanted = {None if v is None else str(v) for v in values}
    if wanted == {None}:
        return "declined" if got in NOT_AN_ANSWER else "oos_answered"
    if got in NOT_AN_ANSWER:
        return "missed"
    return "right" if {got, *SAME_AS.get(str(got), ())} & wanted else "wrong"


async def grade(engine: Engine, pairs: list[dict[str, Any]]) -> list[Graded]:
    graded = []
    for number, item in enumerate(pairs):
        message = IncomingMessage("quality", f"q{number}", str(item["q"]))
        outcome = await engine.respond(message)
        got = None if outcome.fallback else outcome.entry_id
        graded.append(Graded(item, got, verdict(got, item["expect"])))
        await engine.storage.forget_user("quality", f"q{number}")
    return graded


def tally(graded: list[Graded]) -> dict[str, Counter[str]]:
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for g in graded:
        by_kind[str(g.item.get("kind", "-"))][g.verdict] += 1
    return by_kind


def summary(counts: Counter[str]) -> str:
    in_scope = counts["right"] + counts["wrong"] + counts["missed"]
    oos = counts["declined"] + counts["oos_answered"]
    return (
        f"in-scope right {counts['right']}/{in_scope}, wrong {counts['wrong']}, "
        f"declined {counts['missed']}; out-of-scope declined {counts['declined']}/{oos}"
    )


def load_pairs(path: Path = PAIRS) -> list[dict[str, Any]]:
    pairs: list[dict[str, Any]] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return pairs


async def main() -> None:
    path = Path(next((a for a in sys.argv[1:] if not a.startswith("--")), PAIRS))
    pairs = load_pairs(path)
    async with running_engine(Settings(), database=":memory:") as engine:
        graded = await grade(engine, pairs)
        total: Counter[str] = Counter()
        for kind, counts in sorted(tally(graded).items()):
            total += counts
            print(f"{kind:12} {summary(counts)}")
        print(f"{'all':12} {summary(total)}")
        if "--misses" in sys.argv:
            for g in graded:
                if g.verdict not in ("right", "declined"):
                    print(
                        f"{g.verdict:12} {str(g.item['q'])[:40]} expect={g.item['expect']} "
                        f"got={g.got}"
                    )
        current = matcher_module.ANSWER_THRESHOLD
        for tau in [round(current + d / 100, 2) for d in range(-10, 11, 2)]:
            matcher_module.ANSWER_THRESHOLD = tau
            swept: Counter[str] = Counter()
            for counts in tally(await grade(engine, pairs)).values():
                swept += counts
            wrong = swept["wrong"] + swept["oos_answered"]
            utility = swept["right"] + swept["declined"] - 2 * wrong
            print(f"threshold {tau:.2f}: {summary(swept)}; utility {utility}")
        matcher_module.ANSWER_THRESHOLD = current


if __name__ == "__main__":
    asyncio.run(main())
