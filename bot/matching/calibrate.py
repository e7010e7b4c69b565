"""Step 6: the decision thresholds, chosen by k-fold cross-validation on the knowledge base.

Every example question is held out once: the models are trained on the other folds and
predict it, so each example gets the probabilities an unseen message like it would get. The
thresholds are then the ones that maximise a utility that counts what the citizen gets: a
right answer or an honest decline +1, a clarify that offers the right topic +0.25 (it costs a
tap and a second read), a wrong answer or an out-of-scope message answered −0.5, a decline of
an in-scope message 0. A wrong answer misleads, so it costs; but a decline fails a citizen too
(a victim told "I cannot answer that" is failed), so declining is not free. Held-out examples
are harder than real messages (each lost its closest paraphrases), so weights that made every
doubt a clarify (wrong −1, clarify +0.5) answered only 56% of them and sent real questions to
clarify; `benchmarks/matcher_quality.py` shows the effect on the design set.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from bot.matching.decide import MAX_OPTIONS, Decision, Policy, Thresholds
from bot.matching.model import OUT_OF_SCOPE, HeldOut, Hyper, TrainingSet, train

FOLDS = 5
SEED = 20261202
GRID = tuple(round(x, 3) for x in np.arange(0.1, 0.951, 0.025))
UTILITY = {
    "right": 1.0,
    "declined": 1.0,
    "clarified": 0.25,
    "clarify_missed": 0.0,
    "missed": 0.0,
    "oos_clarified": 0.0,
    "wrong": -0.5,
    "oos_answered": -0.5,
}
SETTINGS_KEY = f"{FOLDS}|{SEED}|{GRID}|{sorted(UTILITY.items())}"
"""Part of the model cache's key: new calibration settings recalibrate."""


def folds(labels: tuple[str, ...], k: int = FOLDS) -> npt.NDArray[np.int64]:
    """A fold number per example, stratified: each class spread round-robin over the folds."""
    rng = np.random.default_rng(SEED)
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    assignment = np.zeros(len(labels), np.int64)
    for members in by_class.values():
        shuffled = rng.permutation(members)
        start = int(rng.integers(k))
        for j, i in enumerate(shuffled):
            assignment[i] = (start + j) % k
    return assignment


def held_out(data: TrainingSet, hyper: Hyper, k: int = FOLDS) -> HeldOut:
    classes = tuple(sorted(set(data.labels)))
    column = {c: i for i, c in enumerate(classes)}
    cheap = np.zeros((len(data.labels), len(classes)), np.float32)
    full = np.zeros_like(cheap)
    assignment = folds(data.labels, k)
    for fold in range(k):
        test = np.flatnonzero(assignment == fold)
        keep = np.flatnonzero(assignment != fold)
        subset = TrainingSet(
            tuple(data.texts[i] for i in keep),
            tuple(data.labels[i] for i in keep),
            data.vectors[keep],
        )
        model = train(subset, hyper)
        columns = [column[c] for c in model.classes]
        for i in test:
            features = model.featurizer.transform(data.texts[i])
            cheap[i, columns] = model.cheap(features)
            full[i, columns] = model.full(features, data.vectors[i])
    return HeldOut(classes, data.texts, data.labels, cheap, full)


def verdict(decision: Decision, label: str) -> str:
    if label == OUT_OF_SCOPE:
        return {"answer": "oos_answered", "clarify": "oos_clarified"}.get(decision.kind, "declined")
    if decision.kind == "answer":
        return "right" if decision.entry_id == label else "wrong"
    if decision.kind == "clarify":
        return "clarified" if label in decision.options else "clarify_missed"
    return "missed"


def combined(cv: HeldOut, skip_encoder: float) -> npt.NDArray[np.float32]:
    """The probabilities the matcher would use: the cheap model's where it is sure enough."""
    sure = cv.cheap.max(axis=1) >= skip_encoder
    result: npt.NDArray[np.float32] = np.where(sure[:, None], cv.cheap, cv.full)
    return result


def fit_thresholds(cv: HeldOut) -> tuple[Thresholds, float]:
    """The thresholds with the best cross-validated utility, and that utility per example.

    The encoder may be skipped only above a cheap-model confidence at which doing so loses
    nothing: the cheap model's answers there are right at least as often as the full model's.
    """
    cheap_top = cv.cheap.argmax(axis=1)
    full_top = cv.full.argmax(axis=1)
    truth = np.array([cv.classes.index(label) for label in cv.labels])
    skip = 1.0
    for s in sorted((*GRID, 0.975, 0.99), reverse=True):
        sure = cv.cheap.max(axis=1) >= s
        if (cheap_top[sure] == truth[sure]).sum() < (full_top[sure] == truth[sure]).sum():
            break
        skip = s
    table = _Table(combined(cv, skip), truth, cv.classes)
    best = max(
        ((table.utility(a, c), Thresholds(a, c, skip)) for a in GRID for c in GRID if c <= a),
        key=lambda pair: pair[0],
    )
    return best[1], best[0] / len(cv.labels)


class _Table:
    """Per example, what any thresholds would make of it, so a grid search is vectorised."""

    def __init__(
        self,
        probabilities: npt.NDArray[np.float32],
        truth: npt.NDArray[np.int64],
        classes: tuple[str, ...],
    ) -> None:
        oos = classes.index(OUT_OF_SCOPE) if OUT_OF_SCOPE in classes else -1
        rows = np.arange(len(truth))
        self.top_p = probabilities.max(axis=1)
        top = probabilities.argmax(axis=1)
        self.top_is_oos = top == oos
        self.label_is_oos = truth == oos
        self.top_right = top == truth
        # Clarify options are the likeliest in-scope classes: where does the truth rank?
        in_scope = probabilities.copy()
        if oos >= 0:
            in_scope[:, oos] = -1.0
        truth_p = in_scope[rows, truth]
        self.truth_rank = (in_scope > truth_p[:, None]).sum(axis=1)
        self.truth_p = truth_p

    def utility(self, answer: float, clarify: float) -> float:
        answered = ~self.top_is_oos & (self.top_p >= answer)
        clarified = ~self.top_is_oos & (self.top_p < answer) & (self.top_p >= clarify)
        useful = (self.truth_rank < MAX_OPTIONS) & (self.truth_p >= clarify / 2)
        oos, scope = self.label_is_oos, ~self.label_is_oos
        counts = {
            "right": answered & scope & self.top_right,
            "wrong": answered & scope & ~self.top_right,
            "oos_answered": answered & oos,
            "clarified": clarified & scope & useful,
            "clarify_missed": clarified & scope & ~useful,
            "declined": ~answered & ~clarified & oos,
        }
        return float(sum(UTILITY[k] * int(v.sum()) for k, v in counts.items()))


def outcomes(
    probabilities: npt.NDArray[np.float32], cv: HeldOut, policy: Policy
) -> list[tuple[str, Decision]]:
    decisions = [policy.decide(row) for row in probabilities]
    return [(verdict(d, label), d) for d, label in zip(decisions, cv.labels, strict=True)]


def calibrated(
    data: TrainingSet, hyper: Hyper, progress: Callable[[str], None] = lambda _: None
) -> tuple[Thresholds, HeldOut, float]:
    """The fitted thresholds, the held-out probabilities, and the utility per example."""
    progress(f"cross-validating ({FOLDS} folds)")
    cv = held_out(data, hyper)
    thresholds, per_example = fit_thresholds(cv)
    return thresholds, cv, per_example


__all__ = ["HeldOut", "calibrated", "fit_thresholds", "held_out"]
