"""Report guidance through `infoguard chat` with piped stdin: every scenario by numbered answers,
the conversation commands, expiry between two runs, and what the SQLite file holds afterwards."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml
from test_report import REPORT_YAML, assert_not_stored, write_fixture

INFOGUARD = Path(sys.executable).parent / "infoguard"
INTRO = "好的，我来一步步帮您准备"
FLOW = yaml.safe_load(REPORT_YAML.read_text(encoding="utf-8"))


def number(question: str, option: str) -> str:
    """The number shown next to an option (the flow shows one question's buttons at a time)."""
    state = next(s for s in FLOW["states"] if s["id"] == question)
    return str([o["id"] for o in state["options"]].index(option) + 1)


def chat(root: Path, lines: list[str]) -> str:
    knowledge, cases = root / "content" / "knowledge", root / "content" / "cases"
    if not knowledge.exists():
        write_fixture(root / "content")
    result = subprocess.run(
        [
            str(INFOGUARD),
            "--knowledge",
            str(knowledge),
            "--cases",
            str(cases),
            "--database",
            str(root / "db.sqlite3"),
            "chat",
        ],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def sessions(root: Path) -> list[dict[str, object]]:
    with sqlite3.connect(root / "db.sqlite3") as db:
        return [json.loads(r[0]) for r in db.execute("SELECT state FROM sessions")]


# (scenario, [(question, option) …], markers the plan must show)
SCRIPTS: list[tuple[str, list[tuple[str, str]], list[str]]] = [
    ("fraud", [("money", "just_now"), ("evidence", "some")], ["紧急止付", "【去派出所时带上】"]),
    (
        "extortion",
        [("threat", "online"), ("money", "no_money"), ("evidence", "kept")],
        ["不要给钱"],
    ),
    ("doxxing", [("threat", "none"), ("evidence", "kept")], ["12377"]),
    ("leak", [("money", "no_money"), ("evidence", "none")], ["一证通查", "记录删了也别着急"]),
    ("spam", [("evidence", "kept")], ["12321", "12300"]),
    ("app", [("evidence", "some")], ["权限", "12321"]),
    ("merchant", [("traded", "yes_traded"), ("evidence", "kept")], ["12315", "【去派出所时带上】"]),
    ("sim_cards", [("sim_checked", "unchecked")], ["工信微报", "10699000"]),
    ("card_rental", [("handed", "asked_only")], ["第三十一条", "帮信罪", "96110"]),
    ("call_96110", [], ["接起来"]),
]


def test_every_scenario_by_numbers(tmp_path: Path) -> None:
    lines: list[str] = []
    for scenario, answers, _ in SCRIPTS:
        lines += ["我要报案", number("what", scenario)]
        lines += [number(q, o) for q, o in answers]
    lines += ["我要报案", number("what", "request"), number("letter_kind", "access")]
    out = chat(tmp_path, lines)
    runs = out.split(INTRO)[1:]
    assert len(runs) == len(SCRIPTS) + 1
    for (scenario, _, markers), run in zip(SCRIPTS, runs, strict=False):
        assert "📋 报案准备清单" in run, scenario
        assert "追回损失" in run, scenario
        for marker in markers:
            assert marker in run, (scenario, marker)
        assert "（回复数字即可选择）" in run
    assert "第四十五条" in runs[-1] and "【公司名称】" in runs[-1]
    assert all("flow" not in s for s in sessions(tmp_path))


def test_commands_mid_flow_and_privacy(tmp_path: Path) -> None:
    secret = "邻居赵铁柱把我的信息发到网上了是真的吗"
    out = chat(
        tmp_path,
        [
            "我要报案",
            number("what", "doxxing"),
            secret,  # an ordinary question: answered, then the way back
            "继续",
            "重新开始",
            number("what", "fraud"),
            "取消",
            "我要报案",
            number("what", "extortion"),
            "他在威胁我",
        ],
    )
    hint = out.index('回复"继续"回到报案助手')
    assert out.count("现在有人威胁您吗") == 2  # asked, and asked again after 继续
    assert out.rindex("现在有人威胁您吗") > hint
    assert "我们从头开始" in out and "已退出报案助手" in out
    assert out.rstrip().endswith("（回复数字即可选择）")
    assert "🚨 请立即拨打110" in out.split("不要给钱", 1)[1]
    assert all("flow" not in s for s in sessions(tmp_path))
    assert_not_stored(tmp_path / "db.sqlite3", "赵铁柱", secret, "他在威胁我")


def test_flow_survives_between_runs_until_it_expires(tmp_path: Path) -> None:
    chat(tmp_path, ["我要报案", number("what", "fraud")])
    assert [s.get("flow") for s in sessions(tmp_path)] == [{"scenario": "fraud", "answers": {}}]
    resumed = chat(tmp_path, ["继续"])
    assert "钱已经转出去了吗" in resumed
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        db.execute("UPDATE sessions SET expires_at = 0")  # 30 minutes idle have passed
    out = chat(tmp_path, [number("money", "just_now"), "#flow:money:just_now"])
    assert "紧急止付" not in out
    assert "已经结束了" in out and "闲置30分钟" in out
    assert all("flow" not in s for s in sessions(tmp_path))


def test_leave_words(tmp_path: Path) -> None:
    spam = number("what", "spam")
    out = chat(tmp_path, ["我要报案", spam, "退出", "我要报案", spam, "返回"])
    assert out.count("已退出报案助手") == 2
    assert all("flow" not in s for s in sessions(tmp_path))
