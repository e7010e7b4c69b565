"""Step 5: what to do with the model's probabilities: answer, clarify, or decline.

- answer: the likeliest entry is likely enough (`Thresholds.answer`);
- clarify: it is not, but the top few are plausible (`Thresholds.clarify`): "您是想问：" with
  the two or three likeliest entries as buttons;
- decline: the out-of-scope class wins, or nothing is plausible.

A message that states money already lost or a threat is never declined: the most likely
urgent entry (priority above 1: 110 first) is answered when it is plausible, and otherwise
the decision is "urgent": the engine gives its emergency reply (110 first). The thresholds
come from cross-validation on the knowledge base (`bot.matching.calibrate`), never from a
test set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bot.matching.model import OUT_OF_SCOPE, top_classes

MAX_OPTIONS = 3


@dataclass(frozen=True)
class Thresholds:
    answer: float = 0.5
    clarify: float = 0.25
    skip_encoder: float = 0.9
    """The cheap model alone decides when its top probability reaches this."""


@dataclass(frozen=True, slots=True)
class Decision:
    kind: str
    """"answer", "clarify", "decline", or "urgent" (money lost or a threat, no entry fits)."""
    entry_id: str | None
    """The entry answered (answer), or the first option (clarify)."""
    confidence: float
    options: tuple[str, ...] = ()
    """The entries offered by a clarify, likeliest first."""


class Policy:
    def __init__(
        self, classes: Sequence[str], priorities: Mapping[str, int], thresholds: Thresholds
    ) -> None:
        self.classes = tuple(classes)
        self.thresholds = thresholds
        self._urgent = np.array([priorities.get(c, 1) > 1 for c in self.classes], dtype=bool)

    def decide(
        self,
        probabilities: npt.NDArray[np.float32],
        *,
        urgent: bool = False,
        clause_probabilities: Sequence[npt.NDArray[np.float32]] = (),
    ) -> Decision:
        order = top_classes(probabilities, MAX_OPTIONS + 1)
        top = int(order[0])
        p_top = float(probabilities[top])
        if urgent:
            return self._urgent_decision(probabilities, order, clause_probabilities)
        if self.classes[top] == OUT_OF_SCOPE:
            return Decision("decline", None, p_top)
        if p_top >= self.thresholds.answer:
            return Decision("answer", self.classes[top], p_top)
        if p_top >= self.thresholds.clarify:
            options = self._options(probabilities, order)
            return Decision("clarify", options[0], p_top, options)
        return Decision("decline", None, p_top)

    def _options(
        self, probabilities: npt.NDArray[np.float32], order: npt.NDArray[np.intp]
    ) -> tuple[str, ...]:
        floor = self.thresholds.clarify / 2
        picked = [
            self.classes[i]
            for i in order[: MAX_OPTIONS + 1]
            if self.classes[i] != OUT_OF_SCOPE and probabilities[i] >= floor
        ]
        return tuple(picked[:MAX_OPTIONS])

    def _urgent_decision(
        self,
        probabilities: npt.NDArray[np.float32],
        order: npt.NDArray[np.intp],
        clause_probabilities: Sequence[npt.NDArray[np.float32]],
    ) -> Decision:
        # A clause of its own ("另外我刚被骗转了两万") is evidence at full weight for urgency.
        evidence = np.max(np.vstack([probabilities, *clause_probabilities]), axis=0)
        urgent_scores = np.where(self._urgent, evidence, -1.0)
        best = int(np.argmax(urgent_scores))
        if not self._urgent[best]:
            return Decision("urgent", None, 0.0)
        top = int(order[0])
        if self._urgent[top] and probabilities[top] >= self.thresholds.clarify:
            return Decision("answer", self.classes[top], float(probabilities[top]))
        if evidence[best] >= self.thresholds.clarify:
            return Decision("answer", self.classes[best], float(evidence[best]))
        return Decision("urgent", None, float(evidence[best]))
