"""Normalisation for matching: typed pinyin meets its characters, stop phrases go also when
typed as homophones, and a stop phrase inside a real word (怎么办理) stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.matching.ngrams import grams, load_syllables, syllables
from bot.matching.normalise import Preparer
from bot.schema import Lexicon


@pytest.fixture(scope="module", autouse=True)
def syllable_table(model_cache: Path) -> None:
    load_syllables(model_cache)


@pytest.mark.parametrize(
    ("text", "sounds"),
    [
        ("报jing", ["bao", "jing"]),
        ("huawei手机", ["hua", "wei", "shou", "ji"]),
        ("app权限", ["a", "p", "p", "quan", "xian"]),  # not pinyin: letter by letter
    ],
)
def test_syllables_read_typed_pinyin_and_leave_english_alone(text: str, sounds: list[str]) -> None:
    assert syllables(text) == sounds


def test_typed_pinyin_shares_syllable_features_with_its_characters() -> None:
    typed, written = grams("报jing"), grams("报警")
    shared = {g for g in typed if g in written and g.startswith("\x01")}
    assert "\x01bao jing" in shared


@pytest.fixture(scope="module")
def prepare() -> Preparer:
    return Preparer(Lexicon(stop_phrases=["怎么处理", "怎么办", "请问"]))


@pytest.mark.parametrize(
    ("message", "content"),
    [
        ("快递单怎么处理", "快递单"),
        ("快递单怎么出理", "快递单"),  # a homophone of the stop phrase
        ("被骗了怎么半", "被骗了"),
        ("请问怎么办理电话卡", "怎么办理电话卡"),  # 办理 is the topic, not filler
    ],
)
def test_stop_phrases_go_also_as_homophones(prepare: Preparer, message: str, content: str) -> None:
    assert prepare.content(message) == content


def test_a_homophone_typo_of_a_common_word_is_read_as_it() -> None:
    from bot.matching.homophones import Speller

    examples = ["网贷要先交钱吗", "网贷先交钱是骗局", "网贷放款前收费", "是不是违法不知道"] * 3
    speller = Speller(examples, keywords=["网贷诈骗", "违法"])
    assert speller("网带先交钱") == "网贷先交钱"
    assert speller("网贷先交钱") == "网贷先交钱"
    # 法不 is common here only across two words (违法|不): 发不 is not corrected to it.
    assert speller("验证码发不过来") == "验证码发不过来"
