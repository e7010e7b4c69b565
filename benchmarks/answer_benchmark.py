"""Answer latency and cold start: prints figures, asserts nothing.

1. Per message through the matcher on the bundled knowledge base, sentence encoder included
   wherever the n-gram model is not sure on its own (the share is printed), and through the
   whole engine (storage round trips included).
2. The matcher on a synthetic knowledge base of 5,000 entries × 5 questions. Training a
   5,001-class logistic regression would take far longer than a benchmark should, and the
   weights do not change the cost of answering, so its model has the real shapes with
   nearest-centroid weights (n-gram centroids, random encoder weights); every probe is unsure
   and so takes the encoder path, the slowest one.
3. Cold start of `infoguard ask QUESTION` (a whole process) with a warm model cache.

Run: .venv/bin/python benchmarks/answer_benchmark.py
"""

from __future__ import annotations

import asyncio
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bot.config import Settings
from bot.matching import Matcher
from bot.matching.model import OUT_OF_SCOPE, Hyper, IntentModel
from bot.matching.ngrams import NgramFeaturizer
from bot.models import IncomingMessage
from bot.runtime import load, running_engine

QUERIES = [
    "验证码能告诉别人吗",
    "信息被泄漏了咋整",
    "我刚刚被骗转账了怎么办",
    "倒卖个人信息会判几年",
    "有人说不给钱就把我的照片发到网上，我好害怕，怎么办才好，要不要给他转钱",
    "今天昆明天气怎么样",
    "96110",
    "我的個人資料被洩露了怎麼辦",
    "快递单咋个处理",
    "自称警察打电话说我涉嫌洗钱，让我把钱转到安全账户，这是真的吗？我该怎么办",
    "淘宝客服说我买的东西有质量问题要给我退款，让我下载一个会议软件",
    "网上认识一个男的，带我在一个平台投资，现在提不了现，还要交钱",
]


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def figures(samples: list[float]) -> str:
    return (
        f"p50 {percentile(samples, 0.5):.2f} ms, p99 {percentile(samples, 0.99):.2f} ms, "
        f"max {max(samples):.2f} ms"
    )


def timed(matcher: Matcher, probes: list[str], *, fresh: bool = True) -> tuple[list[float], float]:
    """Latency per message; `fresh`: as if each text were new (no remembered vectors)."""
    samples, encoded = [], 0
    for q in probes:
        if fresh:
            matcher.encoder.forget_recent()
        start = time.perf_counter()
        match = matcher.match(q)
        samples.append((time.perf_counter() - start) * 1000)
        encoded += match.used_encoder
    return samples, encoded / len(probes)


async def bundled(rounds: int = 50) -> None:
    settings = Settings.from_env()
    async with running_engine(settings, database=":memory:") as engine:
        matcher = engine.matcher
        matcher.match("预热")
        samples, encoded = timed(matcher, QUERIES * rounds)
        print(
            f"matcher, bundled KB, every text new: {len(samples)} messages, "
            f"{figures(samples)}; encoder used for {encoded:.0%}"
        )
        samples, _ = timed(matcher, QUERIES * rounds, fresh=False)
        print(f"  the same texts again (their vectors remembered): {figures(samples)}")
        only_encoder = [q for q in QUERIES if matcher.match(q).used_encoder]
        if only_encoder:
            samples, _ = timed(matcher, only_encoder * rounds)
            print(
                f"  messages that need the encoder ({len(only_encoder)} kinds): {figures(samples)}"
            )
        samples = []
        for i in range(rounds):
            for q in QUERIES:
                start = time.perf_counter()
                await engine.handle(IncomingMessage("bench", f"u{i}", q))
                samples.append((time.perf_counter() - start) * 1000)
        print(f"engine, bundled KB (storage included): {figures(samples)}")


def synthetic(entries: int = 5000, questions: int = 5) -> None:
    settings = Settings.from_env()
    content = load(settings)
    vocabulary = sorted({q for e in content.entries.values() for q in e.questions})
    chars = sorted({c for q in vocabulary for c in q})
    rng = random.Random(7)

    def sentence() -> str:
        base = rng.choice(vocabulary)
        noise = "".join(rng.choice(chars) for _ in range(rng.randint(2, 8)))
        cut = rng.randint(0, len(base))
        return base[:cut] + noise + base[cut:]

    start = time.perf_counter()
    classes = [f"e{i}" for i in range(entries)] + [OUT_OF_SCOPE]
    texts = [[sentence() for _ in range(questions)] for _ in range(entries)]
    probe_matcher = Matcher.with_model(
        _centroid_model(classes, texts), content.lexicon, {}, settings.cache_dir
    )
    build = time.perf_counter() - start
    probe_matcher.match("预热")
    probes = [sentence() for _ in range(300)] + QUERIES * 20
    samples, encoded = timed(probe_matcher, probes)
    print(
        f"matcher, synthetic {entries:,} entries x {questions} questions (model built in "
        f"{build:.1f} s): {figures(samples)}; encoder used for {encoded:.0%}"
    )


def _centroid_model(classes: list[str], texts: list[list[str]]) -> IntentModel:
    flat = [t for group in texts for t in group]
    featurizer = NgramFeaturizer.fit(flat, max_features=20_000)
    weights = np.zeros((featurizer.size, len(classes)), np.float32)
    for column, group in enumerate(texts):
        for text in group:
            rows, values = featurizer.transform(text)
            weights[rows, column] += values / len(group)
    rng = np.random.default_rng(7)
    vocabulary = sorted(featurizer.vocabulary, key=featurizer.vocabulary.__getitem__)
    arrays = {
        "idf": featurizer.idf,
        "cheap_w": weights,
        "cheap_b": np.zeros(len(classes), np.float32),
        "full_w": weights,
        "full_e": rng.normal(0, 0.05, (512, len(classes))).astype(np.float32),
        "full_b": np.zeros(len(classes), np.float32),
    }
    meta = {
        "classes": classes,
        "vocabulary": vocabulary,
        "hyper": {"regularisation": Hyper().regularisation, "encoder_weight": 1.0},
        "thresholds": {"answer": 0.5, "clarify": 0.1, "skip_encoder": 0.9},
    }
    return IntentModel(arrays, meta)


def cold_start(runs: int = 5) -> list[float]:
    command = [str(Path(sys.executable).parent / "infoguard"), "ask", "验证码能告诉别人吗"]
    subprocess.run(command, capture_output=True, check=True)  # warm the model cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    asyncio.run(bundled())
    synthetic()
    starts = cold_start()
    print(
        f"cold start of `infoguard ask` (one question, warm cache): median "
        f"{statistics.median(starts):.2f} s, max {max(starts):.2f} s over {len(starts)} runs"
    )
    unsure = [
        "我手机上那个东西是不是有问题",  # the n-gram model alone is not sure: encoder needed
    ]
    command = [str(Path(sys.executable).parent / "infoguard"), "ask", *unsure]
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    print(f"  with a message that needs the encoder: median {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()
