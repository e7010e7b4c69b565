"""The content loader reports every problem as `file: entry id: field: problem`, all at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.content import load_content
from bot.errors import ContentError


def problems_in(knowledge: Path, cases: Path) -> list[str]:
    with pytest.raises(ContentError) as info:
        load_content(knowledge, cases)
    return info.value.problems


def test_mini_content_loads(mini_content) -> None:
    assert "verification_code" in mini_content.entries
    assert mini_content.cases["mini_case"].kind == "刑事"


def test_every_problem_is_reported_with_file_entry_and_field(mini_dirs) -> None:
    knowledge, cases = mini_dirs
    (knowledge / "broken.yaml").write_text(
        """entries:
  - id: verification_code
    title: 重复的
    questions: [a, b, c]
    answer: x
  - id: no_answer
    title: 没有答案
    questions: [a, b, c]
    colour: blue
  - id: dangling
    title: 悬空引用
    questions: [a, b, c]
    answer: 见下
    related: [nowhere]
    cases: [no_such_case]
  - id: numbers
    title: 数字
    questions: ["110", 12321, c]
    answer: 请拨打 13800138000 或 110
""",
        encoding="utf-8",
    )
    found = problems_in(knowledge, cases)
    expected = [
        "mini.yaml: verification_code: id: duplicate id, also in broken.yaml",
        "broken.yaml: no_answer: answer: missing",
        "broken.yaml: no_answer: colour: unknown key",
        "broken.yaml: dangling: related: no entry with id 'nowhere'",
        "broken.yaml: dangling: cases: no case with id 'no_such_case'",
    ]
    for line in expected:
        assert line in found
    assert any(
        p.startswith("broken.yaml: numbers: questions.1:") and "quote it" in p for p in found
    )


def test_unlisted_phone_number_in_an_answer_is_refused(mini_dirs) -> None:
    knowledge, cases = mini_dirs
    (knowledge / "phone.yaml").write_text(
        "entries:\n  - id: phone\n    title: 电话\n    questions: [a, b, c]\n"
        "    answer: 请拨打 13800138000，紧急情况拨打110。2019年的规定。\n",
        encoding="utf-8",
    )
    found = problems_in(knowledge, cases)
    assert found == ["phone.yaml: phone: answer: 13800138000 is not a whitelisted official number"]


def test_yaml_syntax_error_names_line(mini_dirs) -> None:
    knowledge, cases = mini_dirs
    (knowledge / "syntax.yaml").write_text("entries:\n  - id: x\n    title: [unclosed\n", "utf-8")
    found = problems_in(knowledge, cases)
    assert len(found) == 1
    assert found[0].startswith("syntax.yaml: -: -: YAML syntax error at line 4")


def test_case_problems(mini_dirs) -> None:
    knowledge, cases = mini_dirs
    (cases / "other_name.yaml").write_text(
        (cases / "mini_case.yaml").read_text("utf-8").replace("kind: 刑事", "kind: 小说"),
        encoding="utf-8",
    )
    found = problems_in(knowledge, cases)
    assert any(p.startswith("other_name.yaml: mini_case: kind:") for p in found)


def test_cli_check_reports_problems_without_traceback(mini_dirs, tmp_path) -> None:
    knowledge, cases = mini_dirs
    (knowledge / "bad.yaml").write_text("entries:\n  - id: Bad Id\n", encoding="utf-8")
    for command in (["kb", "check"], ["chat"]):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "bot",
                "--knowledge",
                str(knowledge),
                "--cases",
                str(cases),
                "--database",
                str(tmp_path / "db.sqlite3"),
                *command,
            ],
            capture_output=True,
            text=True,
            input="你好\n",
            timeout=60,
        )
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert "bad.yaml: Bad Id: id:" in result.stderr
        assert "bad.yaml: Bad Id: title: missing" in result.stderr


def test_bundled_content_is_valid() -> None:
    root = Path(__file__).resolve().parent.parent
    content = load_content(root / "knowledge", root / "cases_explained")
    assert len(content.cases) >= 12
