"""Which court case a message names: "193号指导案例", "郭兵告动物园的案子", "柯某案".

The model learns each case from a dozen or so example questions, few beside the topic entry
it illustrates (the gym case and the face-data entry share every word but one). What sets a
case apart is what belongs to it alone: its number, its parties, its town, its platform. So
a case is also found by those words, not by similarity:

- a distinctive n-gram is one that occurs in a single case's article (title, aliases,
  summary, facts, outcome, court, tags); it counts in full when no example question of the
  knowledge base uses it, and at half weight when a few do (开盒 is a case and a topic), and
  more when it is in the case's title or aliases (the names people use);
- a message's score for a case is how many of its characters such n-grams cover;
- the message must ask about a case (案子, 判, 检察院, 指导性案例…) unless its distinctive
  words alone are many; one case must clearly lead the others.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

ORDERS = (2, 3, 4)
COMMON_IN_KNOWLEDGE = 3
"""An n-gram in more example questions than this is everyday wording, not a case's own."""
NAMED_WEIGHT = 1.5
"""A word of a case's title or aliases (柯某案, 指导性案例193号) outweighs one of its facts."""
MIN_COVERED = 3.0
"""Characters a case's own words must cover, when the message asks about a case."""
MIN_COVERED_UNASKED = 8.0
"""The same when it does not: only a message full of one case's particulars."""
MIN_COVERED_SHARE = 0.1
"""And at least this share of a long message: chance matches grow with its length."""
LEAD = 2.0
"""The best case's cover must be this many times the runner-up's."""
_ASKS_ABOUT_A_CASE = re.compile(
    "(?<![报备答方立档])案|判|诉讼|起诉|告了|法院|检察|获刑|被告|指导性|检例|专案|新闻|报道"
)


_CLAUSE_BREAK = re.compile(r"[\s，。！？；：、,.!?;:“”\"'（）()《》「」]+")


def _grams(text: str) -> set[str]:
    return {text[i : i + n] for n in ORDERS for i in range(len(text) - n + 1)}


class CaseFinder:
    """Finds the one case a message names, by the words that belong to that case alone."""

    def __init__(
        self,
        names: Mapping[str, Iterable[str]],
        articles: Mapping[str, Iterable[str]],
        background: Iterable[str],
        normalize: Callable[[str], str],
        stop_chars: str = "",
    ) -> None:
        """`names`: each case's title and aliases by case id; `articles`: the rest of its
        article; `background`: the knowledge base's example questions; `normalize`: the
        matcher's normalisation; `stop_chars`: particles no case word starts or ends with."""
        self._normalize = normalize

        def grams_of(texts: Iterable[str]) -> set[str]:
            # Clause by clause: an n-gram across a comma is no word of the case.
            clauses = [c for t in texts for c in _CLAUSE_BREAK.split(t)]
            found = set().union(*(_grams(normalize(c)) for c in clauses))
            return {
                g
                for g in found
                if g[0] not in stop_chars
                and g[-1] not in stop_chars
                and not _ASKS_ABOUT_A_CASE.search(g)
            }

        named = {case_id: grams_of(texts) for case_id, texts in names.items()}
        told = {case_id: grams_of(articles.get(case_id, ())) for case_id in names}
        cases_with: Counter[str] = Counter(
            g for case_id in names for g in named[case_id] | told[case_id]
        )
        in_questions: Counter[str] = Counter()
        for question in background:
            in_questions.update(_grams(normalize(question)))
        self._owner: dict[str, tuple[str, float]] = {}
        """Each distinctive n-gram: the one case it belongs to, and its weight."""
        for case_id in names:
            for gram in named[case_id] | told[case_id]:
                if cases_with[gram] > 1 or in_questions[gram] > COMMON_IN_KNOWLEDGE:
                    continue
                weight = NAMED_WEIGHT if gram in named[case_id] else 1.0
                self._owner[gram] = (case_id, weight if in_questions[gram] == 0 else weight / 2)

    def scores(self, text: str) -> dict[str, float]:
        """Per case, the characters of the normalised `text` its own words cover."""
        return self._scores(self._normalize(text))

    def _scores(self, text: str) -> dict[str, float]:
        cover: dict[str, list[float]] = {}
        for n in ORDERS:
            for i in range(len(text) - n + 1):
                owner = self._owner.get(text[i : i + n])
                if owner is None:
                    continue
                case_id, weight = owner
                marks = cover.setdefault(case_id, [0.0] * len(text))
                for j in range(i, i + n):
                    marks[j] = max(marks[j], weight)
        return {case_id: sum(marks) for case_id, marks in cover.items()}

    def find(self, text: str) -> str | None:
        """The case `text` names, or None."""
        text = self._normalize(text)
        ranked = sorted(self._scores(text).items(), key=lambda item: -item[1])
        if not ranked:
            return None
        best, cover = ranked[0]
        runner_up = ranked[1][1] if len(ranked) > 1 else 0.0
        asked = _ASKS_ABOUT_A_CASE.search(text) is not None
        least = max(MIN_COVERED if asked else MIN_COVERED_UNASKED, MIN_COVERED_SHARE * len(text))
        enough = cover >= least
        return best if enough and cover >= LEAD * runner_up else None
