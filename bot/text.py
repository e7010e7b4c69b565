"""Text normalisation for matching: width, case, traditional characters, punctuation, dialect."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from functools import lru_cache

import opencc

# Split clauses on punctuation before stripping it, so long messages can be scored per clause.
_CLAUSE_BREAK = re.compile(r"[，。！？；,.!?;、…~\n\r]+|\s{2,}")
# Everything that is not a letter, digit or CJK character: punctuation, spaces, emoji, ZWJ.
_NOT_WORD = re.compile(r"[\W_]+")


@lru_cache(maxsize=1)
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """Traditional characters converted to simplified (OpenCC t2s)."""
    return _t2s().convert(text)


class Normalizer:
    """Turns a raw message into the canonical form that the knowledge base is indexed in."""

    def __init__(self, replacements: Mapping[str, str]) -> None:
        self._replacements = {k: v for k, v in replacements.items() if k and k != v}
        keys = sorted(self._replacements, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, keys))) if keys else None

    def __call__(self, text: str) -> str:
        text = unicodedata.normalize("NFKC", text).lower()
        text = _t2s().convert(text)
        text = _NOT_WORD.sub("", text)
        if self._pattern is not None:
            text = self._pattern.sub(lambda m: self._replacements[m.group(0)], text)
        return text

    def clauses(self, text: str, *, limit: int = 8) -> list[str]:
        """The message's clauses, normalised, empty ones dropped, at most `limit`."""
        parts = (self(p) for p in _CLAUSE_BREAK.split(unicodedata.normalize("NFKC", text)))
        return [p for p in parts if p][:limit]


def display_clean(text: str) -> str:
    """NFKC and trimmed: the form used to compare short commands such as 订阅 or "1"."""
    return _NOT_WORD.sub("", unicodedata.normalize("NFKC", text)).lower()


_SURROGATE = re.compile("[\ud800-\udfff]")


def readable(text: str) -> str:
    """`text` with every lone surrogate (an undecodable byte kept by surrogateescape, a stray
    half of a pair in JSON) as U+FFFD: the matcher's converters cannot encode those."""
    return _SURROGATE.sub("\ufffd", text)
