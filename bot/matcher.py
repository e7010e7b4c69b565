"""Matches a citizen's message to a knowledge entry, or declines honestly.

Pipeline (measured in ../shared/research/matching.md): normalise, split clauses, retrieve
candidates with an IDF-weighted inverted index over character uni- and bigrams, score each
candidate with a bounded blend (query coverage, document coverage, edit ratio), take the best
question per entry, then decide: answer, or decline when the best score is low, when an
out-of-scope exemplar wins, or when a long message is barely covered by the winning entry.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise

from pypinyin import lazy_pinyin
from rapidfuzz import fuzz

from bot.schema import Entry, Lexicon
from bot.text import Normalizer

# Thresholds, fitted on the bundled knowledge base: `python -m benchmarks.matcher_quality`
# sweeps them over tests/data/matcher_pairs.yaml; re-fit after knowledge edits.
ANSWER_THRESHOLD = 0.40
"""Below this blended score the bot declines rather than guess."""
SECOND_CHOICE_MARGIN = 0.08
"""A runner-up within this margin of the winner is offered as "您是不是还想问"."""
LONG_MESSAGE_CHARS = 25
LONG_MESSAGE_MIN_COVERAGE = 0.22
"""A long message whose content the winning entry covers less than this is declined."""
CLAUSE_FULL_MASS = 60.0
"""A clause with less IDF mass than this counts for proportionally less than the whole."""
CANDIDATES = 40
COMMON_TERM_SHARE = 0.05
KEYWORD_WEIGHT = 0.9
KEYWORD_BONUS = 0.12
MAX_KEYWORD_SEGMENT = 60
KEYWORD_MIN_OWNERSHIP = 0.6
URGENT_MIN_SCORE = 0.3
OUT_OF_SCOPE = "__out_of_scope__"

_TOKEN = re.compile(r"[a-z0-9]+|[^a-z0-9]")


@dataclass(frozen=True, slots=True)
class Match:
    """The matcher's verdict on one message."""

    entry_id: str | None
    """The best entry, or None when the bot should decline."""
    score: float
    also: tuple[str, ...] = ()
    """Other entries the message is about (other clauses, or a close runner-up)."""
    ranking: tuple[tuple[str, float], ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class _Doc:
    entry_id: str
    text: str
    terms: frozenset[str]
    keyword: bool


def _terms(text: str, stop_chars: frozenset[str]) -> frozenset[str]:
    tokens = _TOKEN.findall(text)
    unigrams = {t for t in tokens if t not in stop_chars}
    bigrams = {a + b for a, b in pairwise(tokens)}
    return frozenset(unigrams | bigrams)


@lru_cache(maxsize=8192)
def _syllable(char: str) -> str:
    return lazy_pinyin(char)[0]


def _pinyin(text: str) -> tuple[str, ...]:
    return tuple(_syllable(c) for c in text)


def _spaced(syllables: tuple[str, ...]) -> str:
    return " " + " ".join(syllables) + " "


class Matcher:
    """Scores messages against the example questions, keywords and decline exemplars."""

    def __init__(self, entries: Iterable[Entry], lexicon: Lexicon) -> None:
        self.normalize = Normalizer(lexicon.replacements())
        self._stop_chars = frozenset(lexicon.stop_chars)
        stops = sorted(map(self.normalize, lexicon.stop_phrases), key=len, reverse=True)
        self._stop_phrases = re.compile("|".join(map(re.escape, filter(None, stops))) or "(?!)")
        self._urgent = [re.compile(p) for p in lexicon.urgent_patterns]
        self._priority: dict[str, int] = {}
        docs: list[_Doc] = []
        keywords: list[tuple[str, str]] = []
        for entry in entries:
            self._priority[entry.id] = entry.priority
            for q in entry.questions:
                docs.append(self._doc(entry.id, q, keyword=False))
            for k in entry.keywords:
                docs.append(self._doc(entry.id, k, keyword=True))
                keywords.append((entry.id, self.normalize(k)))
        # (entry, " yan zheng ma ", syllable count): spaced so a match is whole syllables.
        self._keyword_pinyin = [
            (entry_id, _spaced(_pinyin(norm)), len(norm))
            for entry_id, norm in keywords
            if len(norm) >= 2 and self._distinctive(entry_id, norm, docs)
        ]
        for q in lexicon.out_of_scope:
            docs.append(self._doc(OUT_OF_SCOPE, q, keyword=False))
        self._docs = [d for d in docs if d.terms]
        self._build_index()

    @staticmethod
    def _distinctive(entry_id: str, keyword: str, docs: list[_Doc]) -> bool:
        """A keyword earns a bonus only if questions containing it mostly belong to its entry."""
        owners = [d.entry_id for d in docs if not d.keyword and keyword in d.text]
        return not owners or owners.count(entry_id) / len(owners) >= KEYWORD_MIN_OWNERSHIP

    def _content(self, normalized: str) -> str:
        return self._stop_phrases.sub("", normalized)

    def _doc(self, entry_id: str, text: str, *, keyword: bool) -> _Doc:
        content = self._content(self.normalize(text)) or self.normalize(text)
        return _Doc(entry_id, content, _terms(content, self._stop_chars), keyword)

    def _build_index(self) -> None:
        postings: dict[str, list[int]] = defaultdict(list)
        for i, doc in enumerate(self._docs):
            for t in doc.terms:
                postings[t].append(i)
        n = len(self._docs)
        self._postings = dict(postings)
        self._idf = {t: math.log(1 + n / len(p)) for t, p in postings.items()}
        self._unknown_idf = math.log(1 + n)
        self._common_cutoff = max(50, int(n * COMMON_TERM_SHARE))
        self._doc_mass = [sum(self._idf[t] for t in d.terms) for d in self._docs]
        entry_terms: dict[str, set[str]] = defaultdict(set)
        for doc in self._docs:
            entry_terms[doc.entry_id] |= doc.terms
        self._entry_terms = {e: frozenset(t) for e, t in entry_terms.items()}

    def idf(self, term: str) -> float:
        return self._idf.get(term, self._unknown_idf)

    def content_of(self, message: str) -> str:
        """The message's content after normalisation and stop phrases: empty for 你好 or ？？"""
        return self._content(self.normalize(message))

    def match(self, message: str) -> Match:
        whole = self.content_of(message)
        if not whole:
            return Match(None, 0.0)
        segments = [(whole, 1.0)]
        clauses = [self._content(c) for c in self.normalize.clauses(message)]
        if len(clauses) > 1:
            for clause in filter(None, clauses):
                mass = sum(self.idf(t) for t in _terms(clause, self._stop_chars))
                segments.append((clause, min(1.0, mass / CLAUSE_FULL_MASS)))
        best: dict[str, float] = {}
        clause_best: dict[str, float] = {}
        """Each entry's best score on a single clause, unweighted: evidence for urgent needs."""
        clause_winners: set[str] = set()
        for i, (segment, weight) in enumerate(segments):
            # Each segment retrieves its own candidates: a clause about something else than the
            # rest of a long message ("另外我刚被骗转了两万") must still find its entry.
            candidates = self._retrieve(_terms(segment, self._stop_chars), CANDIDATES)
            scores = self._score_segment(segment, candidates)
            for entry_id, s in scores.items():
                best[entry_id] = max(best.get(entry_id, 0.0), s * weight)
            if i > 0 and scores:
                for entry_id, s in scores.items():
                    clause_best[entry_id] = max(clause_best.get(entry_id, 0.0), s)
                top_id, top = max(scores.items(), key=lambda kv: kv[1])
                if top * weight >= ANSWER_THRESHOLD:
                    clause_winners.add(top_id)
        ranking = tuple(sorted(best.items(), key=lambda kv: kv[1], reverse=True))
        return self._decide(message, whole, ranking, clause_winners, clause_best)

    def _retrieve(self, terms: frozenset[str], limit: int) -> list[int]:
        """Documents sharing the most IDF mass with the terms, best first.

        Only terms rarer than `COMMON_TERM_SHARE` walk their postings, which keeps a query
        cheap on a large knowledge base; common terms still count when candidates are scored.
        """
        known = [t for t in terms if t in self._postings]
        rare = [t for t in known if len(self._postings[t]) <= self._common_cutoff] or known
        overlap: dict[int, float] = defaultdict(float)
        for t in rare:
            w = self._idf[t]
            for i in self._postings[t]:
                overlap[i] += w
        return [i for i, _ in heapq.nlargest(limit, overlap.items(), key=lambda kv: kv[1])]

    def _score_segment(self, segment: str, candidates: list[int]) -> dict[str, float]:
        terms = _terms(segment, self._stop_chars)
        q_mass = sum(self.idf(t) for t in terms) or 1.0
        scores: dict[str, float] = {}
        for i in candidates:
            doc = self._docs[i]
            shared = sum(self._idf[t] for t in terms & doc.terms)
            if not shared:
                continue
            qcov = shared / q_mass
            if doc.keyword:
                s = KEYWORD_WEIGHT * qcov
            else:
                dcov = shared / (self._doc_mass[i] or 1.0)
                s = 0.5 * qcov + 0.2 * dcov + 0.3 * fuzz.ratio(segment, doc.text) / 100
            if s > scores.get(doc.entry_id, 0.0):
                scores[doc.entry_id] = s
        for entry_id, share in self._keywords_in(segment):
            # A distinctive keyword in the message is strong evidence for its entry.
            boosted = min(1.0, scores.get(entry_id, 0.0) + KEYWORD_BONUS)
            scores[entry_id] = max(boosted, KEYWORD_WEIGHT * share)
        return scores

    def _keywords_in(self, segment: str) -> Iterable[tuple[str, float]]:
        """Entries whose keyword occurs in the segment, with the keyword's share of it.

        Compared by toneless syllables, so homophone typos (眼证码 for 验证码) count too.
        """
        if not self._keyword_pinyin or len(segment) > MAX_KEYWORD_SEGMENT:
            return
        syllables = _pinyin(segment)
        joined = _spaced(syllables)
        found: set[str] = set()
        for entry_id, keyword, length in self._keyword_pinyin:
            if entry_id not in found and keyword in joined:
                found.add(entry_id)
                yield entry_id, length / len(syllables)

    def _decide(
        self,
        message: str,
        whole: str,
        ranking: tuple[tuple[str, float], ...],
        clause_winners: set[str],
        clause_best: dict[str, float],
    ) -> Match:
        if not ranking:
            return Match(None, 0.0, ranking=ranking)
        top_id, top = ranking[0]
        if top_id == OUT_OF_SCOPE or top < ANSWER_THRESHOLD:
            return Match(None, top, ranking=ranking)
        if len(whole) > LONG_MESSAGE_CHARS and self._coverage(whole, top_id) < (
            LONG_MESSAGE_MIN_COVERAGE
        ):
            return Match(None, top, ranking=ranking)
        primary = self._primary(message, ranking, clause_winners, clause_best)
        also = [e for e in clause_winners if e not in (primary, OUT_OF_SCOPE)]
        also += [
            e
            for e, s in ranking[1:3]
            if e not in (primary, OUT_OF_SCOPE) and e not in also and top - s < SECOND_CHOICE_MARGIN
        ]
        if primary != top_id and top_id not in also:
            also.insert(0, top_id)
        return Match(primary, top, tuple(also[:3]), ranking)

    def _primary(
        self,
        message: str,
        ranking: tuple[tuple[str, float], ...],
        clause_winners: set[str],
        clause_best: dict[str, float],
    ) -> str:
        top_id = ranking[0][0]
        if any(p.search(message) for p in self._urgent):
            # Explicit evidence that money or safety is at stake now (转了两万, 威胁): an urgent
            # entry that fits reasonably well goes first, whatever else the message asks.
            # A clause of its own ("另外我刚被骗转了两万") counts at full weight here.
            fits = {e: max(s, clause_best.get(e, 0.0)) for e, s in ranking}
            urgent = [
                (self._priority.get(e, 1), s, e)
                for e, s in fits.items()
                if self._priority.get(e, 1) > 1 and s >= URGENT_MIN_SCORE
            ]
            if urgent:
                return max(urgent)[2]
        # Otherwise priority may only reorder among entries that each won a clause on their
        # own: a naive "highest priority near the top" rule wrecks single-topic accuracy.
        contenders = (clause_winners | {top_id}) - {OUT_OF_SCOPE}
        best = max(contenders, key=lambda e: (self._priority.get(e, 1), e == top_id))
        return best if self._priority.get(best, 1) > self._priority.get(top_id, 1) else top_id

    def _coverage(self, whole: str, entry_id: str) -> float:
        """Share of the message's IDF mass found anywhere in the entry's questions."""
        terms = _terms(whole, self._stop_chars)
        entry_terms = self._entry_terms.get(entry_id, frozenset())
        mass = sum(self.idf(t) for t in terms) or 1.0
        return sum(self.idf(t) for t in terms & entry_terms) / mass
