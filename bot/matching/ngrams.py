"""Step 2: character n-gram features of a normalised text.

Chinese needs no segmenter for this: overlapping character uni-, bi- and trigrams capture
words, typos that keep most characters, and word order, and they cost microseconds. Weights
are TF-IDF with sublinear term frequency, rows scaled to unit length, as scikit-learn's
`TfidfVectorizer(analyzer="char")` does; this module computes them without importing it, so
answering a message needs numpy only.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np
import numpy.typing as npt

ORDERS = (1, 2, 3)
USE_SYLLABLES = True
SYLLABLE = "\x01"
"""Prefix that keeps syllable features apart from characters."""
MIN_DF = 2
"""An n-gram seen in one example only is noise more often than signal: cross-validated on the
bundled knowledge base it cost accuracy and four times the training time."""
Features = tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]
"""A sparse row: column indices and their weights."""


_SYLLABLES: dict[str, str] = {}
"""Character → toneless syllable for the CJK block, from pypinyin, loaded by `load_syllables`."""


def load_syllables(cache_dir: Path) -> None:
    """Fill the syllable table from its cache file, writing the file from pypinyin first if
    needed: pypinyin's own dictionaries take half a second to import, the file 20 ms."""
    if _SYLLABLES:
        return
    from importlib.metadata import version

    path = cache_dir / f"syllables-pypinyin-{version('pypinyin')}.json"
    try:
        _SYLLABLES.update(json.loads(path.read_text(encoding="utf-8")))
        return
    except (OSError, ValueError):
        pass
    from pypinyin import lazy_pinyin

    chars = [chr(c) for c in range(0x4E00, 0xA000)]
    table = dict(zip(chars, lazy_pinyin(chars), strict=True))
    _SYLLABLES.update(table)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = path.with_suffix(f".{os.getpid()}.tmp")
        staging.write_text(json.dumps(table, ensure_ascii=False), encoding="utf-8")
        os.replace(staging, path)
    except OSError:
        pass  # only costs the next start its half second


_LATIN_RUN = re.compile("[a-z]+")
_PINYIN: set[str] = set()
"""Every toneless syllable of the table: a latin run made only of these is typed pinyin."""
LONGEST_SYLLABLE = 6


def _pinyin(run: str) -> list[str] | None:
    """`run` split into pinyin syllables, longest first (baojing → bao jing), or None when it
    is not pinyin (app, wifi, hello)."""
    if not _PINYIN:
        _PINYIN.update(s for s in _SYLLABLES.values() if s.isascii() and s.isalpha())
    found, start = [], 0
    while start < len(run):
        for end in range(min(len(run), start + LONGEST_SYLLABLE), start, -1):
            if run[start:end] in _PINYIN:
                found.append(run[start:end])
                start = end
                break
        else:
            return None
    return found


def syllables(text: str) -> list[str]:
    """The toneless syllables of `text`: one per Chinese character; a run of typed pinyin
    (报jing) as its syllables, so it meets the characters it stands for; anything else as is."""
    out: list[str] = []
    start = 0
    for run in _LATIN_RUN.finditer(text):
        out.extend(syllable(c) for c in text[start : run.start()])
        spelled = _pinyin(run.group()) if len(run.group()) > 1 else None
        out.extend(spelled if spelled is not None else run.group())
        start = run.end()
    out.extend(syllable(c) for c in text[start:])
    return out


def syllable(char: str) -> str:
    """The toneless syllable of a Chinese character; any other character as is."""
    found = _SYLLABLES.get(char)
    if found is not None:
        return found
    if "\u4e00" <= char <= "\u9fff":
        from pypinyin import lazy_pinyin

        return lazy_pinyin(char)[0]
    return char


def grams(text: str) -> Counter[str]:
    """Character 1-3-grams, plus toneless-syllable 1-2-grams so that a homophone typo
    (快第单 for 快递单, 眼证码 for 验证码) still shares features with the right words."""
    counts: Counter[str] = Counter()
    for n in ORDERS:
        counts.update(text[i : i + n] for i in range(len(text) - n + 1))
    if not USE_SYLLABLES:
        return counts
    sounds = syllables(text)
    counts.update(SYLLABLE + s for s in sounds)
    counts.update(SYLLABLE + a + " " + b for a, b in pairwise(sounds))
    return counts


class NgramFeaturizer:
    """A fitted vocabulary with inverse document frequencies."""

    def __init__(self, vocabulary: dict[str, int], idf: npt.NDArray[np.float32]) -> None:
        self.vocabulary = vocabulary
        self.idf = idf

    @classmethod
    def fit(
        cls, texts: Iterable[str], *, min_df: int = MIN_DF, max_features: int | None = None
    ) -> NgramFeaturizer:
        """Learn the n-grams found in at least `min_df` of `texts`; with `max_features`, keep
        only the most frequent."""
        document_frequency: Counter[str] = Counter()
        n_docs = 0
        for text in texts:
            document_frequency.update(grams(text).keys())
            n_docs += 1
        common = [g for g, df in document_frequency.items() if df >= min_df]
        kept = sorted(common, key=lambda g: (-document_frequency[g], g))
        if max_features is not None:
            kept = kept[:max_features]
        vocabulary = {g: i for i, g in enumerate(kept)}
        idf = np.array(
            [math.log((1 + n_docs) / (1 + document_frequency[g])) + 1 for g in kept],
            dtype=np.float32,
        )
        return cls(vocabulary, idf)

    @property
    def size(self) -> int:
        return len(self.vocabulary)

    def transform(self, text: str) -> Features:
        counts = grams(text)
        pairs = [(self.vocabulary[g], c) for g, c in counts.items() if g in self.vocabulary]
        if not pairs:
            return np.zeros(0, np.int32), np.zeros(0, np.float32)
        columns = np.fromiter((p[0] for p in pairs), np.int32, len(pairs))
        tf = np.fromiter((p[1] for p in pairs), np.float32, len(pairs))
        weights = (1 + np.log(tf)) * self.idf[columns]
        weights /= np.linalg.norm(weights)
        return columns, weights

    def matrix(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Dense rows for training (a knowledge base is small enough)."""
        out = np.zeros((len(texts), self.size), np.float32)
        for row, text in enumerate(texts):
            columns, weights = self.transform(text)
            out[row, columns] = weights
        return out
