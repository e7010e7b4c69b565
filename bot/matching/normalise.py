"""Step 1: a raw message in its canonical form for matching.

Width, case, traditional characters, punctuation and dialect are handled by `bot.text`; here
the lexicon's stop phrases are removed (请问, 你好, 怎么办 carry no topic), the message is split
into clauses for long stories, and the urgency patterns (money already gone, a threat) are
checked on the raw text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from bot.matching.homophones import Speller
from bot.matching.ngrams import syllable
from bot.schema import Lexicon
from bot.text import Normalizer

MAX_CLAUSES = 8
SOUNDED_STOP = 3
"""Stop phrases this long are also removed when typed as homophones (怎么出理 for 怎么处理):
shorter ones sound like too many real words."""


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
        # 怎么办 is filler, but not the 怎么办 of 怎么办理 (how to apply for): that is the topic.
        alternatives = [re.escape(s) + ("(?!理)" if s.endswith("办") else "") for s in stops if s]
        self._stop_phrases = re.compile("|".join(alternatives) or "(?!)")
        self._sounded = {s for s in stops if len(s) >= SOUNDED_STOP}
        self._stop_sounds: set[tuple[str, ...]] | None = None
        """Built at first use: the syllable table is loaded after the preparer is made."""
        self._urgent = [re.compile(p) for p in lexicon.urgent_patterns]
        self._speller: Speller | None = None

    def learn_words(self, examples: Iterable[str], keywords: Iterable[str] = ()) -> None:
        """Learn the knowledge base's words from its example questions and keywords, so that
        homophone typos of them (网带 for 网贷) are read as them."""
        self._speller = Speller(
            (self.normalize(e) for e in examples), [self.normalize(k) for k in keywords]
        )

    def content(self, text: str) -> str:
        """The normalised text, homophone typos of the knowledge base's words corrected,
        without stop phrases, also ones typed as homophones."""
        text = self.normalize(text)
        if self._speller is not None:
            text = self._speller(text)
        return self._without_stop_sounds(self._stop_phrases.sub("", text))

    def _without_stop_sounds(self, text: str) -> str:
        if self._stop_sounds is None:
            self._stop_sounds = {tuple(map(syllable, s)) for s in self._sounded}
        if not self._stop_sounds or len(text) < SOUNDED_STOP:
            return text
        lengths = sorted({len(s) for s in self._stop_sounds}, reverse=True)
        sounds = [syllable(c) for c in text]
        kept, start = [], 0
        while start < len(text):
            for length in lengths:
                # A stop phrase in its own characters is still here because it is kept on
                # purpose (怎么办理); only its homophones go.
                span = text[start : start + length]
                if tuple(sounds[start : start + length]) in self._stop_sounds and (
                    span not in self._sounded
                ):
                    start += length
                    break
            else:
                kept.append(text[start])
                start += 1
        return "".join(kept)

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
