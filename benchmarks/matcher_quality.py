"""Answer quality on the paired test sets, by kind: what a citizen gets, graded by content.

Each message goes through the engine as a new conversation, so what is graded is what a
citizen gets (a case question answered with the case, an emergency with the 110 reply, a
clarify counted as no answer). An item is graded as `../shared/eval/grade.py` does: when it
lists `must` regular expressions the answer text must contain them (whichever entry gave it),
otherwise the answering entry must be one of `expect`; `must_not` (an echoed number) fails
it either way. Asserts nothing; tests/test_matcher_pairs.py holds the budgets.

The test sets are never trained or tuned on: thresholds come from cross-validation on the
knowledge base (`infoguard kb eval`).

Run: .venv/bin/python -m benchmarks.matcher_quality [PAIRS.yaml ...] [--misses]
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bot.config import Settings
from bot.engine import Engine
from bot.models import IncomingMessage, Outcome
from bot.runtime import running_engine

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
DESIGN_SET = DATA / "matcher_pairs.yaml"
"""Written before the trained matcher; used to compare designs (not thresholds)."""
UNSEEN_SETS = sorted(DATA.glob("matcher_pairs_unseen_*.yaml"))
"""Written by people who saw only topics.md and the research notes; measured, never tuned on."""
# What the engine reports for a built-in reply, and the entries that reply stands for.
SAME_AS = {
    "report": {"start_report"},
    "emergency": {"fraud_now", "extortion", "doxxing"},
    "greeting": {"smalltalk"},
}
# Replies that are not an answer: right for a message that should be declined.
NOT_AN_ANSWER = {None, "greeting", "smalltalk"}


@dataclass(frozen=True)
class Graded:
    item: dict[str, Any]
    got: str | None
    verdict: str
    answer: str = ""


def verdict(item: dict[str, Any], got: str | None, answer: str) -> str:
    values = item["expect"] if isinstance(item["expect"], list) else [item["expect"]]
    wanted = {None if v is None else str(v) for v in values}
    if wanted == {None}:
        return "declined" if got in NOT_AN_ANSWER else "oos_answered"
    if any(re.search(p, answer) for p in item.get("must_not", [])):
        return "wrong"
    if got in NOT_AN_ANSWER and not wanted & {"smalltalk"}:
        return "missed"
    if item.get("must"):
        ok = all(any(re.search(p, answer, re.I) for p in group) for group in item["must"])
        return "right" if ok else "wrong"
    return "right" if {got, *SAME_AS.get(str(got), ())} & wanted else "wrong"


def _got(outcome: Outcome) -> str | None:
    return None if outcome.fallback else outcome.entry_id


async def grade(engine: Engine, pairs: list[dict[str, Any]]) -> list[Graded]:
    graded = []
    for number, item in enumerate(pairs):
        message = IncomingMessage("quality", f"q{number}", str(item["q"]))
        outcome = await engine.respond(message)
        answer = "\n".join(r.text for r in outcome.replies)
        got = _got(outcome)
        graded.append(Graded(item, got, verdict(item, got, answer), answer))
        await engine.storage.forget_user("quality", f"q{number}")
    return graded


def tally(graded: list[Graded]) -> dict[str, Counter[str]]:
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for g in graded:
        by_kind[str(g.item.get("kind", "-"))][g.verdict] += 1
    return by_kind


def rates(counts: Counter[str]) -> tuple[float, float, float]:
    """In-scope right and wrong shares, out-of-scope declined share."""
    in_scope = counts["right"] + counts["wrong"] + counts["missed"]
    oos = counts["declined"] + counts["oos_answered"]
    return (
        counts["right"] / max(in_scope, 1),
        counts["wrong"] / max(in_scope, 1),
        counts["declined"] / max(oos, 1),
    )


def summary(counts: Counter[str]) -> str:
    in_scope = counts["right"] + counts["wrong"] + counts["missed"]
    oos = counts["declined"] + counts["oos_answered"]
    right, wrong, declined = rates(counts)
    return (
        f"in-scope right {counts['right']}/{in_scope} ({right:.1%}), wrong {counts['wrong']} "
        f"({wrong:.1%}), no answer {counts['missed']}; "
        f"out-of-scope declined {counts['declined']}/{oos} ({declined:.1%})"
    )


def load_pairs(*paths: Path) -> list[dict[str, Any]]:
    pairs: list[dict[str, Any]] = []
    for path in paths or (DESIGN_SET,):
        pairs += yaml.safe_load(path.read_text(encoding="utf-8"))
    return pairs


async def main() -> None:
    named = [Path(a) for a in sys.argv[1:] if not a.startswith("--")]
    sets = [(p.name, [p]) for p in named] or [
        ("design set", [DESIGN_SET]),
        ("unseen sets", UNSEEN_SETS),
    ]
    async with running_engine(Settings.from_env(), database=":memory:") as engine:
        for title, paths in sets:
            graded = await grade(engine, load_pairs(*paths))
            print(f"== {title} ({len(graded)} messages)")
            total: Counter[str] = Counter()
            for kind, counts in sorted(tally(graded).items()):
                total += counts
                print(f"{kind:12} {summary(counts)}")
            print(f"{'all':12} {summary(total)}")
            if "--misses" in sys.argv:
                for g in graded:
                    if g.verdict not in ("right", "declined"):
                        print(
                            f"  {g.verdict:12} {str(g.item['q'])[:50]} "
                            f"expect={g.item['expect']} got={g.got}"
                        )


if __name__ == "__main__":
    asyncio.run(main())
