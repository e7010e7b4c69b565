"""Answer quality on the bundled knowledge base, graded by content through the engine: on the
design set and on the unseen sets (written from topics.md and the research notes only; never
trained or tuned on). Budgets, not perfection, a little under what was measured so that an
edit that loses quality fails here: the figures per kind are printed by
`python -m benchmarks.matcher_quality`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from benchmarks.matcher_quality import DESIGN_SET, UNSEEN_SETS, grade, load_pairs, rates
from bot.config import Settings
from bot.engine import Engine
from bot.matching import Matcher
from bot.runtime import load, running_engine


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    content = load(Settings())
    return Matcher(Engine._matchable_entries(content), content.lexicon)


@pytest.mark.parametrize(
    ("paths", "least_right", "most_wrong", "least_declined"),
    [
        pytest.param([DESIGN_SET], 0.93, 0.05, 0.94, id="design"),
        pytest.param(UNSEEN_SETS, 0.94, 0.04, 0.92, id="unseen"),
    ],
)
async def test_pairs_meet_the_budgets(
    paths: list[Path], least_right: float, most_wrong: float, least_declined: float
) -> None:
    assert paths
    async with running_engine(Settings(), database=":memory:") as engine:
        verdicts = Counter(g.verdict for g in await grade(engine, load_pairs(*paths)))
    right, wrong, declined = rates(verdicts)
    assert right >= least_right, verdicts
    assert wrong <= most_wrong, verdicts
    assert declined >= least_declined, verdicts


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
