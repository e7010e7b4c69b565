"""Homophone typos corrected to the knowledge base's own words: 网带 → 网贷, 人连 → 人脸.

Pinyin input puts a word's homophone on the screen as easily as the word. The syllable
n-grams of `ngrams` soften such a typo; this goes further for the words the knowledge base
uses most: a run of characters that the knowledge base seldom writes (a typo in an example
question counts as seldom), but that sounds exactly (tones aside) like one of its common
words, is read as that word. Common words that sound alike are left alone: no guess between
them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from bot.matching.ngrams import syllable

LENGTHS = (4, 3, 2)
COMMON = 3
"""A word is the knowledge base's own when this many example questions use it."""
CLEAR_LEAD = 2
"""A sound is one word's when that word is this many times as common as the next that sounds
the same; otherwise it is ambiguous and nothing is corrected to either."""


def _grams(text: str) -> set[str]:
    return {text[i : i + n] for n in LENGTHS for i in range(len(text) - n + 1)}


class Speller:
    """Learned from the knowledge base's normalised example questions."""

    def __init__(self, texts: Iterable[str], keywords: Iterable[str] = ()) -> None:
        """`texts`: the example questions; `keywords`: the entries' keywords, whose ends are
        the only two-character words corrected to (a common pair of characters may straddle
        two words: 法不 of 违法不违法 is no word to correct 发不 to)."""
        pairs = {k[:2] for k in keywords if len(k) >= 2} | {k[-2:] for k in keywords if len(k) >= 2}
        used: Counter[str] = Counter()
        for text in texts:
            used.update(_grams(text))
        self._used = used
        by_sound: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for word, count in used.items():
            if count >= COMMON and (len(word) > 2 or word in pairs):
                by_sound[self._sound(word)].append(word)
        self._word_of: dict[tuple[str, ...], str] = {}
        for sound, words in by_sound.items():
            words.sort(key=lambda w: -used[w])
            if len(words) == 1 or used[words[0]] >= CLEAR_LEAD * used[words[1]]:
                self._word_of[sound] = words[0]

    @staticmethod
    def _sound(word: str) -> tuple[str, ...]:
        return tuple(syllable(c) for c in word)

    def __call__(self, text: str) -> str:
        """`text` with every unknown run that sounds like a common word replaced by it."""
        if not self._word_of or len(text) < min(LENGTHS):
            return text
        sounds = [syllable(c) for c in text]
        words = [self._word_at(text, i) for i in range(len(text))]
        out, start = [], 0
        while start < len(text):
            step = words[start] or self._correction_at(sounds, words, start)
            if step is None:
                out.append(text[start])
                start += 1
            else:
                out.append(step[0])
                start += step[1]
        return "".join(out)

    def _word_at(self, text: str, start: int) -> tuple[str, int] | None:
        """A common word starting here, kept whole: the 宝 of 淘宝 is not the 包 of 包卖."""
        for length in LENGTHS:
            span = text[start : start + length]
            if len(span) == length and self._used[span] >= COMMON:
                return span, length
        return None

    def _correction_at(
        self, sounds: list[str], words: list[tuple[str, int] | None], start: int
    ) -> tuple[str, int] | None:
        """The common word that the seldom-written run starting here sounds like; never one
        that would swallow the start of a common word further on (识式别安全: not 识别案).
        `words`: the common word starting at each position, if any."""
        for length in LENGTHS:
            if start + length > len(sounds) or any(words[start + 1 : start + length]):
                continue
            word = self._word_of.get(tuple(sounds[start : start + length]))
            if word is not None:
                return word, length
        return None
