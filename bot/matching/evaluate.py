"""The knowledge author's report: how well the model learns each entry, by cross-validation.

Every example question was held out once when the model was calibrated (`calibrate`); here
those held-out predictions go through the same decision policy as a real message, and are
summed up per entry: which entries are answered right, which pairs of entries are confused,
which out-of-scope exemplars would be answered and which examples would be declined. An entry
that scores low needs more, or more distinct, example questions.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from bot.matching.calibrate import combined, verdict
from bot.matching.matcher import Matcher
from bot.matching.model import OUT_OF_SCOPE


@dataclass
class EntryFigures:
    examples: int = 0
    right: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)


@dataclass
class Evaluation:
    verdicts: Counter[str]
    per_entry: dict[str, EntryFigures]
    confused: Counter[tuple[str, str]]
    oos_answered: list[tuple[str, str]]
    """(exemplar, the entry it would get)"""
    declined: list[tuple[str, str]]
    """(example, its entry)"""
    encoder_skipped: float

    @property
    def in_scope(self) -> int:
        return sum(
            self.verdicts[v] for v in ("right", "wrong", "clarified", "clarify_missed", "missed")
        )

    @property
    def out_of_scope(self) -> int:
        return sum(self.verdicts[v] for v in ("declined", "oos_answered", "oos_clarified"))

    def share(self, *names: str) -> float:
        scope = self.out_of_scope if names[0] in ("declined", "oos_answered") else self.in_scope
        return sum(self.verdicts[n] for n in names) / max(scope, 1)


def evaluate(matcher: Matcher) -> Evaluation:
    cv = matcher.model.held_out
    if cv is None:
        raise ValueError("the cached model has no cross-validation figures: delete the cache")
    probabilities = combined(cv, matcher.thresholds.skip_encoder)
    verdicts: Counter[str] = Counter()
    per_entry: dict[str, EntryFigures] = defaultdict(EntryFigures)
    confused: Counter[tuple[str, str]] = Counter()
    oos_answered: list[tuple[str, str]] = []
    declined: list[tuple[str, str]] = []
    for row, text, label in zip(probabilities, cv.texts, cv.labels, strict=True):
        decision = matcher.policy.decide(row)
        result = verdict(decision, label)
        verdicts[result] += 1
        if label == OUT_OF_SCOPE:
            if result == "oos_answered":
                oos_answered.append((text, str(decision.entry_id)))
            continue
        figures = per_entry[label]
        figures.examples += 1
        figures.right += result == "right"
        figures.verdicts[result] += 1
        if result == "wrong":
            confused[(label, str(decision.entry_id))] += 1
        elif result in ("missed", "clarify_missed"):
            declined.append((text, label))
    skipped = float((cv.cheap.max(axis=1) >= matcher.thresholds.skip_encoder).mean())
    return Evaluation(verdicts, dict(per_entry), confused, oos_answered, declined, skipped)
