"""Step 2: character n-gram features of a normalised text.

Chinese needs no segmenter for this: overlapping character uni-, bi- and trigrams capture
words, typos that keep most characters, and word order, and they cost microseconds. Weights
are TF-IDF with sublinear term frequency, rows scaled to unit length, as scikit-learn's
`TfidfVectorizer(analyzer="char")` does; this module computes them without importing it, so
answering a message needs numpy only.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import pairwise

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


@lru_cache(maxsize=16384)
def _syllable(char: str) -> str:
    from pypinyin import lazy_pinyin

    return lazy_pinyin(char)[0] if "\u4e00" <= char <= "\u9fff" else char


def grams(text: str) -> Counter[str]:
    """Character 1-3-grams, plus toneless-syllable 1-2-grams so that a homophone typo
    (快第单 for 快递单, 眼证码 for 验证码) still shares features with the right words."""
    counts: Counter[str] = Counter()
    for n in ORDERS:
        counts.update(text[i : i + n] for i in range(len(text) - n + 1))
    if not USE_SYLLABLES:
        return counts
    syllables = [_syllable(c) for c in text]
    counts.update(SYLLABLE + s for s in syllables)
    counts.update(SYLLABLE + a + " " + b for a, b in pairwise(syllables))
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
