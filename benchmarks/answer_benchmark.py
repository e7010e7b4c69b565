"""Answer latency and cold start: prints figures, asserts nothing.

1. In-process answer latency (p50/p99) through the engine on the bundled knowledge base.
2. The matcher on a synthetic knowledge base of 5,000 entries × 5 questions.
3. Cold start of `infoguard ask QUESTION` (a whole process), median of several runs.

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

from bot.matcher import Matcher

from bot.config import Settings
from bot.models import IncomingMessage
from bot.runtime import load, running_engine
from bot.schema import Entry

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
]


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def engine_latency(rounds: int = 100) -> list[float]:
    samples: list[float] = []
    async with running_engine(Settings(), database=":memory:") as engine:
        for i in range(rounds):
            for q in QUERIES:
                start = time.perf_counter()
                await engine.handle(IncomingMessage("bench", f"u{i}", q))
                samples.append((time.perf_counter() - start) * 1000)
    return samples


def synthetic_matcher(entries: int = 5000, questions: int = 5) -> tuple[float, list[float]]:
    content = load(Settings())
    vocabulary = sorted({q for e in content.entries.values() for q in e.questions})
    chars = sorted({c for q in vocabulary for c in q})
    rng = random.Random(7)

    def sentence() -> str:
        base = rng.choice(vocabulary)
        noise = "".join(rng.choice(chars) for _ in range(rng.randint(2, 8)))
        cut = rng.randint(0, len(base))
        return base[:cut] + noise + base[cut:]

    synthetic = [
        Entry.model_construct(
            id=f"e{i}",
            title=f"e{i}",
            questions=[sentence() for _ in range(questions)],
            keywords=[],
            priority=1,
            intent=None,
        )
        for i in range(entries)
    ]
    start = time.perf_counter()
    matcher = Matcher(synthetic, content.lexicon)
    build = time.perf_counter() - start
    samples = []
    probes = [sentence() for _ in range(300)] + QUERIES * 20
    for q in probes:
        start = time.perf_counter()
        matcher.match(q)
        samples.append((time.perf_counter() - start) * 1000)
    return build, samples


def cold_start(runs: int = 5) -> list[float]:
    command = [str(Path(sys.executable).parent / "infoguard"), "ask", "验证码能告诉别人吗"]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    samples = asyncio.run(engine_latency())
    print(
        f"engine, bundled KB: {len(samples)} answers, p50 {percentile(samples, 0.5):.2f} ms, "
        f"p99 {percentile(samples, 0.99):.2f} ms, max {max(samples):.2f} ms"
    )
    build, synthetic = synthetic_matcher()
    print(
        f"matcher, synthetic 5,000 entries x 5 questions: index build {build:.1f} s, "
        f"p50 {percentile(synthetic, 0.5):.2f} ms, p99 {percentile(synthetic, 0.99):.2f} ms"
    )
    starts = cold_start()
    print(
        f"cold start of `infoguard ask` (one question): median {statistics.median(starts):.2f} s, "
        f"max {max(starts):.2f} s over {len(starts)} runs"
    )


if __name__ == "__main__":
    main()
