"""Paired answer tests on the bundled knowledge base: paraphrases must find their entry,
near misses and off-topic messages must be declined. Budgets, not perfection: the figures per
kind are printed by `python -m benchmarks.matcher_quality`."""

from __future__ import annotations

from collections import Counter

import pytest

from benchmarks.matcher_quality import grade, load_pairs
from bot.config import Settings
from bot.engine import Engine
from bot.matching import Matcher
from bot.runtime import load, running_engine


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    content = load(Settings())
    return Matcher(Engine._matchable_entries(content), content.lexicon)


async def test_pairs_meet_the_budgets() -> None:
    async with running_engine(Settings(), database=":memory:") as engine:
        verdicts = Counter(g.verdict for g in await grade(engine, load_pairs()))
    in_scope = verdicts["right"] + verdicts["wrong"] + verdicts["missed"]
    out_of_scope = verdicts["declined"] + verdicts["oos_answered"]
    assert verdicts["right"] / in_scope >= 0.80, verdicts
    assert verdicts["wrong"] / in_scope <= 0.07, verdicts
    assert verdicts["declined"] / out_of_scope >= 0.90, verdicts


@pytest.mark.parametrize(
    ("message", "entry"),
    [
        ("验证码", "verification_code"),
        ("眼证码能给别人吗", "verification_code"),
        ("信息被泄漏了咋整", "leaked_now_what"),
        ("我的個人資料被洩露了怎麼辦", "leaked_now_what"),
        ("９６１１０是什么电话", "anti_fraud_96110"),
        ("帮信罪", "cards_rental"),
        ("想问公共wifi安不安全，另外我刚才被骗转了两万块", "fraud_now"),
    ],
)
def test_paraphrase_finds_its_entry(matcher: Matcher, message: str, entry: str) -> None:
    assert matcher.match(message).entry_id == entry


@pytest.mark.parametrize(
    "message",
    ["验证码收不到怎么办", "身份证丢了怎么补办", "今天天气怎么样", "怎么办", "？？？", "😀😀"],
)
def test_near_misses_and_junk_are_declined(matcher: Matcher, message: str) -> None:
    assert matcher.match(message).entry_id is None
