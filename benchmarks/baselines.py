"""Simple matchers trained on the same knowledge base, graded on the same test sets as the bot.

The baselines of issue 9, built the plain way with no tuning: character 1-3-gram TF-IDF and a
logistic regression with the out-of-scope exemplars as a class of their own, then the same with
the multilingual sentence encoder's vector beside the n-grams. Each predicts an entry (or a
case) for a message and gives that entry's reply; the out-of-scope class declines. Graded as
`benchmarks.matcher_quality` grades the bot, whose figures it prints beside theirs.

Run: .venv/bin/python -m benchmarks.baselines [PAIRS.yaml ...] (default: the unseen sets)
"""

from __future__ import annotations

import asyncio
import sys
import unicodedata
from collections import Counter
from pathlib import Path

from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from benchmarks.matcher_quality import UNSEEN_SETS, grade, load_pairs, summary, verdict
from bot.config import Settings
from bot.engine import CASE_ENTRY, CASE_PREFIX, Engine
from bot.runtime import running_engine
from bot.text import to_simplified

OUT_OF_SCOPE = "__out_of_scope__"


def plain(text: str) -> str:
    return to_simplified(unicodedata.normalize("NFKC", text).lower())


def reply_of(engine: Engine, label: str) -> tuple[str | None, str]:
    """What a baseline shows for a predicted label: (the id graded, the reply's text)."""
    if label == OUT_OF_SCOPE:
        return None, ""
    if label.startswith(CASE_ENTRY):
        case_id = label.removeprefix(CASE_ENTRY)
        return CASE_PREFIX + case_id, engine.build.case_reply(engine.content.cases[case_id]).text
    return label, engine.build.answer(engine.content.entries[label]).text


async def main() -> None:
    paths = [Path(a) for a in sys.argv[1:]] or UNSEEN_SETS
    pairs = load_pairs(*paths)
    async with running_engine(Settings.from_env(), database=":memory:") as engine:
        texts, labels = [], []
        for entry in Engine._matchable_entries(engine.content):
            for text in [*entry.questions, *entry.keywords]:
                texts.append(plain(text))
                labels.append(entry.id)
        for text in engine.content.lexicon.out_of_scope:
            texts.append(plain(text))
            labels.append(OUT_OF_SCOPE)
        questions = [plain(str(item["q"])) for item in pairs]
        ngrams = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
        train_x, test_x = ngrams.fit_transform(texts), ngrams.transform(questions)
        encode = engine.matcher.encoder.encode
        with_vectors = (
            hstack([train_x, csr_matrix(encode(texts))]).tocsr(),
            hstack([test_x, csr_matrix(encode(questions))]).tocsr(),
        )
        systems = {
            "char n-gram TF-IDF + LR": (train_x, test_x),
            "the same + sentence encoder": with_vectors,
        }
        print(f"{len(pairs)} messages from {', '.join(p.name for p in paths)}")
        for name, (train, test) in systems.items():
            model = LogisticRegression(max_iter=2000).fit(train, labels)
            counts: Counter[str] = Counter()
            for item, label in zip(pairs, model.predict(test), strict=True):
                got, answer = reply_of(engine, str(label))
                counts[verdict(item, got, answer)] += 1
            print(f"{name:30} {summary(counts)}")
        bot: Counter[str] = Counter(g.verdict for g in await grade(engine, pairs))
        print(f"{'the bot':30} {summary(bot)}")


if __name__ == "__main__":
    asyncio.run(main())
