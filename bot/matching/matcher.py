"""The matcher: runs the steps in order, from a raw message to a decision.

normalise → n-gram features → cheap model; if it is not sure, the sentence encoder and the
full model → decide (answer / clarify / decline, urgency first). Building a `Matcher` loads
the cached model for this knowledge base or trains (and calibrates) one.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bot.config import default_cache_dir
from bot.matching.decide import Decision, Policy, Thresholds
from bot.matching.encode import SentenceEncoder
from bot.matching.model import (
    OUT_OF_SCOPE,
    Hyper,
    IntentModel,
    TrainingSet,
    top_classes,
    train,
)
from bot.matching.ngrams import Features, load_syllables
from bot.matching.normalise import Prepared, Preparer
from bot.schema import Entry, Lexicon

_LOGGER = logging.getLogger(__name__)
RANKING = 5
_DIGITS = re.compile("[0-9]+")
_ENCODERS: dict[Path, SentenceEncoder] = {}

__all__ = ["OUT_OF_SCOPE", "Match", "Matcher"]


def shared_encoder(cache_dir: Path) -> SentenceEncoder:
    """One encoder per cache folder and process: its weights are 100 MB."""
    if cache_dir not in _ENCODERS:
        _ENCODERS[cache_dir] = SentenceEncoder(cache_dir)
    return _ENCODERS[cache_dir]


@dataclass(frozen=True, slots=True)
class Match:
    """The matcher's verdict on one message."""

    entry_id: str | None
    """The entry to answer, or None (clarify or decline)."""
    score: float
    """The probability behind the decision."""
    also: tuple[str, ...] = ()
    """Other entries the message is about (each won a clause of its own)."""
    ranking: tuple[tuple[str, float], ...] = field(default=(), repr=False)
    """The likeliest classes with their probabilities, out-of-scope included."""
    decision: Decision | None = None
    used_encoder: bool = False


@dataclass(frozen=True, slots=True)
class Pending:
    """A message after the n-gram pass, waiting for the encoder (or not)."""

    prepared: Prepared
    features: list[Features]
    """The message's n-grams, then each clause's."""
    cheap: npt.NDArray[np.float32]
    """The cheap model's probabilities, one row per text of `features`."""
    encoded: tuple[int, ...]
    """The rows the full model decides, with their vectors: the message if the n-gram model
    is not sure of it, then its clauses if it is urgent."""
    texts: tuple[str, ...]
    """What the encoder must see: the texts of the `encoded` rows."""


