"""Step 1: a raw message in its canonical form for matching.

Width, case, traditional characters, punctuation and dialect are handled by `bot.text`; here
the lexicon's stop phrases are removed (请问, 你好, 怎么办 carry no topic), the message is split
into clauses for long stories, and the urgency patterns (money already gone, a threat) are
checked on the raw text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.schema import Lexicon
from bot.text import Normalizer

MAX_CLAUSES = 8


@dataclass(frozen=True, slots=True)
class Prepared:
    """A message ready for the model."""

    content: str
    """The normalised message without stop phrases: empty for 你好 or ？？？."""
    clauses: tuple[str, ...]
    """Its clauses, each normalised the same way (only when there are two or more)."""
    urgent: bool
    """The message states money already lost or a threat: it must never be declined."""


class Preparer:
    """Turns raw messages into `Prepared` ones with the lexicon's tables."""

    def __init__(self, lexicon: Lexicon) -> None:
        self.normalize = Normalizer(lexicon.replacements())
        stops = sorted(map(self.normalize, lexicon.stop_phrases), key=len, reverse=True)
        self._stop_phrases = re.compile("|".join(map(re.escape, filter(None, stops))) or "(?!)")
        self._urgent = [re.compile(p) for p in lexicon.urgent_patterns]

    def content(self, text: str) -> str:
        """The normalised text without stop phrases; the text itself if nothing else is left
        (a knowledge question made only of stop phrases still needs a form)."""
        return self._stop_phrases.sub("", self.normalize(text))

    def example(self, text: str) -> str:
        """An example question's form for training: its content, or all of it if that is empty."""
        return self.content(text) or self.normalize(text)

    def __call__(self, message: str) -> Prepared:
        content = self.content(message)
        clauses: tuple[str, ...] = ()
        if content:
            parts = [self.content(c) for c in self.normalize.clauses(message, limit=MAX_CLAUSES)]
            parts = [p for p in parts if p]
            if len(parts) > 1:
                clauses = tuple(parts)
        urgent = any(p.search(message) for p in self._urgent)
        return Prepared(content, clauses, urgent)
