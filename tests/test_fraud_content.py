"""The fraud-type content (issue 11) on the bundled knowledge base: every high-incidence fraud
type answers "money already sent" with the stop-loss steps, the money-lost answers warn of
recovery scams, declines point to the referral lines, and answers fit one phone screen."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Settings
from bot.content import Content, load_content
from bot.engine import Engine
from bot.errors import ContentError
from bot.matching import Matcher
from bot.models import IncomingMessage
from bot.runtime import load, running_engine

FRAUD_TYPES = [
    "scam_task_brushing",
    "scam_investment",
    "scam_loan",
    "scam_ecommerce_refund",
    "scam_credit_record",
    "scam_shopping",
    "scam_impersonate_boss",
    "scam_game_trade",
    "scam_romance",
    "scam_screen_share",
    "scam_flight_nfc",
]
NEW_ENTRIES = [
    *FRAUD_TYPES,
    "scam_check",
    "card_stolen",
    "phone_lost",
    "withdraw_consent",
    "report_online",
]
RECOVERY_WARNED = [
    *FRAUD_TYPES,
    "extortion",
    "phishing",
    "verification_code",
    "leaked_now_what",
    "fake_police",
    "fraud_now",
    "card_stolen",
]


@pytest.fixture(scope="module")
def content() -> Content:
    return load(Settings())


@pytest.mark.parametrize("entry_id", NEW_ENTRIES)
def test_new_entries_have_many_questions_and_sources(content: Content, entry_id: str) -> None:
    entry = content.entries[entry_id]
    assert len(entry.questions) >= 16
    assert entry.sources


@pytest.mark.parametrize("entry_id", FRAUD_TYPES)
def test_each_fraud_type_gives_the_stop_loss_steps(content: Content, entry_id: str) -> None:
    answer = content.entries[entry_id].answer
    assert "110" in answer
    assert "收款账号" in answer and "紧急止付" in answer
    assert "不再交" in answer or "别交" in answer or "一律不理" in answer
    assert "银行卡背面印的电话" in answer and "官方App" in answer
    assert "保留" in answer


@pytest.mark.parametrize("entry_id", RECOVERY_WARNED)
def test_money_lost_answers_warn_of_recovery_scams(content: Content, entry_id: str) -> None:
    assert "二次诈骗" in content.entries[entry_id].answer


def test_fraud_now_ends_screen_sharing_first_and_uses_the_number_on_the_card(
    content: Content,
) -> None:
    answer = content.entries["fraud_now"].answer
    first = answer.split("\n\n")[0]
    assert "屏幕共享" in first and "断网" in first and "110" in first
    assert "银行卡背面印的电话" in answer


def test_referral_lines_are_whitelisted_and_offered_when_declining(content: Content) -> None:
    for number in ("12348", "12333", "12345"):
        assert number in content.official_numbers
        assert number in content.texts.fallback


def test_the_bot_speaks_in_the_polite_register(content: Content) -> None:
    for entry in content.entries.values():
        assert "你" not in entry.answer, entry.id
    for case in content.cases.values():
        assert "你" not in case.lesson, case.id


def test_case_dates_say_what_they_are(content: Content) -> None:
    assert all(case.date_means for case in content.cases.values())
    assert content.cases["spc_guiding_192_face_app"].date_means == "发布"
    assert content.cases["hangzhou_face_recognition_zoo"].local


@pytest.fixture(scope="module")
def matcher(content: Content) -> Matcher:
    return Matcher(Engine._matchable_entries(content), content.lexicon)


@pytest.mark.parametrize(
    ("message", "entry"),
    [
        ("冒充淘宝客服退款", "scam_ecommerce_refund"),
        ("刷单返利", "scam_task_brushing"),
        ("网上说贷款要先交解冻费才放款", "scam_loan"),
        ("客服说不注销校园贷就影响征信", "scam_credit_record"),
        ("网恋的对象带我去一个平台投资", "scam_romance"),
        ("银行卡被盗刷了", "card_stolen"),
        ("手机丢了，微信和支付宝都还登着", "phone_lost"),
        ("App的授权同意了还能撤回吗", "withdraw_consent"),
        ("在国家反诈中心App上怎么举报骗子", "report_online"),
        ("帮我看看这条短信是不是诈骗", "scam_check"),
    ],
)
def test_fraud_questions_find_their_entry(matcher: Matcher, message: str, entry: str) -> None:
    assert matcher.match(message).entry_id == entry


@pytest.mark.parametrize(
    "story",
    [
        "在群里做点赞任务，后来说我连单了要继续充值，前后转了八千块，现在提不了现",
        "有个自称快递客服的说我包裹丢了要理赔，让我开了屏幕共享，卡里被转走了六千",
        "网上贷款说我卡号填错了被冻结，让我交解冻费，我已经转了两千",
    ],
)
async def test_a_money_sent_story_gets_110_and_stop_paying(story: str) -> None:
    async with running_engine(Settings(), database=":memory:") as engine:
        outcome = await engine.respond(IncomingMessage("console", "story", story))
    text = outcome.replies[0].text
    assert "110" in text
    assert "不再交" in text or "不要再转账" in text


def test_an_answer_longer_than_a_phone_screen_is_refused(mini_dirs: tuple[Path, Path]) -> None:
    knowledge, cases = mini_dirs
    long_lead = "请先做这件事" * 20
    (knowledge / "long.yaml").write_text(
        "entries:\n  - id: too_long\n    title: 太长\n    questions: [a, b, c]\n"
        f"    answer: |\n      {long_lead}\n\n      {'很长的说明' * 80}\n",
        encoding="utf-8",
    )
    with pytest.raises(ContentError) as info:
        load_content(knowledge, cases)
    problems = info.value.problems
    assert any(p.startswith("long.yaml: too_long: answer: 520 characters") for p in problems)
    assert any(
        p.startswith("long.yaml: too_long: answer: first paragraph has 120 characters")
        for p in problems
    )
