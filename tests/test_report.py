"""Report guidance (报案助手): scripted transcripts for every scenario through the engine, the
conversation commands (cancel, restart, resume, emergency, expiry), what is stored in SQLite,
the flow file's validation, and the diagram in docs/report-flow.md kept in step with it."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.content import Content, load_content
from bot.engine import Engine
from bot.errors import ContentError
from bot.models import IncomingMessage, Reply
from bot.replies import render_plain
from bot.report import ReportGuide
from bot.storage import SESSION_TTL_SECONDS, SqliteStorage

ROOT = Path(__file__).resolve().parent.parent
REPORT_YAML = ROOT / "knowledge" / "_report.yaml"

# Every id that _bot.yaml, bot.yaml and _report.yaml refer to, plus one ordinary question.
FIXTURE_ENTRIES = {
    "protect_general": (
        "日常防护",
        ["平时怎么保护个人信息", "防止信息泄露有什么办法", "防护小窍门"],
    ),
    "verification_code": (
        "验证码不给任何人",
        ["别人问我要验证码能给吗", "客服让我报验证码", "验证码能告诉别人吗"],
    ),
    "recovery_scam": ("帮你追款是骗局", ["追款公司靠谱吗", "代理报案", "能帮我追回被骗的钱吗"]),
    "extortion": ("被威胁敲诈怎么办", ["被人敲诈了怎么办", "被勒索", "裸聊被威胁"]),
    "doxxing": ("被开盒人肉怎么办", ["被人肉了怎么办", "开盒", "信息被挂到网上"]),
    "spam_calls": ("骚扰电话和垃圾短信", ["骚扰电话太多", "垃圾短信怎么举报", "推销电话"]),
    "app_permissions": ("App权限怎么管", ["App乱要权限", "App权限怎么关", "软件读取通讯录"]),
    "complain_company": (
        "企业乱用信息去哪投诉",
        ["商家泄露信息去哪投诉", "12315管不管", "投诉公司"],
    ),
    "sim_cards_in_my_name": ("查名下手机卡银行卡", ["一证通查", "一键查卡", "查名下电话卡"]),
    "cards_rental": ("出租出借两卡违法", ["帮信罪", "出租银行卡违法吗", "两卡是什么"]),
    "anti_fraud_96110": ("96110是什么电话", ["96110要不要接", "反诈专线", "96110是什么"]),
    "delete_request": (
        "申请查阅更正删除",
        ["删除申请模板", "怎么让App删除我的信息", "更正我的资料"],
    ),
}
FIXTURE_CASE = """\
id: tiny_case
title: 验证码也是个人信息
kind: 刑事
court: 测试法院
date: "2022-12-26"
summary: 一个用于测试的案例摘要。
facts: 测试用的案情。
outcome: 测试用的结果。
legal_point: 验证码属于公民个人信息。
articles:
  - law: 刑法
    article: 第二百五十三条之一
lesson: 验证码不给任何人。
sources:
  - name: 测试来源
