"""The command line: the `ask --json` contract, `kb export`, help texts and error exits."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from bot.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_ask_json_contract_in_one_process(tmp_path: Path) -> None:
    questions = ["验证码能告诉别人吗", "明天股票会涨吗", "我身份证号530102199003071238被人冒用了"]
    # Run from an unrelated folder: the bundled content must be found wherever we are.
    result = run("ask", "--json", stdin="\n".join(questions) + "\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["question"] for r in rows] == [*questions[:2], "我身份证号[身份证号]被人冒用了"]
    for row in rows:
        assert set(row) == {"question", "answer", "entry", "score", "fallback"}
    assert rows[0]["entry"] == "verification_code" and rows[0]["fallback"] is False
    assert rows[1]["entry"] is None and rows[1]["fallback"] is True
    assert "530102199003071238" not in rows[2]["answer"]
    assert "不要在聊天里发送" in rows[2]["answer"]


def test_a_question_about_a_case_gets_the_case() -> None:
    result = run("ask", "--json", "人脸识别第一案是什么")
    assert json.loads(result.stdout)["entry"] == "case:hangzhou_face_recognition_zoo"


def test_ask_one_question_plain() -> None:
    result = run("ask", "96110是什么电话")
    assert result.returncode == 0
    assert "96110" in result.stdout


def test_kb_export_shape() -> None:
    result = run("kb", "export")
    data = json.loads(result.stdout)
    entry = data["entries"][0]
    assert {"id", "questions", "answer"} <= set(entry)
    assert len(data["cases"]) >= 12


def test_chat_with_piped_stdin(tmp_path: Path) -> None:
    result = run("--database", str(tmp_path / "db.sqlite3"), "chat", stdin="你好\n2\n")
    assert result.returncode == 0, result.stderr
    assert "个人信息保护助手" in result.stdout
    assert "以案释法" in result.stdout  # "2" chose the second menu button: the case list


def subcommand_paths() -> list[list[str]]:
    import argparse

    paths: list[list[str]] = [[]]

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    paths.append([*prefix, name])
                    walk(sub, [*prefix, name])

    walk(build_parser(), [])
    return paths


@pytest.mark.parametrize("path", subcommand_paths(), ids=lambda p: " ".join(p) or "infoguard")
def test_every_command_has_help(path: list[str]) -> None:
    result = run(*path, "--help")
    assert result.returncode == 0
    assert "usage: infoguard" in result.stdout


def test_usage_error_goes_to_stderr() -> None:
    result = run("no-such-command")
    assert result.returncode != 0
    assert "invalid choice" in result.stderr
    assert result.stdout == ""


def test_wheel_ships_the_content(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if "No module named" in result.stderr and "hatchling" in result.stderr:
        pytest.skip("hatchling is not installed in this environment")
    assert result.returncode == 0, result.stderr
    wheel = next(tmp_path.glob("infoguard-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "bot/_content/knowledge/_bot.yaml" in names
    assert "bot/_content/knowledge/_lexicon.yaml" in names
    assert any(n.startswith("bot/_content/cases_explained/") for n in names)


# -- personal data through `ask --json` (issue 12, items 8-10) --------------------------------

# As people type them; each must be warned about, and never come back in any form.
TYPED_NUMBERS = {
    "110101 19900307 8515": "110101199003078515",  # ID number in groups
    "110101-19900307-8515": "110101199003078515",
    "１３８１２３４５６７８": "13812345678",  # full-width digits
    "138-1234-5678": "13812345678",
    "139 1234 5678": "13912345678",
    "11010519900307851X": "11010519900307851X",  # ends in X, check digit wrong
    "6222021234567890123": "6222021234567890123",  # card-like, fails Luhn
    "6222 0212 3456 7890 123": "6222021234567890123",
}


@pytest.fixture(scope="module")
def personal_rows() -> tuple[list[dict[str, object]], str]:
    questions = [f"我的号码是{typed}，验证码能告诉别人吗" for typed in TYPED_NUMBERS]
    questions += [
        "13812345678给我打电话，说我的快递丢了要赔钱",
        "我的手机号13812345678泄露了怎么办",
    ]
    result = run("--debug", "ask", "--json", stdin="\n".join(questions) + "\n")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def _every_form(digits: str) -> list[str]:
    full_width = digits.translate({ord(c): 0xFF10 + int(c) for c in "0123456789"})
    return [digits, full_width, digits[:6], digits[-8:]]


def test_numbers_typed_any_way_are_warned_about(
    personal_rows: tuple[list[dict[str, object]], str],
) -> None:
    rows, _ = personal_rows
    for row, typed in zip(rows, TYPED_NUMBERS, strict=False):
        assert "不要在聊天里发送" in str(row["answer"]), typed


def test_numbers_are_neither_echoed_nor_logged(
    personal_rows: tuple[list[dict[str, object]], str],
) -> None:
    rows, stderr = personal_rows
    assert "answered channel=ask" in stderr  # the engine's log lines were captured
    shown = "\n".join(str(r["answer"]) for r in rows)
    for typed, digits in TYPED_NUMBERS.items():
        for form in [typed, *_every_form(digits)]:
            assert form not in shown, form
            assert form not in stderr, form


def test_ask_json_redacts_the_question(personal_rows: tuple[list[dict[str, object]], str]) -> None:
    rows, _ = personal_rows
    questions = "\n".join(str(r["question"]) for r in rows)
    for typed, digits in TYPED_NUMBERS.items():
        for form in [typed, *_every_form(digits)]:
            assert form not in questions, form
    assert rows[0]["question"] == "我的号码是[身份证号]，验证码能告诉别人吗"
    assert "[手机号]给我打电话" in str(rows[-2]["question"])


def test_a_scammers_number_gets_a_warning_that_fits(
    personal_rows: tuple[list[dict[str, object]], str],
) -> None:
    rows, _ = personal_rows
    scammer, own = str(rows[-2]["answer"]), str(rows[-1]["answer"])
    assert "不要在聊天里发送" not in scammer
    assert "12321" in scammer and "96110" in scammer
    assert "13812345678" not in scammer
    assert "不要在聊天里发送" in own  # the writer's own number: the usual warning


@pytest.mark.parametrize("command", ["chat", "push", "serve"])
def test_a_database_that_cannot_be_opened_is_one_clear_line(
    tmp_path: Path, mini_dirs: tuple[Path, Path], command: str
) -> None:
    content = ["--knowledge", str(mini_dirs[0]), "--cases", str(mini_dirs[1])]
    (tmp_path / "not-a-database.sqlite3").write_text("hello\n", encoding="utf-8")
    bad: list[str | Path] = [tmp_path]  # a folder: every command opens storage the same way
    if command == "chat":
        bad += ["/proc/infoguard/db.sqlite3", tmp_path / "not-a-database.sqlite3"]
    for database in bad:
        result = run(*content, "--database", str(database), command, stdin="你好\n")
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"infoguard: cannot open the database {database}: ")


@pytest.mark.parametrize("command", ["chat", "ask"])
def test_undecodable_bytes_on_stdin_are_replaced_and_reading_goes_on(
    tmp_path: Path, mini_dirs: tuple[Path, Path], command: str
) -> None:
    gbk = "你好".encode("gbk")
    stdin = b"\xff\xfe\n" + gbk + b"\n" + "验证码能告诉别人吗\n".encode()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONIOENCODING"}
    content = ["--knowledge", str(mini_dirs[0]), "--cases", str(mini_dirs[1])]
    database = ["--database", str(tmp_path / "db.sqlite3")]
    result = subprocess.run(
        [sys.executable, "-m", "bot", *content, *database, command],
        input=stdin,
        capture_output=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"Traceback" not in result.stderr
    assert "验证码只给你自己用".encode() in result.stdout  # the last line was answered


def test_ctrl_c_at_the_prompt_ends_the_chat_at_once(tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "--database", str(tmp_path / "db.sqlite3"), "chat"],
        stdin=terminal,
        stdout=terminal,
        stderr=subprocess.PIPE,
        close_fds=True,
    )
    os.close(terminal)
    try:
        seen = _read_until(controller, "您> ".encode())
        assert "个人信息保护助手".encode() in seen
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does to the foreground process
        assert proc.wait(timeout=10) == 130  # without waiting for another line
        assert proc.stderr is not None
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(controller)


def _read_until(fd: int, marker: bytes, timeout: float = 60.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {marker!r} within {timeout}s; got {seen!r}"
        seen += os.read(fd, 4096)
    return seen


def test_a_number_with_no_option_says_so_and_shows_the_options_again(
    tmp_path: Path, mini_dirs: tuple[Path, Path]
) -> None:
    content = ["--knowledge", str(mini_dirs[0]), "--cases", str(mini_dirs[1])]
    lines = ["3", "第二个", "6", "一"]
    result = run(
        *content, "--database", str(tmp_path / "db.sqlite3"), "chat", stdin="\n".join(lines) + "\n"
    )
    assert result.returncode == 0, result.stderr
    fresh, cases, six, first = [b for b in result.stdout.split("助手> ") if b.strip()]
    unavailable = "没有这个编号的选项"
    # "3" before any options: not the 3.15 case, but the main menu.
    assert unavailable in fresh and "【以案释法】" not in fresh
    assert "1. 我要报案/求助" in fresh and "2. 典型案例" in fresh
    # "第二个" picked the second menu line; "6" on a one-case page picks nothing.
    assert "以案释法 · 典型案例" in cases and "1. 验证码也是个人信息" in cases
    assert unavailable in six and "1. 验证码也是个人信息" in six and "【以案释法】" not in six
    # Chinese numerals choose too, and the options shown again still count.
    assert first.startswith("【以案释法】验证码也是个人信息")


def test_kb_check_reports_a_syntax_error_without_a_cascade(
    mini_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    knowledge, cases = mini_dirs
    (knowledge / "refs.yaml").write_text(
        """entries:
  - id: refers
    title: 引用
    questions: [a, b, c]
    answer: 见相关内容。
    related: [protect_general, verification_code, fraud_now]
    cases: [mini_case]
""",
        encoding="utf-8",
    )
    mini = knowledge / "mini.yaml"
    good = mini.read_text(encoding="utf-8")
    mini.write_text("entries: [\n" + good, encoding="utf-8")  # every entry in it is lost
    result = run("--knowledge", str(knowledge), "--cases", str(cases), "kb", "check")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("mini.yaml: -: -: YAML syntax error at line ")
    assert lines[1:] == ["1 problem(s) found"], result.stderr

    mini.write_text(good, encoding="utf-8")
    missing = tmp_path / "no-such-folder"
    result = run("--knowledge", str(knowledge), "--cases", str(missing), "kb", "check")
    assert result.stderr.splitlines() == [f"{missing}: -: -: does not exist", "1 problem(s) found"]
    result = run("--knowledge", str(missing), "kb", "check")
    assert result.stderr.splitlines() == [f"{missing}: -: -: does not exist", "1 problem(s) found"]
