"""The "is this a scam?" check, through the engine on the bundled knowledge base: a pasted SMS
or a described call gets its red flags named, an honest "cannot be certain", official ways to
verify, and never a number or link from the message; the table is validated like all content."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.config import Settings
from bot.content import RED_FLAGS_FILE, load_content
from bot.engine import Engine
from bot.errors import ContentError
from bot.models import IncomingMessage, Outcome
from bot.red_flags import Level, RedFlags
from bot.replies import render_plain
from bot.runtime import load, running_engine

ROOT = Path(__file__).resolve().parent.parent
SCAM_SMS = (
    "【中国某银行】尊敬的客户，您的账户存在异常已被冻结，请点击 http://secure-bank-verify.top/a8 "
    "在线解冻，否则将影响征信。客服电话 13912345678，转人工 00852-61234567"
)
CALL = (
    "刚才有个自称淘宝客服的打电话，说我买的衣服有质量问题要给我双倍赔偿，"
    "让我下载一个会议软件开屏幕共享，再把手机收到的验证码报给他，这是不是诈骗"
)


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with running_engine(Settings(), database=":memory:") as engine:
        yield engine


async def ask(engine: Engine, text: str) -> tuple[Outcome, str]:
    outcome = await engine.respond(IncomingMessage("console", "checker", text))
    await engine.storage.forget_user("console", "checker")
    return outcome, "\n".join(render_plain(outcome.replies))


def numbers_in(text: str) -> set[str]:
    return set(re.findall(r"[0-9]{3,}", text))


async def test_a_pasted_scam_sms_gets_its_flags_named_and_nothing_echoed(engine: Engine) -> None:
    outcome, shown = await ask(engine, SCAM_SMS)
    table = engine.content.red_flags
    assert table is not None
    assert outcome.entry_id in {table.check_entry, *table.fraud_entries}
    assert not outcome.fallback
    assert '要交"解冻费"' in shown
    assert "带链接或让您扫码、下载App" in shown
    flags = [line for line in shown.splitlines() if line[:2] in ("1.", "2.", "3.", "4.")]
    assert len([line for line in flags if "：" in line]) >= 3  # four at most, strongest first
    assert "高度疑似诈骗" in shown
    assert "没法百分之百确定" in shown
    # Verification through official channels only.
    assert "110" in shown and "银行卡背面印的电话" in shown
    # Nothing from the message is repeated as something to call or open.
    assert "secure-bank-verify" not in shown
    assert "http" not in shown
    assert "1391234" not in shown and "61234567" not in shown
    assert numbers_in(shown) <= set(engine.content.official_numbers)


async def test_a_described_call_gets_the_combination_named(engine: Engine) -> None:
    outcome, shown = await ask(engine, CALL)
    assert outcome.entry_id in {"scam_check", "scam_ecommerce_refund", "scam_screen_share"}
    for flag in ("索要验证码", "要求屏幕共享或远程控制", "主动找您退款理赔"):
        assert flag in shown
    assert "高度疑似诈骗" in shown
    assert "没法百分之百确定" in shown


async def test_a_genuine_bank_code_sms_is_not_called_a_scam(engine: Engine) -> None:
    _, shown = await ask(engine, "【某银行】您的验证码为382911，请勿告诉他人。这是不是诈骗")
    assert "高度疑似诈骗" not in shown
    assert "382911" not in shown


async def test_a_genuine_12381_warning_is_said_to_be_genuine(engine: Engine) -> None:
    outcome, shown = await ask(
        engine, "【12381】您好，您可能正遭遇电信网络诈骗，请勿向陌生账户转账，这条短信是真的吗"
    )
    assert outcome.entry_id == "scam_check"
    assert "12381发来的预警短信是公安机关的预警劝阻提醒" in shown


async def test_a_web_address_followed_by_chinese_is_still_a_link(engine: Engine) -> None:
    # Spaces go before the check, so the address runs into the next word: etc-rz.cc认证.
    outcome, shown = await ask(engine, "您的ETC已失效，请立即点击 etc-rz.cc 认证，逾期将无法通行")
    assert outcome.entry_id == "scam_check"
    assert "带链接或让您扫码、下载App" in shown
    assert "etc-rz" not in shown


async def test_just_asking_gets_the_general_check(engine: Engine) -> None:
    outcome, shown = await ask(engine, "这是不是诈骗")
    assert outcome.entry_id == "scam_check"
    assert "没法百分之百判断" in shown
    assert "96110" in shown


async def test_a_fraud_type_with_several_flags_lists_them_before_its_advice(
    engine: Engine,
) -> None:
    outcome, shown = await ask(
        engine, "网上兼职刷单，前面返了佣金，现在说卡单了要再充五千才能提现，我已经转了三千"
    )
    assert outcome.entry_id == "scam_task_brushing"
    assert shown.index("刷单、做任务要先垫钱") < shown.index("立即打110报警")
    assert "解冻费" in shown


def test_single_words_are_weak_and_combinations_decide() -> None:
    flags = RedFlags(load(Settings()).red_flags)
    assert flags.check("这笔转账到账了吗").level is Level.SINGLE
    assert flags.check("今天天气不错").level is Level.NONE
    assert flags.check("对方说要转到安全账户，还让我不要告诉家人").level is Level.LIKELY
    # Traditional characters and full-width letters are read like simplified text.
    assert flags.check("請把驗證碼發給我，再開啟屏幕共享").level is Level.LIKELY
    # However many signs a message piles up, the reply names the strongest few.
    many = flags.check("安全账户 通缉令 不要告诉家人 屏幕共享 刷单 解冻费 内幕消息 百万保障")
    assert len(many.flags) == 8
    assert flags.describe(many).count("\n") < 12


@pytest.fixture
def flag_dirs(tmp_path: Path) -> tuple[Path, Path]:
    knowledge = tmp_path / "knowledge"
    shutil.copytree(ROOT / "knowledge", knowledge)
    shutil.copytree(ROOT / "cases_explained", tmp_path / "cases")
    return knowledge, tmp_path / "cases"


def test_a_broken_flag_table_is_reported_by_file_flag_and_field(
    flag_dirs: tuple[Path, Path],
) -> None:
    knowledge, cases = flag_dirs
    path = knowledge / RED_FLAGS_FILE
    text = path.read_text("utf-8")
    text = text.replace("check_entry: scam_check", "check_entry: no_such_entry")
    text = text.replace(
        "    weight: strong\n    phrases: [安全账户", "    weight: huge\n    phrases: [安全账户"
    )
    text = text.replace('      - "https?://"', '      - "https?://("')
    path.write_text(text, "utf-8")
    with pytest.raises(ContentError) as info:
        load_content(knowledge, cases)
    problems = info.value.problems
    assert any(p.startswith("_red_flags.yaml: safe_account: weight:") for p in problems)
    assert any(
        p.startswith("_red_flags.yaml: link: patterns:") and "regular expression" in p
        for p in problems
    )
    # A table that does not validate is not cross-checked; fix it and the entry is checked.
    path.write_text(text.replace("weight: huge", "weight: strong").replace('://("', '://"'))
    with pytest.raises(ContentError) as info:
        load_content(knowledge, cases)
    assert "_red_flags.yaml: -: entries: no entry with id 'no_such_entry'" in info.value.problems


def test_a_flag_explanation_may_not_carry_an_invented_number(
    flag_dirs: tuple[Path, Path],
) -> None:
    knowledge, cases = flag_dirs
    path = knowledge / RED_FLAGS_FILE
    text = path.read_text("utf-8").replace(
        "explain: 公检法没有", "explain: 请拨打4001234567核实。公检法没有"
    )
    path.write_text(text, "utf-8")
    with pytest.raises(ContentError) as info:
        load_content(knowledge, cases)
    assert info.value.problems == [
        "_red_flags.yaml: safe_account: explain: 4001234567 is not a whitelisted official number"
    ]