class Matcher:
    """Trained on the entries' example questions and keywords and the out-of-scope exemplars."""

    def __init__(
        self,
        entries: Iterable[Entry],
        lexicon: Lexicon,
        *,
        cache_dir: Path | None = None,
        hyper: Hyper | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.prepare = Preparer(lexicon)
        self.cache_dir = cache_dir = cache_dir or default_cache_dir()
        load_syllables(cache_dir)
        self.encoder = shared_encoder(cache_dir)
        entries = list(entries)
        self.prepare.learn_words(
            [t for e in entries for t in [*e.questions, *e.keywords]] + lexicon.out_of_scope,
            [k for e in entries for k in e.keywords],
        )
        self.priorities = {e.id: e.priority for e in entries}
        self.training = self._training_texts(entries, lexicon)
        self.numbers = frozenset(n for t in self.training[0] for n in _DIGITS.findall(t))
        self.hyper = hyper or Hyper()
        # Said at WARNING by default: a console user waiting a minute at first start sees why.
        self._use(self._model(progress or (lambda message: _LOGGER.warning("%s", message))))

    @classmethod
    def with_model(
        cls, model: IntentModel, lexicon: Lexicon, priorities: dict[str, int], cache_dir: Path
    ) -> Matcher:
        """A matcher around a model built elsewhere (a benchmark's synthetic one, say)."""
        matcher = cls.__new__(cls)
        matcher.prepare = Preparer(lexicon)
        matcher.cache_dir = cache_dir
        load_syllables(cache_dir)
        matcher.encoder = shared_encoder(cache_dir)
        matcher.priorities = priorities
        matcher.numbers = frozenset()
        matcher.hyper = model.hyper
        matcher._use(model)
        return matcher

    def _use(self, model: IntentModel) -> None:
        self.model = model
        self.thresholds = Thresholds(**model.meta["thresholds"])
        self.policy = Policy(model.classes, self.priorities, self.thresholds)

    def _training_texts(
        self, entries: list[Entry], lexicon: Lexicon
    ) -> tuple[list[str], list[str]]:
        texts: list[str] = []
        labels: list[str] = []
        seen: set[tuple[str, str]] = set()

        def add(text: str, label: str) -> None:
            form = self.prepare.example(text)
            if form and (form, label) not in seen:
                seen.add((form, label))
                texts.append(form)
                labels.append(label)

        for entry in entries:
            for text in [*entry.questions, *entry.keywords]:
                add(text, entry.id)
        for text in lexicon.out_of_scope:
            add(text, OUT_OF_SCOPE)
        return texts, labels

    def _model(self, progress: Callable[[str], None]) -> IntentModel:
        from bot.matching import calibrate

        texts, labels = self.training
        unencoded = TrainingSet(tuple(texts), tuple(labels), np.zeros((0, 0), np.float32))
        fingerprint = unencoded.fingerprint(
            self.encoder.version, self.hyper, calibrate.SETTINGS_KEY
        )
        path = self.cache_dir / f"model-{fingerprint}.npz"
        model = IntentModel.load(path)
        if model is not None:
            return model
        started = time.perf_counter()
        progress(f"training the matcher on {len(texts)} examples (once per knowledge edit)")
        vectors = self.encoder.encode(texts)
        data = TrainingSet(tuple(texts), tuple(labels), vectors)
        thresholds, cv, cv_utility = calibrate.calibrated(data, self.hyper, progress)
        model = train(
            data,
            self.hyper,
            meta={
                "thresholds": {
                    "answer": thresholds.answer,
                    "clarify": thresholds.clarify,
                    "skip_encoder": thresholds.skip_encoder,
                },
                "cv_utility": cv_utility,
                "fingerprint": fingerprint,
            },
            held_out=cv,
        )
        model.save(path)
        progress(f"matcher trained in {time.perf_counter() - started:.1f} s")
        return model

    def content_of(self, message: str) -> str:
        """The message's content after normalisation and stop phrases: empty for 你好 or ？？"""
        return self.prepare.content(message)

    def match(self, message: str) -> Match:
        return self.match_many([message])[0]

    def match_many(self, messages: Sequence[str]) -> list[Match]:
        """Match several messages, with one encoder call for all that need it."""
        pending = [self.start(m) for m in messages]
        vectors = self.encoder.encode([t for p in pending for t in p.texts])
        matches, start = [], 0
        for p in pending:
            matches.append(self.finish(p, vectors[start : start + len(p.texts)]))
            start += len(p.texts)
        return matches

    def start(self, message: str) -> Pending:
        """The n-gram pass, and what the encoder must see to finish (maybe nothing)."""
        prepared = self.prepare(message)
        texts = (prepared.content, *prepared.clauses)
        features = [self.model.featurizer.transform(t) for t in texts]
        cheap = self.model.cheap_rows(features)
        unsure = bool(prepared.content) and float(cheap[0].max()) < self.thresholds.skip_encoder
        encoded = (0,) if unsure else ()
        if prepared.urgent:
            # Which clause says what happened matters here: worth the encoder on each.
            encoded += tuple(range(1, len(texts)))
        return Pending(prepared, features, cheap, encoded, tuple(texts[i] for i in encoded))

    def _unknown_number(self, content: str) -> bool:
        """A bare number that no example question names (111, 1111111): nothing to answer,
        however much its digits look like 110's."""
        return content.isdigit() and content not in self.numbers

    def finish(self, pending: Pending, vectors: npt.NDArray[np.float32]) -> Match:
        """The decision, given the encoder's vectors of `pending.texts`."""
        prepared = pending.prepared
        if not prepared.content or self._unknown_number(prepared.content):
            return Match(None, 0.0)
        scores = pending.cheap
        if pending.encoded:
            rows = list(pending.encoded)
            scores = scores.copy()
            scores[rows] = self.model.full_rows(
                [pending.features[i] for i in rows], vectors, pending.cheap[rows]
            )
        probabilities, clause_probabilities = scores[0], list(scores[1:])
        decision = self.policy.decide(
            probabilities, urgent=prepared.urgent, clause_probabilities=clause_probabilities
        )
        order = top_classes(probabilities, RANKING)
        ranking = tuple((self.model.classes[i], float(probabilities[i])) for i in order)
        entry = decision.entry_id if decision.kind == "answer" else None
        also: list[str] = []
        for clause in clause_probabilities:
            top = int(clause.argmax())
            name = self.model.classes[top]
            if (
                clause[top] >= self.thresholds.answer
                and name not in (entry, OUT_OF_SCOPE)
                and name not in also
            ):
                also.append(name)
        return Match(
            entry, decision.confidence, tuple(also[:2]), ranking, decision, bool(len(vectors))
        )
