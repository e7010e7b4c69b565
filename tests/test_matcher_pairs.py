"""Paired matcher tests on the bundled knowledge base: paraphrases must find their entry,
near misses and off-topic messages must be declined. Budgets, not perfection: the figures
per kind are printed by benchmarks/matcher_quality.py."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from bot.config import Settings
from bot.engine import Engine
from bot.matcher import Matcher
from bot.runtime import load

PAIRS = Path(__file__).resolve().parent / "data" / "matcher_pairs.yaml"


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    content = load(Settings())
    return Matcher(Engine._matchable_entries(content), content.lexicon)


def expected(item: dict) -> set[str | None]:
    values = item["expect"] if isinstance(item["expect"], list) else [item["expect"]]
    return {None if v is None else str(v).replace("case:", "case_") for v in values}


def test_pairs_meet_the_budgets(matcher: Matcher) -> None:
    pairs = yaml.safe_load(PAIRS.read_text(encoding="utf-8"))
    tally: Counter[str] = Counter()
    for item in pairs:
        got = matcher.match(str(item["q"])).entry_id
        ok = expected(item)
        if ok == {None}:
            tally["oos"] += 1
            tally["oos_declined"] += got is None
        else:
            tally["in"] += 1
            tally["right"] += got in ok
            tally["wrong"] += got is not None and got not in ok
    assert tally["right"] / tally["in"] >= 0.80, tally
    assert tally["wrong"] / tally["in"] <= 0.07, tally
    assert tally["oos_declined"] / tally["oos"] >= 0.90, tally


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
