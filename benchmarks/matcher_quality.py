"""Matcher quality on the paired test set, by kind, and a sweep of the answer threshold.

Prints answered-right, answered-wrong, declined (in scope) and out-of-scope declined, per
kind and overall, then the same totals for thresholds around the current one, so the
threshold can be re-fitted after knowledge edits. Asserts nothing.

Run: .venv/bin/python benchmarks/matcher_quality.py [tests/data/matcher_pairs.yaml] [--misses]
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path

import yaml

from bot import matcher as matcher_module
from bot.config import Settings
from bot.engine import Engine
from bot.runtime import load

PAIRS = Path(__file__).resolve().parent.parent / "tests" / "data" / "matcher_pairs.yaml"


def acceptable(expect: object) -> set[str | None]:
    values = expect if isinstance(expect, list) else [expect]
    return {None if v is None else str(v).replace("case:", "case_") for v in values}


def verdict(predicted: str | None, expect: object) -> str:
    ok = acceptable(expect)
    if ok == {None}:
        return "declined" if predicted is None else "oos_answered"
    if predicted is None:
        return "missed"
    return "right" if predicted in ok else "wrong"


def evaluate(engine_matcher: matcher_module.Matcher, pairs: list[dict]) -> dict[str, Counter]:
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for item in pairs:
        predicted = engine_matcher.match(str(item["q"])).entry_id
        by_kind[item.get("kind", "-")][verdict(predicted, item["expect"])] += 1
    return by_kind


def summary(counts: Counter) -> str:
    in_scope = counts["right"] + counts["wrong"] + counts["missed"]
    oos = counts["declined"] + counts["oos_answered"]
    return (
        f"in-scope right {counts['right']}/{in_scope}, wrong {counts['wrong']}, "
        f"declined {counts['missed']}; out-of-scope declined {counts['declined']}/{oos}"
    )


def main() -> None:
    path = Path(next((a for a in sys.argv[1:] if not a.startswith("--")), PAIRS))
    pairs = yaml.safe_load(path.read_text(encoding="utf-8"))
    content = load(Settings())
    engine_matcher = matcher_module.Matcher(Engine._matchable_entries(content), content.lexicon)
    by_kind = evaluate(engine_matcher, pairs)
    total: Counter = Counter()
    for kind, counts in sorted(by_kind.items()):
        total += counts
        print(f"{kind:12} {summary(counts)}")
    print(f"{'all':12} {summary(total)}")
    if "--misses" in sys.argv:
        for item in pairs:
            m = engine_matcher.match(str(item["q"]))
            v = verdict(m.entry_id, item["expect"])
            if v not in ("right", "declined"):
                top = [(e, round(s, 2)) for e, s in m.ranking[:3]]
                print(f"{v:12} {item['q'][:40]} expect={item['expect']} got={m.entry_id} {top}")
    current = matcher_module.ANSWER_THRESHOLD
    for tau in [round(current + d / 100, 2) for d in range(-10, 11, 2)]:
        matcher_module.ANSWER_THRESHOLD = tau
        swept: Counter = Counter()
        for counts in evaluate(engine_matcher, pairs).values():
            swept += counts
        utility = swept["right"] + swept["declined"] - 2 * (swept["wrong"] + swept["oos_answered"])
        print(f"threshold {tau:.2f}: {summary(swept)}; utility {utility}")
    matcher_module.ANSWER_THRESHOLD = current


if __name__ == "__main__":
    main()