related: [verification_code]
"""


def write_fixture(root: Path, report: Path = REPORT_YAML) -> tuple[Path, Path]:
    """A knowledge folder (the real shared files and flow, tiny entries) and a cases folder."""
    knowledge, cases = root / "knowledge", root / "cases"
    knowledge.mkdir(parents=True)
    cases.mkdir()
    for name in ("_bot.yaml", "_lexicon.yaml", "bot.yaml"):
        shutil.copy(ROOT / "knowledge" / name, knowledge / name)
    shutil.copy(report, knowledge / "_report.yaml")
    entries = [
        {"id": i, "title": t, "questions": q, "answer": f"{t}：测试答案。"}
        for i, (t, q) in FIXTURE_ENTRIES.items()
    ]
    fraud_now = ["刚转账给骗子了怎么办", "被骗了", "钱转给骗子了", "我刚转了钱被骗了"]
    entries.append(
        {
            "id": "fraud_now",
            "title": "刚被骗了怎么办",
            "questions": fraud_now,
            "answer": "立即拨打110。",
            "report": "fraud",
            "priority": 3,
        }
    )
    text = yaml.safe_dump({"entries": entries}, allow_unicode=True, sort_keys=False)
    (knowledge / "fixture.yaml").write_text(text, encoding="utf-8")
    (cases / "tiny_case.yaml").write_text(FIXTURE_CASE, encoding="utf-8")
    return knowledge, cases


def database_text(path: Path) -> str:
    """Everything stored in the SQLite file, every table and column, as one string."""
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(repr(row) for t in tables for row in db.execute(f"SELECT * FROM {t}"))


def assert_not_stored(path: Path, *words: str) -> None:
    """Neither the words nor their JSON-escaped form (\\uXXXX) are anywhere in the file."""
    stored = database_text(path)
    for word in words:
        assert word not in stored and json.dumps(word)[1:-1] not in stored


def stored_sessions(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as db:
        return [json.loads(r[0]) for r in db.execute("SELECT state FROM sessions")]


class Chat:
    """One user talking to the engine; keeps the last replies to press buttons by label."""

    def __init__(self, engine: Engine, user: str = "u1") -> None:
        self.engine = engine
        self.user = user
        self.last: list[Reply] = []

    async def say(self, text: str) -> str:
        self.last = await self.engine.handle(IncomingMessage("console", self.user, text))
        return "\n".join(render_plain(self.last))

    def payload(self, label: str) -> str:
        buttons = [b for r in self.last for b in r.buttons if b.label == label]
        assert buttons, f"no button {label!r} in {[b.label for r in self.last for b in r.buttons]}"
        return buttons[0].payload

    async def press(self, label: str) -> str:
        return await self.say(self.payload(label))

    async def number(self, label: str) -> str:
        """Answer with the number the plain rendering shows next to the button."""
        labels = [b.label for r in self.last for b in r.buttons]
        return await self.say(str(labels.index(label) + 1))


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return write_fixture(tmp_path / "content")


@pytest.fixture
def content(dirs: tuple[Path, Path]) -> Content:
    return load_content(*dirs)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "report.sqlite3"


@pytest.fixture
async def engine(content: Content, db_path: Path, clock: Clock) -> AsyncIterator[Engine]:
    storage = await SqliteStorage.open(db_path, clock=clock)
    yield Engine(content, storage)
    await storage.close()


@pytest.fixture
def chat(engine: Engine) -> Chat:
    return Chat(engine)


def numbers_in(text: str) -> set[str]:
    """Runs of three or more digits: phone numbers and codes (not "1." or "闲置30分钟")."""
    return set(re.findall(r"[0-9][0-9-]+[0-9]", text))


def assert_only_official(content: Content, text: str) -> None:
    assert numbers_in(text) <= content.official_numbers, numbers_in(text)
    assert not re.search(r"https?://|www\.", text)


def assert_flow_gone(db_path: Path) -> None:
    assert all("flow" not in state for state in stored_sessions(db_path))


# ---------------------------------------------------------------------- every scenario


SCENARIOS: list[tuple[str, list[str], list[str], list[str]]] = [
    # (first button, answers by label, must appear, must not appear)
    (
        "被骗了，钱被骗走",
        ["转了，就在今天", "只有一部分"],
        [
            "紧急止付",
            "收款账号",
            "开户银行",
            "【去派出所时带上】",
            "身份证",
            "时间线",
            "记录删了也别着急",
        ],
        [],
    ),
    (
        "被骗了，钱被骗走",
        ["没有转钱", "记录都还在"],
        ["国家反诈中心App", "96110", "【去派出所时带上】"],
        ["紧急止付", "记录删了也别着急"],
    ),
    (
        "有人敲诈、威胁我",
        ["有，在网上或电话里", "转了，一天以上了", "记录都还在"],
        ["不要给钱", "第二百七十四条", "12377", "每一笔的收款账号", "【去派出所时带上】"],
        [],
    ),
    (
        "我的信息被挂到网上",
        ["有，在网上或电话里", "记录都还在"],
        ["12377", "第一千一百九十五条", "拨打110报警", "【去派出所时带上】"],
        [],
    ),
    ("我的信息被挂到网上", ["没有", "基本没有"], ["12377", "截图"], ["【去派出所时带上】"]),
    (
        "我的信息泄露了",
        ["没有转钱", "记录都还在"],
        ["改密码", "工信微报", "一证通查", "一键查卡", "12315", "12321"],
        ["【去派出所时带上】"],
    ),
    (
        "骚扰电话、垃圾短信",
        ["记录都还在"],
        ["12321", "010-12321", "12300", "运营商"],
        ["【去派出所时带上】"],
    ),
    ("App乱收集我的信息", ["只有一部分"], ["权限", "12321", "网信"], ["【去派出所时带上】"]),
    (
        "商家泄露或卖了我的信息",
        ["有", "记录都还在"],
        ["第四十五至四十七条", "12315", "110", "【去派出所时带上】"],
        [],
    ),
    ("商家泄露或卖了我的信息", ["不确定", "记录都还在"], ["12315"], ["涉嫌", "【去派出所时带上】"]),
    (
        "名下有陌生电话卡",
        ["还没查，有点担心"],
        ["工信微报", "一证通查", "10699000", "一键查卡"],
        ["营业厅"],
    ),
    ("名下有陌生电话卡", ["查到了不是我办的卡"], ["营业厅", "注销"], ["10699000"]),
    (
        "有人要租或买我的卡",
        ["还没有，只是有人来问"],
        ["直接拒绝", "第三十一条", "第二百八十七条之二", "96110"],
        ["【去派出所时带上】"],
    ),
    (
        "有人要租或买我的卡",
        ["已经给出去了"],
        ["挂失", "派出所", "【去派出所时带上】"],
        ["直接拒绝"],
    ),
    ("接到96110来电", [], ["接起来", "区号+96110", "安全账户"], ["【去派出所时带上】"]),
]


@pytest.mark.parametrize(("scenario", "answers", "present", "absent"), SCENARIOS)
async def test_every_scenario_ends_with_a_personal_plan(
    chat: Chat,
    content: Content,
    db_path: Path,
    scenario: str,
    answers: list[str],
    present: list[str],
    absent: list[str],
) -> None:
    opening = await chat.say("我要报案")
    assert "发生了什么事" in opening and "不会问您的姓名、身份证号或住址" in opening
    transcript = [opening, await chat.press(scenario)]
    for number, label in enumerate(answers):
        # Alternate buttons and numbered answers: both must work the same way.
        transcript.append(await (chat.press(label) if number % 2 else chat.number(label)))
    plan = transcript[-1]
    assert "📋 报案准备清单" in plan
    assert re.search(r"^1\. ", plan, re.MULTILINE), "the plan is numbered"
    assert "情况：" + scenario in plan
    assert "追回损失" in plan and "代理报案" in plan, "the recovery-scam warning"
    for text in present:
        assert text in plan
    for text in absent:
        assert text not in plan
    for text in transcript:
        assert_only_official(content, text)
    assert_flow_gone(db_path)


async def test_urgent_first_action_comes_before_the_remaining_questions(chat: Chat) -> None:
    await chat.say("#report:fraud")
    shown = await chat.press("转了，就在今天")
    assert shown.index("请先做这件事") < shown.index("拨打110") < shown.index("哪些证据")
    assert [r.buttons != () for r in chat.last] == [False, True]


async def test_extortion_says_do_not_pay_before_any_question(chat: Chat) -> None:
    shown = await chat.say("#report:extortion")
    assert shown.index("不要给钱") < shown.index("对方现在还在威胁您吗")


async def test_letters_for_delete_access_and_correct(chat: Chat, db_path: Path) -> None:
    articles = {
        "删除我的信息": "第四十七条",
        "查阅、复制我的信息": "第四十五条",
        "更正、补充我的信息": "第四十六条",
    }
    for label, article in articles.items():
        await chat.say("我要报案")
        await chat.press("要求删除或查改我的信息")
        shown = await chat.press(label)
        template = chat.last[1].text
        assert article in template and "第五十条" in template
        assert "【公司名称】" in template and "【您的称呼或账号】" in template
        assert "在您自己的手机上" in shown and "法律没有规定具体天数" in shown
        assert not re.search("身份证号：|住址：|姓名：", template), "never asks for ID or address"
        assert_flow_gone(db_path)


async def test_plan_offers_letters_that_open_directly(chat: Chat) -> None:
    await chat.say("#report:merchant")
    await chat.press("不确定")
    await chat.press("记录都还在")
    shown = await chat.press("要求删除的申请书")
    assert "第四十七条" in shown and "您想让对方做什么" not in shown


# ---------------------------------------------------------------------- the first message


def test_first_message_skips_questions_it_answers(content: Content) -> None:
    guide = ReportGuide(content)
    step = guide.start(None, "我刚转了钱被骗了")
    assert step.state == {"scenario": "fraud", "answers": {"money": "just_now"}}
    text = "\n".join(r.text for r in step.replies)
    assert "被骗了，钱被骗走 · 转了，就在今天" in text
    assert "请先做这件事" in text and "哪些证据" in text
    assert "钱已经转出去了吗" not in text


def test_first_message_never_guesses_an_emergency_or_a_tie(content: Content) -> None:
    guide = ReportGuide(content)
    assert guide.start(None, "骗子一直让我转钱").state == {"scenario": "fraud", "answers": {}}
    assert guide.start(None, "骗子还威胁我").state == {"answers": {}}  # fraud or extortion: ask
    assert guide.start(None, "商家泄露了我的信息").state == {"scenario": "merchant", "answers": {}}
    assert guide.start(None, "我没被骗").state == {"answers": {}}


def test_button_payloads_carry_only_valid_choices(content: Content) -> None:
    guide = ReportGuide(content)
    step = guide.start("fraud:money=earlier,evidence=kept", "")
    assert step.state is None and "尽快报警" in step.replies[-1].text
    step = guide.start("fraud:money=not_yet,evidence=bogus,what=spam", "")
    assert step.state == {"scenario": "fraud", "answers": {}}, "no emergency, nothing invalid"


async def test_answer_button_carries_what_the_message_said(chat: Chat, db_path: Path) -> None:
    shown = await chat.say("我刚转了钱被骗了")
    assert "立即拨打110" in shown
    assert chat.payload("一步步帮我准备报案") == "#report:fraud:money=just_now"
    shown = await chat.press("一步步帮我准备报案")
    assert "被骗了，钱被骗走 · 转了，就在今天" in shown and "请先做这件事" in shown
    assert "钱已经转出去了吗" not in shown and "哪些证据" in shown
    flows = [s["flow"] for s in stored_sessions(db_path)]
    assert flows == [{"scenario": "fraud", "answers": {"money": "just_now"}}]
    assert_not_stored(db_path, "被骗了")


async def test_engine_passes_the_first_message_to_the_guide(chat: Chat) -> None:
    shown = await chat.say("我要报警，有人敲诈我")
    assert "有人敲诈、威胁我" in shown and "对方现在还在威胁您吗" in shown


# ---------------------------------------------------------------------- conversation commands


@pytest.mark.parametrize("word", ["取消", "退出", "返回"])
async def test_leave_at_any_time(chat: Chat, db_path: Path, word: str) -> None:
    await chat.say("我要报案")
    await chat.press("被骗了，钱被骗走")
    shown = await chat.say(word)
    assert "已退出报案助手" in shown
    assert_flow_gone(db_path)
    after = await chat.say("1")
    assert "已退出" not in after and "钱已经转出去了吗" not in after


async def test_exit_button_and_restart(chat: Chat, db_path: Path) -> None:
    await chat.say("#report:fraud")
    shown = await chat.say("重新开始")
    assert "从头开始" in shown and "发生了什么事" in shown
    assert stored_sessions(db_path)[0]["flow"] == {"answers": {}}
    await chat.say("天气怎么样呀")  # passthrough shows the exit button
    assert "已退出" in await chat.press("退出")
    assert_flow_gone(db_path)


async def test_ordinary_question_mid_flow_then_resume(chat: Chat, db_path: Path) -> None:
    await chat.say("#report:fraud")
    await chat.press("转了，一天以上了")
    before = stored_sessions(db_path)[0]["flow"]
    shown = await chat.say("验证码能告诉别人吗")
    assert "验证码不给任何人：测试答案" in shown
    assert shown.index("测试答案") < shown.index('回复"继续"回到报案助手')
    assert stored_sessions(db_path)[0]["flow"] == before
    resumed = await chat.say("继续")
    assert "哪些证据" in resumed
    plan = await chat.number("记录都还在")
    assert "尽快报警" in plan and "紧急止付" not in plan


async def test_resume_button_and_stale_choices(chat: Chat) -> None:
    await chat.say("我要报案")
    await chat.press("被骗了，钱被骗走")
    stale = "#flow:what:spam"
    shown = await chat.say(stale)
    assert "没看明白" in shown and "钱已经转出去了吗" in shown
    shown = await chat.say("9")  # only 4 options are shown
    assert "没看明白" in shown
    await chat.say("平时怎么保护个人信息")
    assert "钱已经转出去了吗" in await chat.press("继续报案助手")


async def test_typed_answers_count_like_buttons(chat: Chat) -> None:
    await chat.say("我要报案")
    assert "钱已经转出去了吗" in await chat.say("被骗了")
    assert "哪些证据" in await chat.say("昨天转的")
    assert "报案准备清单" in await chat.say("都删了")


@pytest.mark.parametrize("phrase", ["救命！", "他在威胁我", "我马上要转钱了", "正在转账"])
async def test_emergency_phrase_at_any_point(chat: Chat, db_path: Path, phrase: str) -> None:
    await chat.say("#report:leak")
    shown = await chat.say(phrase)
    assert shown.startswith("🚨 请立即拨打110") and "紧急止付" in shown and "不要给钱" in shown
    assert_flow_gone(db_path)
    assert "发生了什么事" in await chat.press("安全后，继续准备报案")


async def test_negated_danger_is_not_an_emergency(content: Content) -> None:
    guide = ReportGuide(content)
    assert guide.is_emergency("救命啊")
    assert not guide.is_emergency("我现在没有危险")
    assert not guide.is_emergency("#flow:threat:danger")


async def test_emergency_option_ends_the_flow_with_a_way_back(chat: Chat, db_path: Path) -> None:
    await chat.say("#report:extortion")
    shown = await chat.press("有，我现在有危险")
    assert shown.startswith("🚨 请立即拨打110")
    assert_flow_gone(db_path)
    assert chat.payload("安全后，继续准备报案") == "#report:extortion"
    await chat.say("#report:fraud")
    assert "🚨" in await chat.press("还没转，对方在催我")


async def test_idle_flow_expires(chat: Chat, clock: Clock, db_path: Path) -> None:
    await chat.say("#report:fraud")
    payload = chat.payload("转了，就在今天")
    clock.now += SESSION_TTL_SECONDS + 1
    shown = await chat.say(payload)
    assert "已经结束了" in shown and "闲置30分钟" in shown
    assert "紧急止付" not in shown
    assert_flow_gone(db_path)
    shown = await chat.say("1")  # the old numbers are gone too: the restart button is "1"
    assert "发生了什么事" in shown


# ---------------------------------------------------------------------- privacy


async def test_nothing_typed_is_stored(chat: Chat, db_path: Path) -> None:
    typed = [
        "我要报警，有人敲诈我",  # starts the flow from its first message
        "敲诈我的是王翠花，她还让我下载一个叫星河宝的软件是什么",
        "我的手机号13912345678也给她了",
    ]
    for text in typed:
        await chat.say(text)
        assert_not_stored(db_path, "王翠花", "星河宝", "13912345678", "软件是什么", "敲诈我")
        flows = [s["flow"] for s in stored_sessions(db_path) if "flow" in s]
        assert flows == [{"scenario": "extortion", "answers": {}}]
    for text in ["继续", "没有", "没有转钱", "都删了"]:
        await chat.say(text)
    assert "报案准备清单" in chat.last[0].text
    assert_flow_gone(db_path)
    assert_not_stored(db_path, "王翠花", "星河宝", "13912345678", "都删了")


# ---------------------------------------------------------------------- the flow file


def broken(tmp_path: Path, change: Any) -> list[str]:
    raw = yaml.safe_load(REPORT_YAML.read_text(encoding="utf-8"))
    change(raw)
    flow = tmp_path / "_report.yaml"
    flow.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ContentError) as caught:
        load_content(*write_fixture(tmp_path / "content", flow))
    return caught.value.problems


def state(raw: dict[str, Any], state_id: str) -> dict[str, Any]:
    return next(s for s in raw["states"] if s["id"] == state_id)


def scenario(raw: dict[str, Any], scenario_id: str) -> dict[str, Any]:
    return next(s for s in raw["scenarios"] if s["id"] == scenario_id)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda r: state(r, "money").update(colour="red"),
            "_report.yaml: money: colour: unknown key",
        ),
        (lambda r: state(r, "money").pop("ask"), "_report.yaml: money: ask: missing"),
        (
            lambda r: scenario(r, "spam")["steps"].append({"text": "请拨打 12399 咨询"}),
            "_report.yaml: spam: steps.4.text: 12399 is not a whitelisted official number",
        ),
        (
            lambda r: scenario(r, "app")["steps"].append({"text": "登录 www.12321.cn 举报"}),
            "_report.yaml: app: steps.4.text: no web addresses",
        ),
        (
            lambda r: scenario(r, "fraud")["steps"][0].update(when={"money": ["soon"]}),
            "_report.yaml: fraud: steps.0.when: 'money' has no option 'soon'",
        ),
        (
            lambda r: scenario(r, "spam").update(related=["nowhere"]),
            "_report.yaml: spam: related: no entry with id 'nowhere'",
        ),
        (
            lambda r: r["scenarios"].remove(scenario(r, "spam")),
            "_report.yaml: what: options: no scenario for option 'spam'",
        ),
        (
            lambda r: scenario(r, "fraud").update(questions=["money", "nowhere"]),
            "_report.yaml: fraud: questions: no question state with id 'nowhere'",
        ),
        (
            lambda r: state(r, "evidence").update(options=[{"id": "x", "label": "一"}]),
            "_report.yaml: evidence: options: List should have at least 2 items",
        ),
    ],
)
def test_flow_problems_name_the_state_and_field(tmp_path: Path, change: Any, expected: str) -> None:
    problems = broken(tmp_path, change)
    assert any(p.startswith(expected) for p in problems), problems


def test_all_flow_problems_are_reported_at_once(tmp_path: Path) -> None:
    def change(raw: dict[str, Any]) -> None:
        state(raw, "money")["colour"] = "red"
        scenario(raw, "spam")["steps"][0]["text"] = "请拨打 12399 咨询"

    problems = broken(tmp_path, change)
    assert "_report.yaml: money: colour: unknown key" in problems
    assert any(p.startswith("_report.yaml: spam: steps.0.text: 12399 is not") for p in problems)


def test_without_a_flow_file_the_guide_still_sends_to_110(tmp_path: Path) -> None:
    knowledge, cases = write_fixture(tmp_path)
    (knowledge / "_report.yaml").unlink()
    guide = ReportGuide(load_content(knowledge, cases))
    assert "110" in guide.start(None, "").replies[0].text
    assert not guide.is_emergency("救命")


# ---------------------------------------------------------------------- the diagram


def diagram() -> tuple[set[str], set[tuple[str, str, str]]]:
    text = (ROOT / "docs" / "report-flow.md").read_text(encoding="utf-8")
    mermaid = text.split("```mermaid", 1)[1].split("```", 1)[0]
    nodes: set[str] = set()
    edges: set[tuple[str, str, str]] = set()
    for line in mermaid.splitlines():
        line = line.strip()
        edge = re.match(r"^(\w+)(?:\(\([^)]*\)\))?\s*-->(?:\|\"?([^|\"]*)\"?\|)?\s*(\w+)", line)
        if edge:
            edges.add((edge[1], edge[3], edge[2] or ""))
            nodes |= {edge[1], edge[3]}
        elif declared := re.match(r"^(\w+)\s*[\[\{(]", line):
            nodes.add(declared[1])
    structural = {"start", "done", "triage"}
    return nodes - structural, {e for e in edges if not {e[0], e[1]} & structural}


def flow_edges(content: Content) -> set[tuple[str, str, str]]:
    """The arrows the YAML implies: each scenario's path, and emergency options."""
    flow = content.report
    assert flow is not None
    first: dict[str, list[str]] = {}
    edges: set[tuple[str, str]] = set()
    for sc in flow.scenarios:
        path = [*sc.questions, sc.end]
        first.setdefault(path[0], []).append(sc.id)
        edges |= set(pairwise(path))
    labelled = {(flow.start, to, ", ".join(ids)) for to, ids in first.items()}
    emergencies = {
        (q.id, "emergency", o.id)
        for q in flow.states
        if q.kind == "question"
        for o in q.options  # type: ignore[union-attr]
        if o.emergency
    }
    return labelled | emergencies | {(a, b, "") for a, b in edges}


def test_diagram_states_equal_the_flow_states(content: Content) -> None:
    assert content.report is not None
    nodes, _ = diagram()
    assert nodes == {s.id for s in content.report.states}


def test_diagram_arrows_equal_the_flow_table(content: Content) -> None:
    _, edges = diagram()
    expected = flow_edges(content)
    # Arrows between two questions may carry the scenario they belong to as a label.
    unlabelled = {
        (a, b, "" if a != "what" and b != "emergency" else label) for a, b, label in edges
    }
    assert unlabelled == expected
